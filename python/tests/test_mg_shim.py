"""The ``mori`` import shim: mori.io / mori.cpp resolve to mori-go in every
process (spawned children included), a real MORI install is not shadowed
unless MORI_GO_SHADOW_MORI=1, and MORI_GO_DISABLE_SHIM=1 turns it off.

With the wheel installed the shim comes from sglang_mori_go.pth; from the
source tree the hook is imported by hand (the .pth-only cases skip)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from mg_helpers import child_env, pth_installed, run_python

PRELUDE = "" if pth_installed() else "import sglang_mori_go._hook\n"
needs_pth = pytest.mark.skipif(not pth_installed(), reason="sglang_mori_go.pth not installed (source-tree run)")

SGLANG_IMPORTS = """
from mori.cpp import TransferStatus
from mori.io import (BackendType, EngineDesc, IOEngine, IOEngineConfig, MemoryDesc, MemoryLocationType,
                     PollCqMode, RdmaBackendConfig, StatusCode)
"""


def _fake_mori(root: str, with_module: bool = True) -> str:
    """A stand-in for an installed amd-mori distribution."""
    if with_module:
        os.makedirs(os.path.join(root, "mori", "io"))
        with open(os.path.join(root, "mori", "__init__.py"), "w") as f:
            f.write("FAKE_AMD_MORI = True\n")
        with open(os.path.join(root, "mori", "io", "__init__.py"), "w") as f:
            f.write("FAKE_IO = True\n")
    info = os.path.join(root, "amd_mori-1.2.4.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: amd-mori\nVersion: 1.2.4\n")
    with open(os.path.join(info, "top_level.txt"), "w") as f:
        f.write("mori\n")
    return root


def _env_with_path(path: str, **extra: str):
    env = child_env(extra)
    env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_mori_io_and_cpp_resolve_to_mori_go():
    r = run_python(PRELUDE + SGLANG_IMPORTS + """
import mori.io, mori.cpp, mori, sglang_mori_go
assert mori.__mori_go__ is True
assert IOEngine is sglang_mori_go.IOEngine and TransferStatus is sglang_mori_go.TransferStatus
assert mori.cpp.StatusCode is mori.io.StatusCode is sglang_mori_go.StatusCode
try:
    from mori.io import make_fabric_mem_pool
    print("make_fabric_mem_pool present")
except ImportError:
    pass
assert not hasattr(mori.io, "make_fabric_mem_pool")
try:
    import mori.ops
    print("mori.ops present")
except ImportError:
    pass
from sglang_mori_go import _lib
assert _lib.loaded() is None, "importing mori.io must not load the library"
print("OK")
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK", r.stdout


def test_sglang_style_transfer_through_mori_io():
    """SGLang's calls, in its order, through the mori.io names."""
    r = run_python(PRELUDE + SGLANG_IMPORTS + """
import ctypes, os
os.environ.pop("MORI_RDMA_DEVICES", None)  # a named device must be usable (test_mg_moriio_env.py)
def make(key):
    e = IOEngine(key, IOEngineConfig(host="127.0.0.1", port=0))
    e.create_backend(BackendType.RDMA, RdmaBackendConfig(1, -1, 1, PollCqMode.POLLING, False))
    d = e.get_engine_desc()
    assert d.port > 0
    return e
p, d = make("io-prefill-dp0-tp0"), make("io-decode-dp0-tp0")
p.register_remote_engine(EngineDesc.unpack(d.get_engine_desc().pack()))
n, page = 1 << 20, 4096
src = ctypes.create_string_buffer(os.urandom(n), n)
dst = ctypes.create_string_buffer(n)
ms = p.register_memory(ctypes.addressof(src), n, 0, MemoryLocationType.GPU)  # no GPU here: host memory
md = MemoryDesc.unpack(d.register_memory(ctypes.addressof(dst), n, -1, MemoryLocationType.CPU).pack())
offs = list(range(0, n, page))
uid = p.allocate_transfer_uid()
statuses = p.batch_write([ms], [offs], [md], [offs[::-1]], [[page] * len(offs)], [uid])
while True:
    code = p.wait_all(statuses, timeout_ms=50)
    if code != StatusCode.IN_PROGRESS:
        break
assert code == StatusCode.SUCCESS, [s.Message() for s in statuses if s.Failed()]
assert isinstance(statuses[0], TransferStatus)
k = len(offs)
assert all(dst.raw[(k - 1 - i) * page:(k - i) * page] == src.raw[i * page:(i + 1) * page] for i in range(k))
print("OK")
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK", r.stdout


@needs_pth
def test_spawned_children_get_the_shim(tmp_path):
    script = tmp_path / "spawn_shim.py"  # spawn needs an importable __main__
    script.write_text(textwrap.dedent("""
        import multiprocessing as mp
        def child(q):
            import mori.io, mori
            from mori.cpp import TransferStatus
            q.put((mori.__mori_go__, mori.io.IOEngine.__module__))
        if __name__ == "__main__":
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=child, args=(q,))
            p.start()
            p.join(60)
            print(q.get(timeout=5) if p.exitcode == 0 else f"child exit {p.exitcode}")
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=child_env())
    assert r.returncode == 0, r.stderr
    assert "(True, 'sglang_mori_go.engine')" in r.stdout, r.stdout + r.stderr


