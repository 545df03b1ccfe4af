"""The ABI-overhead microbenchmark runs (small sizes; figures not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from mg_helpers import PYDIR, REPO, child_env


def test_abi_overhead_script_runs():
    script = os.path.join(PYDIR, "bench", "abi_overhead.py")
    r = subprocess.run([sys.executable, script, "--ranges", "2000", "--iters", "2"], capture_output=True, text=True,
                       timeout=120, env=child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ns/range" in r.stdout and "array.array('Q')" in r.stdout


def _worker(role: str, size: int) -> subprocess.Popen:
    script = os.path.join(REPO, "bench", "worker.py")
    return subprocess.Popen([sys.executable, script, role, "mori", "--size", str(size), "--conns", "0"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())


def _call(p: subprocess.Popen, line: str) -> str:
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def test_bench_worker_spins_the_gap_outside_each_batch_time(tmp_path):
    """bench/run.py --gap-us: the initiator spins GAP_US before each batch
    and leaves it out of the batch's time; the bytes still arrive."""
    pytest.importorskip("numpy")  # the worker needs it
    sys.path.insert(0, os.path.join(REPO, "bench"))
    try:
        import workloads
    finally:
        sys.path.pop(0)
    wl = workloads.uniform("4 KiB x 4", "size", 4096, 4)
    layout = str(tmp_path / "layout.bin")
    wl.write(layout)
    size = 1 << 20
    tgt = _worker("target", size)
    init = None
    try:
        info = tgt.stdout.readline().strip()
        assert info.startswith("info "), info
        init = _worker("init", size)
        assert _call(init, f"connect 1 {info[5:]}") == "ok"
        assert _call(tgt, f"clear {layout} 0") == "ok"
        assert _call(init, f"layout {layout}") == "ok"
        gap_us, n = 200_000, 3
        t0 = time.monotonic()
        r = _call(init, f"run {n} {gap_us}")
        wall = time.monotonic() - t0
        assert r.startswith("ok "), r
        lat = [float(x) for x in r.split()[1:]]
        assert len(lat) == n
        assert wall >= n * gap_us * 1e-6  # the gap was spun before each batch
        assert all(x < gap_us * 1e-6 for x in lat), lat  # and is not in the batch's time
        r = _call(init, "run 2")  # no gap: back to back, as before
        assert r.startswith("ok ") and len(r.split()) == 3, r
        assert _call(tgt, f"check {layout} 0") == "ok"
    finally:
        for p in (init, tgt):
            if p is not None:
                p.stdin.close()
                p.wait(timeout=30)
