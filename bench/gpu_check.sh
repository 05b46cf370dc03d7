#!/bin/bash
# One lease on a GPU machine (README, "The GPU path, measured on a device machine"): the CUDA tests, the
# pixel path at 24 MP with 4, 8 and 16 worker processes, and SegNet's training speed. Run from the repo's
# root with .whl (pydantic's wheels) and .devsrc/src (24 MP sources) carried; 7 logs go to $OUT (or ./gpu-logs).
# About 3.5 minutes on an H200 box (stop 54); each part has its own time limit, so one that fails leaves the others.
OUT=${OUT:-gpu-logs}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; lscpu | grep "Model name"
  python3 -c "import torch, cv2; print('torch', torch.__version__, 'opencv', cv2.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/machine.log"
# (diffusers is not on the device: its tests are left to CI)
timeout 150 python3 -m pytest -q -p no:cacheprovider -k "cuda or devices_agree" tests/tasks tests/models \
    --ignore=tests/models/test_generative.py 2>&1 \
    | tee "$OUT/tests.log" | tail -15
nvidia-smi dmon -s u -d 2 > "$OUT/dmon.log" 2>&1 &    # the GPU's use while the actors run: idle, or the limit?
dmon=$!
for k in 4 8 16; do      # two images an actor at least, so the run is not a single wave
    timeout 180 python3 bench/device.py --device cuda --images $((k < 8 ? 16 : 2 * k)) --sources .devsrc/src \
        --actors $k $([ $k = 16 ] && echo --profile 30) 2>&1 | tee "$OUT/actors$k.log" | tail -22
done
kill $dmon 2>/dev/null
# SegNet's step time on the GPU at a wider net and a larger batch, from a small pool (sizing a real run)
timeout 150 python3 -m models.segnet.train --device cuda --out /tmp/segnet_probe.pt --steps 200 --batch 32 \
    --pool 400 --workers 16 --threads 4 --crop 224 --widths 24,48,72,96,144 --photometric 0.5 --val-every 200 \
    --cache /tmp/segnet-cache 2>&1 | grep -E "^(pool|step 200|val @|done)" | tee "$OUT/train.log"
