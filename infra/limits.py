"""Per-process memory cap, so one hostile image fails its own task, not the machine.

``cap_worker_memory`` lowers the soft ``RLIMIT_DATA``. On Linux >= 4.7 that limit counts
brk plus every private writable mapping (what malloc, numpy, Pillow, LibRaw, OpenCV and
torch's CPU allocator use) but not shared file-backed memory such as Ray's object store:
a zero-copy ``ray.get`` array does not count against it. It counts what is mapped, not
what is touched, and it includes what the process already holds (a Ray worker starts at
~0.2 GB, ~0.4 GB once torch is imported). An allocation over the cap fails at once and
the process lives on: numpy and Pillow raise ``MemoryError``, torch ``RuntimeError``
("DefaultCPUAllocator: can't allocate memory"), rawpy ``LibRawUnsufficientMemoryError``
or ``LibRawMemPoolOverflowError``, OpenCV ``cv2.error`` (StsNoMem); in a Ray task the
caller gets a ``RayTaskError`` that is also a ``MemoryError`` and the worker is reused.
Without the cap the kernel's OOM killer takes the worker, or a neighbour.

``RLIMIT_AS`` is not used: it counts address-space reservations (allocator arenas,
CUDA and JIT mappings) that never become memory, so a cap tight enough to matter
breaks imports.
"""

from __future__ import annotations

import resource


def cap_worker_memory(max_bytes: int) -> None:
    """Lower this process's data-size limit (soft ``RLIMIT_DATA``) to ``max_bytes``.

    Idempotent, and it only ever lowers: a cap already at or below ``max_bytes`` (from an
    earlier call, or inherited) is kept, so in a reused worker the smallest cap asked for
    stays; give every task of a worker the same value. The hard limit is left alone.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    new = int(max_bytes) if hard == resource.RLIM_INFINITY else min(int(max_bytes), hard)
    if soft != resource.RLIM_INFINITY and soft <= new:
        return
    resource.setrlimit(resource.RLIMIT_DATA, (new, hard))
