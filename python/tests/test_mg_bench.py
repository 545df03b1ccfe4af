"""The ABI-overhead microbenchmark runs (small sizes; figures not checked)."""

from __future__ import annotations

import os
import subprocess
import sys

from mg_helpers import PYDIR, child_env


def test_abi_overhead_script_runs():
    script = os.path.join(PYDIR, "bench", "abi_overhead.py")
    r = subprocess.run([sys.executable, script, "--ranges", "2000", "--iters", "2"], capture_output=True, text=True,
                       timeout=120, env=child_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ns/range" in r.stdout and "array.array('Q')" in r.stdout
