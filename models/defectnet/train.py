"""Train DefectNet on simulator scenes.

    python -m models.defectnet.train --out models/defectnet/weights.pt   # defaults = the shipped run

The samples are 96 px crops of simulator scenes with per-pixel label codes (``models.defectnet.data``).
The pool of crops, and a ``--teacher``'s probabilities on it, are kept under ``--cache`` and read again
by a later run with the same scenes, code and teacher (``models.segnet.train.cached_pool``): two
students of other widths share one rendering. Loss: per-channel BCE; defects weigh 5x, design details
4x, the 1 px rim of each defect is ignored (its soft edge is neither). The float16 state dict is
written atomically and ``TRAINING.md`` records the run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.defectnet import DefectNet, data, load_defectnet
from models.defectnet.data import CROP, DETAIL, HAZE, IGNORE, REMOVABLE, SEED, make_pool
from models.segnet.train import cached_pool


def loss_fn(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    target = torch.stack([codes == REMOVABLE, codes == HAZE], 1).float()
    weight = torch.ones_like(codes, dtype=torch.float32)
    weight[codes == DETAIL] = 4.0
    weight[codes == IGNORE] = 0.0
    weight[(codes == REMOVABLE) | (codes == HAZE)] = 5.0
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * weight[:, None]).sum() / (2 * weight.sum().clamp(min=1))


def batches(imgs, codes, among, batch, device, rng, soft=None):
    """Random crops of those at indices ``among``, turned and mirrored alike with their codes (and ``soft``:
    a teacher's probabilities)."""
    while True:
        idx = among[rng.integers(len(among), size=batch)]
        x = torch.from_numpy(imgs[idx]).to(device).permute(0, 3, 1, 2).float() / 255
        c = torch.from_numpy(codes[idx]).to(device).long()
        t = None if soft is None else torch.from_numpy(soft[idx]).to(device).float()
        k = int(rng.integers(4))
        x, c = torch.rot90(x, k, (2, 3)), torch.rot90(c, k, (1, 2))
        t = None if t is None else torch.rot90(t, k, (2, 3))
        if rng.random() < 0.5:
            x, c = x.flip(3), c.flip(2)
            t = None if t is None else t.flip(3)
        yield x, c, t


def teacher_probabilities(weights: Path, imgs: np.ndarray, device: str) -> np.ndarray:
    """(N, 2, CROP, CROP) float16: what the network at ``weights`` says on every crop, the targets a narrower
    student learns beside the labels (distillation). Held for the whole pool: 37 KB a crop."""
    net = load_defectnet(str(weights), device)
    out = np.empty((len(imgs), 2, CROP, CROP), np.float16)
    with torch.no_grad():
        for i in range(0, len(imgs), 256):
            x = torch.from_numpy(imgs[i:i + 256]).to(device).permute(0, 3, 1, 2).float() / 255
            out[i:i + 256] = torch.sigmoid(net(x)).cpu().numpy()
    return out


def cached_teacher(cache: Path, pool_name: str, weights: Path, imgs: np.ndarray, device: str) -> np.ndarray:
    """``teacher_probabilities`` on the pool ``imgs`` (kept under ``cache`` as ``pool_name``), kept there
    too, keyed by the pool, the teacher's weights file and the network's code (``DefectNet``'s file: the same
    weights read by another forward pass answer otherwise): a second student is spared the teacher's pass
    (5 min on two CPU cores for the 17,366 crops of 700 scenes)."""
    digest = hashlib.sha1(Path(weights).read_bytes()).hexdigest()[:10]
    made = cached_pool(cache / f"teacher_{digest}_{pool_name}",
                       lambda: {"soft": teacher_probabilities(weights, imgs, device)}, "teacher answers",
                       modules=(data, DefectNet))
    return made["soft"]


def narrowed(state: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """A wider DefectNet's state cut to ``width`` channels a layer: each layer keeps the channels that
    carry most (the L1 norm of what makes a channel times that of what the next layer reads from it), the
    next layer reads only those (structured pruning). Cut, it answers unlike the wide net (the dropped
    channels' share is gone, there are no norms to rescale), but a student learning its probabilities
    gets further from here than from nothing (``TRAINING.md``, stop 72)."""
    state = dict(state)
    layers = [f"body.{i}" for i in range(len(DefectNet.DILATIONS))] + ["head"]
    keep = None
    for name, after in zip(layers, layers[1:]):
        w = state[f"{name}.weight"]
        if keep is not None:
            w = w[:, keep]
        carry = w.abs().sum((1, 2, 3)) * state[f"{after}.weight"].abs().sum((0, 2, 3))
        keep = carry.topk(width).indices.sort().values
        state[f"{name}.weight"], state[f"{name}.bias"] = w[keep], state[f"{name}.bias"][keep]
    state["head.weight"] = state["head.weight"][:, keep]
    return state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("weights.pt"))
    ap.add_argument("--scenes", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=int, help="channels a layer (default 32; with --init, theirs unless narrower)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--wide", type=float, default=0.0, help="share of scenes from the simulator's wide studio world")
    ap.add_argument("--init", type=Path, help="start from these weights (a fine-tune); with a --width under "
                    "theirs, from their strongest channels (narrowed)")
    ap.add_argument("--teacher", type=Path, help="also learn these weights' probabilities on every crop (distillation)")
    ap.add_argument("--cache", type=Path, default=os.environ.get("LOUPE_DEFECTNET_CACHE", "/tmp/loupe-defectnet-cache"),
                    help="folder the pool of crops and a teacher's probabilities on it are kept in for later runs")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.time()
    args.cache.mkdir(parents=True, exist_ok=True)
    pool_name = f"pool_n{args.scenes}_wide{round(100 * args.wide)}.npz"
    pool = cached_pool(args.cache / pool_name,
                       lambda: dict(zip(("imgs", "codes"), make_pool(args.scenes, args.workers, args.wide))),
                       "crops", modules=(data,))
    imgs, codes = pool["imgs"], pool["codes"]
    t_data = time.time() - t0
    print(f"{len(imgs)} crops from {args.scenes} scenes in {t_data:.0f} s", flush=True)
    held = np.random.default_rng(1).permutation(len(imgs))
    val, train = held[: len(imgs) // 10], held[len(imgs) // 10:]
    if args.init is not None:
        # read as the stage reads weights (float32), the checkpoint format known in one place
        start = load_defectnet(str(args.init))
        state, width = start.state_dict(), start.width
        if args.width is not None and args.width < width:
            state = narrowed(state, args.width)
        args.width = min(width, args.width or width)
        net = DefectNet(args.width)
        net.load_state_dict(state)
        net = net.to(args.device)
    else:
        args.width = args.width or 32
        net = DefectNet(args.width).to(args.device)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    soft = None if args.teacher is None else cached_teacher(args.cache, pool_name, args.teacher, imgs, args.device)
    stream = batches(imgs, codes, train, args.batch, args.device, np.random.default_rng(0), soft)
    vx = torch.from_numpy(imgs[val]).to(args.device).permute(0, 3, 1, 2).float() / 255
    vc = torch.from_numpy(codes[val]).to(args.device).long()
    for step in range(1, args.steps + 1):
        x, c, t = next(stream)
        logits = net(x)
        loss = loss_fn(logits, c)
        if t is not None:
            loss = loss + F.binary_cross_entropy_with_logits(logits, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == args.steps:
            with torch.no_grad():
                p = torch.cat([torch.sigmoid(net(vx[i:i + 256])) for i in range(0, len(vx), 256)])
                rem = p[:, 0] > 0.5
                recall = float(rem[vc == REMOVABLE].float().mean())
                false = float(rem[vc == DETAIL].float().mean())
                haze = float((p[:, 1] > 0.5)[vc == HAZE].float().mean())
                vloss = float(loss_fn(torch.logit(p.clamp(1e-6, 1 - 1e-6)), vc))
            print(f"step {step}: train {loss.item():.4f} val {vloss:.4f} defect-px recall {recall:.3f} "
                  f"detail-px false {false:.4f} haze-px recall {haze:.3f} ({time.time() - t0:.0f} s)", flush=True)
    state = {k: v.half().cpu() for k, v in net.state_dict().items()}
    state["width"] = torch.tensor(args.width)
    tmp = args.out.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, args.out)
    record = args.out.with_name("TRAINING.md")
    record.write_text(
        "# DefectNet training record\n\n"
        f"Command: `python -m models.defectnet.train {shlex.join(sys.argv[1:] if argv is None else argv)}`\n\n"
        f"- {args.scenes} simulator scenes (seeds [{SEED}, i]; {args.wide:.0%} from the wide world), "
        f"{len(imgs)} crops of {CROP} px{f', from {args.init}' if args.init else ''}"
        f"{f', learning the probabilities of {args.teacher}' if args.teacher else ''}, "
        f"{args.steps} steps of {args.batch} on {args.device}; data {t_data:.0f} s, total {time.time() - t0:.0f} s\n"
        f"- held-out crops: defect-pixel recall {recall:.3f}, design-detail pixels marked {false:.4f}, haze-pixel recall {haze:.3f}, loss {vloss:.4f}\n"
        f"- {sum(p.numel() for p in net.parameters())} parameters, float16 weights {args.out.stat().st_size} bytes\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
