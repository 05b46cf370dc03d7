"""Checks an operator can act on, done in seconds, before Prefect, Ray or any image starts."""

from __future__ import annotations

import os
from pathlib import Path


def preflight(out: "str | Path", preset: str, device: str, ray_address: str | None = None) -> list[str]:
    """One line per problem: OUT not writable, the preset unknown or invalid, CUDA asked for but absent."""
    problems = []
    if (why := unwritable(out)) is not None:
        problems.append(why)
    from flows.retouch import checked_preset
    from infra.presets import PresetError

    try:
        checked_preset(preset)
    except PresetError as exc:
        problems += str(exc).splitlines()
    if (why := missing_gpu(device, ray_address)) is not None:
        problems.append(why)
    return problems


def missing_gpu(device: str, ray_address: str | None) -> str | None:
    """``--device cuda`` where there is no GPU would wait forever for one: why not, or None."""
    if device != "cuda":
        return None
    if ray_address or os.environ.get("RAY_ADDRESS"):
        import ray

        from infra.raycluster import ensure_ray

        ensure_ray(ray_address)
        if ray.cluster_resources().get("GPU", 0) < 1:
            return "--device cuda: the Ray cluster has no GPU; use --device auto or cpu, or add a GPU node"
        return None
    import torch

    if not torch.cuda.is_available():
        return ("--device cuda: this machine has no usable CUDA GPU (torch sees none); use --device auto or cpu, "
                "or install a CUDA build of torch (see README)")
    return None


def unwritable(out: "str | Path") -> str | None:
    """None if OUT can be written (a probe file written and removed), else why, naming the place."""
    from infra.storage import Location

    probe = Location.of(out) / f".loupe-probe-{os.getpid()}.part"
    try:
        probe.write_bytes(b"\0" * 65536)
        probe.unlink()
    except OSError as exc:
        return (f"cannot write to {getattr(exc, 'filename', None) or out}: {exc.strerror or exc}; "
                "choose another --out, or fix its permissions, free space or storage settings")
    return None