def test_real_mori_is_not_shadowed(tmp_path):
    fake = _fake_mori(str(tmp_path))
    code = PRELUDE + (
        "import mori.io, mori\n"
        "print(getattr(mori, 'FAKE_AMD_MORI', False), getattr(mori, '__mori_go__', False))\n"
    )
    r = run_python(code, env=_env_with_path(fake))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"], r.stdout
    r = run_python(code, env=_env_with_path(fake, MORI_GO_SHADOW_MORI="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True"], r.stdout


def test_distribution_without_module_still_defers(tmp_path):
    """An amd-mori distribution that another finder cannot import is still
    not shadowed (the user meant to use AMD's)."""
    fake = _fake_mori(str(tmp_path), with_module=False)
    code = PRELUDE + """
try:
    import mori.io, mori
    print("mori-go" if getattr(mori, "__mori_go__", False) else "other")
except ImportError:
    print("ImportError")
"""
    r = run_python(code, env=_env_with_path(fake))
    assert r.stdout.strip() == "ImportError", r.stdout + r.stderr
    r = run_python(code, env=_env_with_path(fake, MORI_GO_SHADOW_MORI="1"))
    assert r.stdout.strip() == "mori-go", r.stdout + r.stderr


def test_disable_shim():
    r = run_python(PRELUDE + """
try:
    import mori.io, mori
    print("imported", mori)
except ImportError:
    print("ImportError")
""", env=child_env({"MORI_GO_DISABLE_SHIM": "1"}))
    assert r.stdout.strip() == "ImportError", r.stdout + r.stderr


def test_bare_import_mori_is_not_moriep():
    """SGLang's MoRI-EP dispatcher takes a successful bare ``import mori`` as
    "MoRI EP installed": with only mori-go it must fail, while mori.io
    works, and after it ``mori`` is the package that served it."""
    r = run_python(PRELUDE + """
try:
    import mori
    print("bare import succeeded")
except ImportError:
    print("ImportError")
import importlib
io = importlib.import_module("mori.io")
from mori.cpp import TransferStatus
import mori
print(mori.__mori_go__, io.IOEngine.__module__)
""")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ImportError", "True", "sglang_mori_go.engine"], r.stdout + r.stderr


def test_a_namespace_directory_named_mori_does_not_hide_mori_io(tmp_path):
    """A bare directory named mori on sys.path (a MORI source checkout, a
    stray folder) is no MORI install: mori.io still resolves to mori-go."""
    os.makedirs(tmp_path / "mori" / "docs")
    r = run_python(PRELUDE + """
import mori.io, mori
print(getattr(mori, "__mori_go__", False))
""", env=_env_with_path(str(tmp_path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True", r.stdout + r.stderr
