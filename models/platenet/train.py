"""Train PlateNet on simulator scenes with their clean plates.

    python -m models.platenet.train --out models/platenet/weights.pt   # ~8 min of scenes + ~16 min of steps, 2 CPU cores

A pool of scenes (the simulator's default and wide studio worlds, every backdrop that has a plate,
rendered at 768-1200 px and area-shrunk in linear light to 384 px as ``plate_probability`` reads
them) is made once and cached under ``--cache``; the net then trains on random crops, flips and
transposes with AdamW + cosine LR and SegNet's loss (BCE weighted at boundaries and thin parts + soft
Dice). Two things a studio's plate and shot differ by are drawn on top: the plate a pixel off the
shot's position, and its light a few percent brighter or dimmer. And a share of the pieces get a
polished face that mirrors the backdrop (part of the piece takes the plate's colour, dimmed), so
the net reads the outline and not only the difference. IoU on held-out pool scenes is printed every
``--val-every`` steps; the float16 state dict is written atomically; ``TRAINING.md`` records the run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from models.defectnet import native_bfloat16
from models.platenet import TRAIN_COMMAND, PlateNet
from models.platenet.data import make_pool, make_sample
from models.segnet.train import (cached_pool, dihedral, optimizer, photometric, save_weights, start_run,
                                 starting_net, train_step)

HELD_OUT = 64                           # the pool's first scenes: validation only


def augment(image, plate, alpha, crop: int, gen: torch.Generator, mirror: float, photo: float = 0.0):
    """Random crops (the plate up to a pixel off in 3 of 10), flips and transposes of uint8 batches ->
    float tensors (N,6,crop,crop) and (N,1,crop,crop); see the module's docstring. With probability
    ``photo`` a sample's shot and plate are seen by another camera, the same one for both
    (``models.segnet.train.photometric``)."""
    n, H, W = alpha.shape
    xs, ts = [], []
    for i in range(n):
        y0 = int(torch.randint(0, H - crop + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, W - crop + 1, (1,), generator=gen))
        r = torch.rand(6, generator=gen)
        py, px = y0, x0
        if r[3] < 0.3:
            py = int(np.clip(y0 + int(torch.randint(-1, 2, (1,), generator=gen)), 0, H - crop))
            px = int(np.clip(x0 + int(torch.randint(-1, 2, (1,), generator=gen)), 0, W - crop))
        shot = torch.from_numpy(image[i, y0:y0 + crop, x0:x0 + crop]).permute(2, 0, 1).float() / 255
        empty = torch.from_numpy(plate[i, py:py + crop, px:px + crop]).permute(2, 0, 1).float() / 255
        t = torch.from_numpy(alpha[i, y0:y0 + crop, x0:x0 + crop])[None].float() / 255
        if r[4] < 0.5:
            empty = (empty * float(0.95 + 0.1 * torch.rand(1, generator=gen))).clamp(0, 1)
        if r[5] < mirror:
            field = F.interpolate(torch.rand((1, 1, 4, 4), generator=gen), size=(crop, crop), mode="bicubic",
                                  align_corners=False)[0]
            face = t * (field > 0.5).float()
            shot = shot * (1 - face) + empty * float(0.55 + 0.45 * torch.rand(1, generator=gen)) * face
        if photo and float(torch.rand(1, generator=gen)) < photo:
            shot, empty = photometric(torch.stack([shot, empty]), gen).unbind(0)
        x = torch.cat([shot, empty], 0)
        x, t = dihedral(x, t, r)
        xs.append(x)
        ts.append(t)
    return torch.stack(xs), torch.stack(ts)


@torch.no_grad()
def validate(net: PlateNet, pool: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean IoU (prob > 0.5 vs alpha > 0.5) on the held-out scenes, all and per world."""
    was = net.training
    net.eval()
    image, plate, alpha, kind = (pool[k][:HELD_OUT] for k in ("image", "plate", "alpha", "kind"))
    x = torch.from_numpy(np.concatenate([image, plate], 3)).permute(0, 3, 1, 2).float() / 255
    pred = torch.sigmoid(net(x))[:, 0].numpy() > 0.5
    truth = alpha > 127
    ious = np.array([(p & t).sum() / max((p | t).sum(), 1) for p, t in zip(pred, truth)])
    net.train(was)
    worlds = np.array([k.split(":")[0] for k in kind])
    return {"all": float(ious.mean()), **{str(w): float(ious[worlds == w].mean()) for w in sorted(set(worlds))}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/platenet/weights.pt")
    ap.add_argument("--scenes", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=4500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--mirror", type=float, default=0.3, help="share of crops whose piece gets a face mirroring the plate")
    ap.add_argument("--photometric", type=float, default=0.0,
                    help="share of crops whose shot and plate another camera sees (both alike)")
    ap.add_argument("--init", default=None, help="warm-start from these weights (fine-tuning; their widths)")
    ap.add_argument("--widths", default="16,32,48,64,96", help="channels at the U-Net's five resolutions")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--cache", default=os.environ.get("LOUPE_PLATENET_CACHE", "/tmp/loupe-platenet-cache"))
    args = ap.parse_args(argv)
    t_start = time.time()
    device, out, cache = start_run(args)
    pool = cached_pool(cache / f"pool_s{args.seed}_n{args.scenes}.npz",
                       lambda: make_pool(args.seed, args.scenes, args.workers), "scenes", modules=(make_sample,))
    kinds = {str(k): int((pool["kind"] == k).sum()) for k in sorted(set(pool["kind"]))}

    net = starting_net(PlateNet, args, TRAIN_COMMAND).to(device).to(memory_format=torch.channels_last)
    nparams = sum(p.numel() for p in net.parameters())
    # bfloat16 where the CPU does it natively (AVX512-BF16/AMX: ~4x faster steps), float16 on CUDA
    bf16 = device.type == "cpu" and native_bfloat16(device)
    use_amp = bf16 or device.type == "cuda"
    opt, sched = optimizer(net, args.lr, args.steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    n = len(pool["kind"])
    hist, run_loss, t_train = [], 0.0, time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(HELD_OUT, n, (args.batch,), generator=gen).numpy()
        x, y = augment(pool["image"][idx], pool["plate"][idx], pool["alpha"][idx], args.crop, gen, args.mirror,
                       args.photometric)
        x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)
        run_loss += train_step(net, x, y, opt, sched, scaler, device, torch.bfloat16 if bf16 else torch.float16, use_amp)
        if step % 50 == 0:
            el = time.time() - t_train
            print(f"step {step}/{args.steps} loss {run_loss / 50:.4f} {el / step:.2f}s/step "
                  f"eta {el / step * (args.steps - step) / 60:.1f}min", flush=True)
            run_loss = 0.0
        if step % args.val_every == 0 or step == args.steps:
            res = validate(net.cpu(), pool)
            net.to(device)
            hist.append((step, res))
            print(f"val @ {step}: " + " ".join(f"{k}={v:.3f}" for k, v in res.items()), flush=True)
            save_weights(net, out, {"step": step, "val_iou": res, "seed": args.seed})

    wall = time.time() - t_start
    cmd = "python -m models.platenet.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    step, res = hist[-1]
    lines = [
        "# PlateNet training record", "",
        "Written by `models/platenet/train.py` at the end of the run.", "",
        f"- command: `{cmd}`",
        f"- {args.scenes} simulator scenes with plates (seed {args.seed}; the first {HELD_OUT} held out), "
        f"{args.steps} steps of {args.batch} crops of {args.crop} px, mirror share {args.mirror}, "
        f"photometric share {args.photometric}, warm start {args.init or 'none'}, device {args.device}, "
        f"threads {args.threads}, bfloat16 autocast {bf16}",
        f"- wall time: {wall / 60:.1f} min (pool included when it was rendered)",
        f"- parameters: {nparams} (widths {tuple(net.widths)}); weights {out.stat().st_size / 1024:.0f} KiB (float16 state dict)",
        f"- pool: {kinds}", "",
        f"Held-out IoU (prob > 0.5 vs alpha > 0.5 at 384 x 256) at step {step}: "
        + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), "",
        "History: " + "; ".join(f"{s}: {r['all']:.3f}" for s, r in hist), "",
    ]
    (out.parent / "TRAINING.md").write_text("\n".join(lines))
    print(f"done in {wall / 60:.1f} min; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
