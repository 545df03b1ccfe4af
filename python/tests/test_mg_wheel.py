"""The wheel: its contents and platform tag, and a clean install into a fresh
venv (no Go, no libzmq, no source tree) that moves bytes through mori.io.

The wheel is $MORI_GO_WHEEL, else the newest build/dist/*.whl; these tests
skip without one unless MORI_GO_REQUIRE_WHEEL=1 (scripts/test-python.sh)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from mg_helpers import REPO

ALLOWED_NEEDED = {"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
                  "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}


def _wheel() -> str:
    path = os.environ.get("MORI_GO_WHEEL")
    if not path:
        found = sorted(glob.glob(os.path.join(REPO, "build", "dist", "sglang_mori_go-*.whl")), key=os.path.getmtime)
        path = found[-1] if found else ""
    if not path or not os.path.exists(path):
        if os.environ.get("MORI_GO_REQUIRE_WHEEL") == "1":
            pytest.fail(f"wheel not found ({path or 'build/dist empty'})")
        pytest.skip("no wheel built (scripts/build-wheel.sh)")
    return path


def test_wheel_contents_and_tag(tmp_path):
    path = _wheel()
    name = os.path.basename(path)
    m = re.fullmatch(r"sglang_mori_go-([0-9][^-]*)-py3-none-((manylinux_(\d+)_(\d+)|linux)_(x86_64|aarch64))\.whl",
                     name)
    assert m, name
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for required in ("sglang_mori_go/__init__.py", "sglang_mori_go/_hook.py", "sglang_mori_go/_mori/io.py",
                         "sglang_mori_go/_mori/cpp.py", "sglang_mori_go/lib/libmori_go.so", "sglang_mori_go.pth",
                         f"sglang_mori_go-{m.group(1)}.dist-info/WHEEL",
                         f"sglang_mori_go-{m.group(1)}.dist-info/RECORD"):
            assert required in names, required
        assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
        assert zf.read("sglang_mori_go.pth").decode().strip() == "import sglang_mori_go._hook"
        wheel_meta = zf.read(f"sglang_mori_go-{m.group(1)}.dist-info/WHEEL").decode()
        assert f"Tag: py3-none-{m.group(2)}" in wheel_meta and "Root-Is-Purelib: false" in wheel_meta
        zf.extract("sglang_mori_go/lib/libmori_go.so", tmp_path)
    so = str(tmp_path / "sglang_mori_go" / "lib" / "libmori_go.so")
    if not shutil.which("readelf"):
        pytest.skip("readelf not installed")
    dyn = subprocess.run(["readelf", "-dW", so], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn))
    assert needed <= ALLOWED_NEEDED, f"library needs more than glibc: {needed - ALLOWED_NEEDED}"
    assert not [n for n in needed if "zmq" in n]
    if m.group(3):  # manylinux_X_Y: no glibc symbol newer than X.Y
        ver = subprocess.run(["readelf", "-VW", so], capture_output=True, text=True, check=True).stdout
        glibc = max(tuple(int(x) for x in v.split(".")) for v in re.findall(r"GLIBC_(\d+\.\d+)", ver))
        assert glibc <= (int(m.group(4)), int(m.group(5)))


SCRIPT = r"""
import ctypes, os, sys, shutil
assert shutil.which("go") is None, "go must not be needed"
import mori.io, mori
from mori.cpp import TransferStatus
from mori.io import (BackendType, EngineDesc, IOEngine, IOEngineConfig, MemoryDesc, MemoryLocationType,
                     PollCqMode, RdmaBackendConfig, StatusCode)
import sglang_mori_go
lib = sglang_mori_go.library_path()
assert lib.startswith(sys.prefix), lib
assert mori.__mori_go__
def make(key):
    e = IOEngine(key, IOEngineConfig("127.0.0.1", 0))
    e.create_backend(BackendType.RDMA, RdmaBackendConfig(1, -1, -1, PollCqMode.POLLING, False))
    return e
a, b = make("venv-a"), make("venv-b")
a.register_remote_engine(EngineDesc.unpack(b.get_engine_desc().pack()))
n = 1 << 20
payload = os.urandom(n)
src = ctypes.create_string_buffer(payload, n)
dst = ctypes.create_string_buffer(n)
ms = a.register_memory(ctypes.addressof(src), n, -1, MemoryLocationType.CPU)
md = MemoryDesc.unpack(b.register_memory(ctypes.addressof(dst), n, -1, MemoryLocationType.CPU).pack())
offs = list(range(0, n, 512))
sts = a.batch_write([ms], [offs], [md], [offs], [[512] * len(offs)], [a.allocate_transfer_uid()])
assert a.wait_all(sts, 30000) == StatusCode.SUCCESS, sts[0].Message()
assert dst.raw == payload
print("VENV OK", lib)
"""


def test_fresh_venv_install_moves_bytes(tmp_path):
    path = _wheel()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", "-q",
                        path], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # A bare environment: no Go on PATH, no library overrides, no source tree.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    r = subprocess.run([py, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VENV OK" in r.stdout
