"""Per-process memory cap, so one hostile image fails its own task, not the machine.

``memory_cap`` sets the soft ``RLIMIT_DATA`` for the code inside it. On Linux >= 4.7 that limit counts
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

import ctypes
import ctypes.util
import resource
from contextlib import contextmanager

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
# blocks above this keep their own mapping (see reuse_freed_memory): between a 24 MP float32 plane
# (96 MB), which the heap reuses, and a 24 MP RGB frame (288 MB), which is mapped
MAP_ABOVE = 128 << 20


def data_bytes() -> int:
    """What this process holds now in the terms ``RLIMIT_DATA`` counts (``VmData``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def memory_cap(extra_bytes: int):
    """Let the code inside grow this process by at most ``extra_bytes`` (soft ``RLIMIT_DATA`` above what
    it holds on entry); the previous limit comes back on exit, so a reused worker starts each task
    afresh. The hard limit is left alone and never exceeded."""
    if extra_bytes <= 0:
        raise ValueError(f"extra_bytes must be positive, got {extra_bytes}")
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = data_bytes() + int(extra_bytes)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY:
        cap = min(cap, soft)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def reuse_freed_memory(keep_bytes: int = 1 << 30, map_above: int = MAP_ABOVE) -> bool:
    """Make glibc's malloc serve blocks up to ``map_above`` bytes from one heap for every thread and
    keep up to ``keep_bytes`` of it freed; larger blocks keep a mapping of their own.

    By default every block over 32 MB (a 24 MP plane is 96 MB, an RGB frame 288 MB) is its own
    mmap: freed with munmap, and the next one faults its pages in and zeroes them again. A retouch
    allocates a few hundred such blocks, and on a 24 MP image that page-faulting was more than half
    of the time (40 of 70 s as system time, 21 M minor faults, on the 2-core VM). From the heap, freed
    blocks are reused in place (4 s of system time). The heap keeps its high-water mark, and in a Ray
    actor, whose own threads allocate beside the retouch, it grew over four 24 MP images to
    3.6-4.3 GB (mean 3.9, six runs) with every block from the heap and an arena per thread; with
    RGB frames mapped (a few dozen per image) and one arena, 3.35-3.58 GB (mean 3.5, five runs),
    the same time within 2%. Returns False where this is not glibc (the defaults stay).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return all(mallopt(param, int(value)) for param, value in
               ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, map_above), (_M_TRIM_THRESHOLD, keep_bytes)))


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (a Ray worker's whole life)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
