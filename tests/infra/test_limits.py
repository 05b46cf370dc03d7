"""The worker's malloc policy: a freed plane is reused in place, a freed frame-sized block goes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MB = 1 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_planes_stay_for_reuse_and_freed_frames_go_back():
    script = f"""
import numpy as np
from infra.limits import reuse_freed_memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

assert reuse_freed_memory(keep_bytes=1024 * {MB}, map_above=128 * {MB})
base = rss()
plane = np.ones(96 * {MB}, np.uint8)       # a 24 MP float32 plane: from the heap
del plane
kept = rss() - base
plane = np.ones(96 * {MB}, np.uint8)       # the next one, in the same pages
again = rss() - base
frame = np.ones(288 * {MB}, np.uint8)      # a 24 MP RGB frame: its own mapping
del frame
after = rss() - base
print(kept // {MB}, again // {MB}, after // {MB})
"""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    kept, again, after = (int(v) for v in run.stdout.split())
    assert kept >= 90                  # the freed plane stays mapped (glibc's default unmaps it: 0)...
    assert again < kept + 16           # ...and the next one is made in the same pages
    assert after < again + 32          # the freed frame went back to the system
