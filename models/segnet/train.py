"""Train SegNet on simulator composites.

    python -m models.segnet.train --out models/segnet/weights.pt --steps 1600 --batch 8 --seed 0

A pool of samples (``models.segnet.data.make_pool``) is generated once (cached under
``--cache``), then the net trains on random crops/flips of it with AdamW + cosine LR,
BCE (boundary/thin-structure weighted) + soft Dice.  Validation IoU per background
kind on fixed held-out seeds every ``--val-every`` steps; the float16 state dict is
written atomically; ``TRAINING.md`` next to ``--out`` records the run.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.segnet import TRAIN_COMMAND, SegNet, load_weights, piece_probability
from models.segnet import data as segnet_data
from models.segnet.data import SAMPLE_SIZE, make_pool, make_sample
from models.simulator import BACKGROUNDS, linear_to_srgb, render_scene
from models.simulator.studio import WIDE_BACKDROPS

VAL_NATIVE = 16  # held-out simulator scenes per background
VAL_COMPOSITE = 64  # held-out composite samples (grouped by kind)
VAL_POOL_SEED = 987_654  # composite validation pool seed (training uses --seed)
VAL_WIDE = 12  # held-out wide-world scenes per wide backdrop


def render_set(kinds, n: int, seed: int, world: str = "default", prefix: str = "") -> dict:
    """``n`` held-out scenes (384x256) per backdrop of ``kinds``, scene i of backdrop b from
    ``default_rng([seed, b, i])``: ``{prefix + backdrop: (sRGB images, truth masks)}``."""
    sets = {}
    for b, bg in enumerate(kinds):
        imgs, truths = [], []
        for i in range(n):
            s = render_scene(np.random.default_rng([seed, b, i]), (384, 256), background=bg, world=world)
            imgs.append(linear_to_srgb(s.source))
            truths.append(s.alpha > 0.5)
        sets[prefix + bg] = (np.stack(imgs), np.stack(truths))
    return sets


def build_val(wide=True):
    sets = render_set(BACKGROUNDS, VAL_NATIVE, 2024)
    comp = {}
    for i in range(VAL_COMPOSITE):
        o = make_sample(VAL_POOL_SEED, i)
        if o["kind"].startswith("native_"):
            continue
        comp.setdefault(o["kind"], ([], []))
        comp[o["kind"]][0].append(o["image"].astype(np.float32) / 255)
        comp[o["kind"]][1].append(o["alpha"] > 127)
    for k in sorted(comp):
        sets["comp_" + k] = (np.stack(comp[k][0]), np.stack(comp[k][1]))
    if wide:
        sets.update(render_set(WIDE_BACKDROPS, VAL_WIDE, 2025, world="wide", prefix="wide_"))
    return sets


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    inter = np.logical_and(pred, truth).sum()
    union = np.logical_or(pred, truth).sum()
    return float(inter / union) if union else 1.0


@torch.no_grad()
def validate(net, sets, device, size=384):
    """Mean IoU (prob > 0.5 vs truth) per set; the net's train/eval mode is left as it was."""
    was_training = net.training
    net.eval()
    out = {}
    for name, (imgs, truths) in sets.items():
        vals = []
        for j in range(0, len(imgs), 8):
            x = torch.from_numpy(imgs[j:j + 8]).permute(0, 3, 1, 2).float().to(device)
            p = piece_probability(x, net, size=max(size, max(x.shape[-2:])) if name.startswith("comp_") else size)
            pred = (p[:, 0] > 0.5).cpu().numpy()
            vals += [iou(a, b) for a, b in zip(pred, truths[j:j + 8])]
        out[name] = float(np.mean(vals))
    net.train(was_training)
    return out


OPENING_CLOSE = 15   # px of a sample (256 px): the widest gap between metal that counts as an opening


def openings(hard: torch.Tensor) -> torch.Tensor:
    """Background the piece nearly closes around: what a ``OPENING_CLOSE`` px closing of the piece fills
    (link gaps, eyelets, openwork, the inside of a hook), 1 there, else 0."""
    r = OPENING_CLOSE // 2
    closed = -F.max_pool2d(-F.max_pool2d(hard, OPENING_CLOSE, 1, r), OPENING_CLOSE, 1, r)
    return closed * (1 - hard)


def loss_fn(logits, target, opening_weight: float = 0.0):
    """BCE weighted on the piece's boundary, its thin structures and (``opening_weight``) its openings,
    plus soft Dice."""
    hard = (target > 0.5).float()
    dil = F.max_pool2d(hard, 5, 1, 2)
    ero = -F.max_pool2d(-hard, 5, 1, 2)
    boundary = dil - ero
    # thin structures: truth pixels that vanish under a 5x5 erosion (chains, wires, prongs)
    thin = hard * (1 - F.max_pool2d(ero, 5, 1, 2))
    w = 1 + 2 * boundary + 3 * thin
    if opening_weight:
        w = w + opening_weight * openings(hard)
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=w, reduction="sum") / w.sum()
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (p.sum((1, 2, 3)) + target.sum((1, 2, 3)) + 1)
    return bce + dice.mean()


def optimizer(net: torch.nn.Module, lr: float, steps: int):
    """AdamW with a linear warm-up over a tenth of the steps (at most 100) and a cosine decay after."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    warm = min(100, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    return opt, sched


def train_step(net, x, y, opt, sched, scaler, device: torch.device, amp_dtype, use_amp: bool,
               opening_weight: float = 0.0) -> float:
    """One optimisation step on a batch (autocast where asked); returns the loss."""
    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
        logits = net(x)
    loss = loss_fn(logits.float(), y, opening_weight)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    sched.step()
    return float(loss.detach())


def save_weights(net: SegNet, path: Path, meta: dict):
    sd = {k: (v.detach().half() if v.is_floating_point() else v.detach()).cpu() for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"widths": list(net.widths), "state_dict": sd, "meta": meta}, tmp)
    os.replace(tmp, path)


def start_run(args) -> tuple[torch.device, Path, Path]:
    """A training run's torch threads and seed, and its device, weights file and pool cache folder (both
    folders made), from its parsed ``--threads --seed --device --out --cache``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out, cache = Path(args.out), Path(args.cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    return torch.device(args.device), out, cache


def render_code_digest(*modules) -> str:
    """A short digest of the code a pool is rendered with: the simulator package and ``modules`` (the
    ones that turn its scenes into samples, or functions: their files). A change to either makes
    another pool."""
    files = sorted(Path(inspect.getsourcefile(render_scene)).parent.glob("*.py"))
    files += [Path(inspect.getsourcefile(m)) for m in modules]
    digest = hashlib.sha1()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()[:10]


def starting_net(cls: type[SegNet], args, train_command: str) -> SegNet:
    """The net a run trains: a fresh ``cls`` of ``--widths``, or with ``--init`` that checkpoint's weights
    (and widths), trainable again. The fresh net is made in both cases, as it always was, so the seeded
    draws after it stay those of earlier runs."""
    net = cls(tuple(int(v) for v in args.widths.split(",")))
    if args.init:
        net = load_weights(cls, args.init, "cpu", train_command).requires_grad_(True).train()
    return net


def cached_pool(path: Path, make, what: str, modules=()) -> dict[str, np.ndarray]:
    """The training pool kept at ``path`` (.npz of arrays, one entry of each a sample) with the digest of the
    code that renders it (``render_code_digest(*modules)``) added to its name: loaded when it is
    there, else made by ``make()`` (a dict of arrays) and written there atomically for the next run.
    (Keyed by the name alone, a change to the simulator went on training on the old world's pool.)"""
    path = path.with_name(f"{path.stem}_code{render_code_digest(*modules)}{path.suffix}")
    if path.exists():
        pool = dict(np.load(path))
        print(f"pool: loaded {len(next(iter(pool.values())))} {what} from {path}", flush=True)
        return pool
    t = time.time()
    pool = make()
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **pool)
    os.replace(tmp, path)
    print(f"pool: made {len(next(iter(pool.values())))} {what} in {time.time() - t:.0f}s", flush=True)
    return pool


def restyle(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Another look for the piece inside its matte ``t`` (sRGB (3,H,W), (1,H,W)): a random tone curve,
    saturation and a smooth field of brightness, as another renderer's metal or another studio's
    reflections would give. The outline, the backdrop and the shadows stay: what the net must learn
    to read is the shape, not the simulator's way of shading metal."""
    r = torch.rand(6, generator=gen)
    gamma = float(torch.exp((r[0] - 0.5) * 1.4))                      # 0.5 .. 2
    y = x.clamp(1e-4, 1) ** gamma
    grey = y.mean(0, keepdim=True)
    y = grey + (y - grey) * float(r[1] * 1.5)                          # grey .. 1.5x saturated
    field = torch.rand((1, 1, 4, 4), generator=gen) * 0.8 + 0.6        # 0.6 .. 1.4, smooth over the crop
    y = y * F.interpolate(field, size=x.shape[-2:], mode="bicubic", align_corners=False)[0]
    if r[2] < 0.3:                                                     # a near-uniform face (mirror of the sweep)
        y = y * 0.3 + float(r[3]) * 0.7
    return (x * (1 - t) + y.clamp(0, 1) * t)


def _blur(y: torch.Tensor, s: float, radius: int) -> torch.Tensor:
    """Each plane of ``y`` (..., H, W) blurred by a Gaussian of ``s`` px cut at ``radius`` px, edges replicated."""
    k = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * s * s))
    k = (k / k.sum()).view(1, 1, 1, -1)
    planes = y.reshape(-1, 1, *y.shape[-2:])
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), k)
    return F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"), k.transpose(2, 3)).reshape(y.shape)


def cast_shadow(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A hard light's shadow of the piece on the backdrop (sRGB (3,H,W), matte (1,H,W)): the matte moved
    3-30 px in any direction, its rim softened to a 0.5-2.5 px penumbra, darkening what it falls on, the
    backdrop and not the piece that casts it, by one factor (an umbra keeps the backdrop's colour, its
    light 0.3-0.85, a fill light's tint of a few percent). The target stays: the shadow is background.
    The simulator's default world and composites carry soft contact shadows only, and the network took a
    hard shadow on a sweep for a grey copy of the piece (README, "Hard shadows")."""
    r = torch.rand(4, generator=gen)
    h, w = t.shape[-2:]
    reach, angle = 3 + 27 * float(r[0]), 2 * math.pi * float(r[1])
    dy, dx = round(reach * math.sin(angle)), round(reach * math.cos(angle))
    moved = torch.zeros_like(t)
    moved[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        t[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    moved = _blur(moved, 0.5 + 2 * float(r[2]), 6)
    light = ((0.3 + 0.55 * float(r[3])) * torch.exp(torch.randn(3, 1, 1, generator=gen) * 0.03)) ** (1 / 2.2)
    return x * (1 - moved * (1 - t) * (1 - light))


def mirror_metal(x: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The piece inside its matte ``t`` (sRGB (3,H,W), (1,H,W)) as polished metal mirroring a random studio:
    a surface bulged from the matte (its blurred outline as height) reflects an environment of a floor
    level and two to five soft lights and dark flags, tinted by the piece's own mean colour, its fine
    detail (pave, facets, engraving) kept. A real metal face is a picture of the room, dark or bright
    with crisp edges wherever a light or a flag ends, which the simulator's shading never draws."""
    r = torch.rand(4, generator=gen)
    height = _blur(t, 1.5 + 4 * float(r[0]), 12) + _blur(t, 4 + 8 * float(r[1]), 24)
    gy = F.pad(height[:, 1:] - height[:, :-1], (0, 0, 0, 1))
    gx = F.pad(height[..., 1:] - height[..., :-1], (0, 1))
    steep = 4 + 12 * float(r[2])
    n = torch.cat([-steep * gx, -steep * gy, torch.ones_like(gx)])
    n = n / n.norm(dim=0, keepdim=True)
    view = torch.cat([2 * n[2:] * n[:2], 2 * n[2:] ** 2 - 1])          # the view (0, 0, 1) reflected
    room = torch.full_like(t, 0.15 + 0.6 * float(r[3]))
    for _ in range(int(torch.randint(2, 6, (1,), generator=gen))):
        d = torch.randn(3, 1, 1, generator=gen)
        d = d / d.norm()
        q = torch.rand(3, generator=gen)
        reach = float(torch.cos(0.2 + 0.8 * q[0]))                      # a light's or flag's angular size
        edge = 0.01 + 0.1 * float(q[1])                                  # a hard or soft rim
        inside = torch.sigmoid(((view * d).sum(0, keepdim=True) - reach) / edge)
        room = room + inside * ((0.5 + 0.8 * float(q[2])) if q[2] > 0.35 else -0.8)
    tint = (x * t).sum((1, 2), keepdim=True) / t.sum().clamp(min=1)
    tint = tint / tint.amax().clamp(min=1e-3)
    detail = x - _blur(x, 1.5, 4)
    metal = (room.clamp(0.02, 1.2) * tint + detail).clamp(0, 1)
    return x * (1 - t) + metal * t


def photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The whole crop (sRGB (..., 3, H, W)) as another camera and studio would give it: exposure, white
    balance, tone, contrast and saturation drawn at random, sometimes a little defocus and sensor noise.
    Piece, backdrop and shadows change alike, so what stays to be learned is how they differ, not the
    simulator's absolute grey levels and colours. Leading dimensions share one camera (a shot and its
    clean plate); the noise is each pixel's own."""
    r = torch.rand(8, generator=gen)
    y = x.clamp(0, 1) * float(torch.exp((r[0] - 0.5) * 0.8))                    # exposure 0.67 .. 1.5
    y = y * torch.exp(torch.randn(3, 1, 1, generator=gen) * 0.06)                # white balance
    y = y.clamp(1e-4, 1) ** float(torch.exp((r[1] - 0.5) * 0.6))                  # tone 0.74 .. 1.35
    mean = y.mean()
    y = mean + (y - mean) * float(0.7 + 0.6 * r[2])                               # contrast 0.7 .. 1.3
    grey = y.mean(-3, keepdim=True)
    y = grey + (y - grey) * float(0.6 + 0.7 * r[3])                               # saturation 0.6 .. 1.3
    if r[4] < 0.3:                                                                # defocus
        y = _blur(y, 0.3 + 0.9 * float(r[5]), 3)
    if r[6] < 0.3:                                                                # sensor noise
        y = y + torch.randn(y.shape, generator=gen) * 0.035 * float(r[7])
    return y.clamp(0, 1)


def dihedral(x: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop (C, H, W) and its target flipped up-down, left-right and transposed where the first three
    of the uniform draws ``r`` are under a half: the eight symmetries of the square, alike for both."""
    if r[0] < 0.5:
        x, t = x.flip(1), t.flip(1)
    if r[1] < 0.5:
        x, t = x.flip(2), t.flip(2)
    if r[2] < 0.5:
        x, t = x.transpose(1, 2), t.transpose(1, 2)
    return x, t


def augment(img, alpha, crop, gen, appearance: float = 0.0, photo: float = 0.0, shadow: float = 0.0,
            mirror: float = 0.0):
    """Random crop + flips + transpose of a uint8 batch (N,H,W,3)/(N,H,W) -> float tensors; with
    probability ``appearance`` a sample's piece is restyled (:func:`restyle`), with probability
    ``shadow`` it casts a hard shadow (:func:`cast_shadow`), with probability ``mirror`` its metal mirrors
    a studio (:func:`mirror_metal`), with probability ``photo`` the whole crop is seen by another camera
    (:func:`photometric`)."""
    n, H, W = alpha.shape
    xs, ts = [], []
    for i in range(n):
        y0 = int(torch.randint(0, H - crop + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, W - crop + 1, (1,), generator=gen))
        x = torch.from_numpy(img[i, y0:y0 + crop, x0:x0 + crop]).permute(2, 0, 1).float() / 255
        t = torch.from_numpy(alpha[i, y0:y0 + crop, x0:x0 + crop])[None].float() / 255
        if appearance and float(torch.rand(1, generator=gen)) < appearance:
            x = restyle(x, t, gen)
        if mirror and float(torch.rand(1, generator=gen)) < mirror:
            x = mirror_metal(x, t, gen)
        if shadow and float(torch.rand(1, generator=gen)) < shadow:
            x = cast_shadow(x, t, gen)
        if photo and float(torch.rand(1, generator=gen)) < photo:
            x = photometric(x, gen)
        r = torch.rand(3, generator=gen)
        x, t = dihedral(x, t, r)
        xs.append(x)
        ts.append(t)
    return torch.stack(xs), torch.stack(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/segnet/weights.pt")
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--pool", type=int, default=4000, help="number of pre-generated samples")
    ap.add_argument("--pool-hard", type=int, default=0,
                    help="extra samples of the 'hard' profile (hands, clutter), pool seed --seed + 1")
    ap.add_argument("--pool-wide", type=int, default=0,
                    help="extra samples of the 'wide' profile (wide studio world), pool seed --seed + 2")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    ap.add_argument("--val-every", type=int, default=400)
    ap.add_argument("--widths", default="16,32,48,64,96")
    ap.add_argument("--cache", default=os.environ.get("LOUPE_SEGNET_CACHE", "/tmp/loupe-segnet-cache"))
    ap.add_argument("--init", default=None, help="warm-start from these weights (fine-tuning)")
    ap.add_argument("--no-bf16", action="store_true", help="disable bfloat16 autocast on CPU")
    ap.add_argument("--appearance", type=float, default=0.0,
                    help="share of samples whose piece is restyled (tone, saturation, brightness field)")
    ap.add_argument("--photometric", type=float, default=0.0,
                    help="share of samples given another camera's exposure, white balance, tone, blur and noise")
    ap.add_argument("--mirror-metal", type=float, default=0.0,
                    help="share of samples whose piece mirrors a random studio (lights, flags, floor)")
    ap.add_argument("--cast-shadow", type=float, default=0.0,
                    help="share of samples whose piece casts a hard shadow on the backdrop (labelled background)")
    ap.add_argument("--opening-weight", type=float, default=0.0,
                    help="extra loss weight on the piece's openings (link gaps, eyelets, openwork, hooks)")
    args = ap.parse_args(argv)
    t_start = time.time()
    device, out, cache = start_run(args)
    def load_or_make(seed, count, profile):
        tag = "" if profile == "default" else f"_{profile}"

        def make():
            im, al, kd = make_pool(seed, count, workers=args.workers, profile=profile)
            return {"image": im, "alpha": al, "kind": np.array(kd)}

        pool = cached_pool(cache / f"pool_s{seed}_n{count}_{SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]}{tag}.npz", make,
                           f"{profile} samples", modules=(segnet_data,))
        return pool["image"], pool["alpha"], [str(k) for k in pool["kind"]]

    imgs, alphas, kinds = load_or_make(args.seed, args.pool, "default")
    if args.pool_hard:
        im2, al2, kd2 = load_or_make(args.seed + 1, args.pool_hard, "hard")
        imgs, alphas = np.concatenate([imgs, im2]), np.concatenate([alphas, al2])
        kinds = kinds + ["hard_" + k for k in kd2]
    if args.pool_wide:
        im3, al3, kd3 = load_or_make(args.seed + 2, args.pool_wide, "wide")
        imgs, alphas = np.concatenate([imgs, im3]), np.concatenate([alphas, al3])
        kinds = kinds + ["w:" + k for k in kd3]
    kc = {k: kinds.count(k) for k in sorted(set(kinds))}
    print("pool kinds:", kc, flush=True)
    t = time.time()
    val = build_val()
    print(f"val: {', '.join(f'{k}={len(v[0])}' for k, v in val.items())} ({time.time() - t:.0f}s)", flush=True)

    net = starting_net(SegNet, args, TRAIN_COMMAND)
    widths = net.widths
    if args.init:
        print(f"init from {args.init}", flush=True)
    net = net.to(device)
    nparams = sum(p.numel() for p in net.parameters())
    print(f"SegNet widths={widths} params={nparams}", flush=True)
    bf16 = device.type == "cpu" and not args.no_bf16
    amp_dtype = torch.bfloat16 if bf16 else torch.float16
    use_amp = bf16 or device.type == "cuda"
    mf = torch.channels_last
    net = net.to(memory_format=mf)
    opt, sched = optimizer(net, args.lr, args.steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    n = len(kinds)
    hist = []
    t_train = time.time()
    run_loss = 0.0
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, n, (args.batch,), generator=gen).numpy()
        x, y = augment(imgs[idx], alphas[idx], args.crop, gen, appearance=args.appearance, photo=args.photometric,
                       shadow=args.cast_shadow, mirror=args.mirror_metal)
        x = x.to(device).contiguous(memory_format=mf)
        y = y.to(device)
        run_loss += train_step(net, x, y, opt, sched, scaler, device, amp_dtype, use_amp, args.opening_weight)
        if step % 25 == 0:
            el = time.time() - t_train
            print(f"step {step}/{args.steps} loss {run_loss / 25:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{el / step:.2f}s/step eta {el / step * (args.steps - step) / 60:.1f}min", flush=True)
            run_loss = 0.0
        if step % args.val_every == 0 or step == args.steps:
            res = validate(net, val, device)
            hist.append((step, res))
            print(f"val @ {step}: " + " ".join(f"{k}={v:.3f}" for k, v in res.items()), flush=True)
            save_weights(net, out, {"step": step, "val_iou": res, "seed": args.seed})

    wall = time.time() - t_start
    step, res = hist[-1]
    size_kb = out.stat().st_size / 1024
    cmd = "python -m models.segnet.train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# SegNet training record" + (" (fine-tuning stage)" if args.init else ""),
        "",
        "Written by `models/segnet/train.py` at the end of the run.",
        "",
        f"- command: `{cmd}`",
        f"- steps: {args.steps} (batch {args.batch}, crop {args.crop}, pool {n} samples of "
        f"{SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]}, seed {args.seed}, device {args.device}, threads {args.threads}, "
        f"bf16 autocast {bf16})",
        f"- wall time: {wall / 60:.1f} min (including pool generation/loading and validation)",
        f"- parameters: {nparams} (widths {widths}); weights file {size_kb:.0f} KiB (float16 state dict)",
        f"- pool kinds: {kc}",
        "",
        "## Validation IoU (prob > 0.5 vs alpha > 0.5, mean per image)",
        "",
        "Native simulator scenes: 384x256, `render_scene(np.random.default_rng([2024, b, i]), background=...)`, "
        f"{VAL_NATIVE} per background. Composites: `make_sample({VAL_POOL_SEED}, i)`, i < {VAL_COMPOSITE}. "
        f"Wide world: `render_scene(np.random.default_rng([2025, b, i]), background=..., world=\"wide\")`, "
        f"{VAL_WIDE} per wide backdrop.",
        "",
        "| set | n | IoU |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {len(val[k][0])} | {v:.3f} |" for k, v in res.items()]
    lines += ["", "History: " + "; ".join(f"{s}: " + ", ".join(f"{k}={v:.3f}" for k, v in r.items()
                                                               if not k.startswith("comp_")) for s, r in hist), ""]
    md = out.parent / "TRAINING.md"
    if args.init and md.exists():
        prev = md.read_text().split("\n")
        prev = [("#" + ln if ln.startswith("#") else ln) for ln in prev[1:]]
        lines += ["", f"## Previous stage (produced the --init weights {args.init})", ""] + prev
    md.write_text("\n".join(lines))
    print(f"done in {wall / 60:.1f} min; wrote {out} ({size_kb:.0f} KiB) and {md}", flush=True)


if __name__ == "__main__":
    main()
