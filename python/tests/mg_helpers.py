"""Helpers shared by the sglang_mori_go tests (a distinct module name, so
that it never collides with another directory's conftest).

The tests import ``sglang_mori_go`` as installed (scripts/test-python.sh
installs the wheel into build/pyenv) or, when run from the source tree,
from ``python/`` with the library at ``build/lib`` (or $MORI_GO_LIBRARY).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
import sys
import sysconfig
import textwrap
from typing import Dict, Optional

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(TESTS)
REPO = os.path.dirname(PYDIR)

try:
    import sglang_mori_go  # noqa: F401
except ImportError:  # running from the source tree without an install
    sys.path.insert(0, PYDIR)
    import sglang_mori_go  # noqa: F401

from sglang_mori_go import (  # noqa: E402
    BackendType,
    IOEngine,
    IOEngineConfig,
    MemoryDesc,
    MemoryLocationType,
)

_keys = itertools.count()


def unique_key(prefix: str) -> str:
    """An engine key unique in this test session."""
    return f"{prefix}-{os.getpid()}-{next(_keys)}"


def pth_installed() -> bool:
    """Whether sglang_mori_go.pth is in this interpreter's site-packages."""
    for key in ("purelib", "platlib"):
        if os.path.exists(os.path.join(sysconfig.get_paths()[key], "sglang_mori_go.pth")):
            return True
    return False


def installed_from_wheel() -> bool:
    return os.path.dirname(sglang_mori_go.__file__).startswith(sysconfig.get_paths()["purelib"]) or \
        os.path.dirname(sglang_mori_go.__file__).startswith(sysconfig.get_paths()["platlib"])


def make_engine(prefix: str, **cfg) -> IOEngine:
    e = IOEngine(unique_key(prefix), IOEngineConfig(host="127.0.0.1", port=0, **cfg))
    e.create_backend(BackendType.RDMA)
    return e


class Buffer:
    """A ctypes byte buffer with its address."""

    def __init__(self, size: int, fill: Optional[bytes] = None) -> None:
        self.size = size
        self.raw = ctypes.create_string_buffer(size)
        if fill is not None:
            ctypes.memmove(self.raw, fill, len(fill))
        self.addr = ctypes.addressof(self.raw)

    def bytes(self) -> bytes:
        return self.raw.raw[: self.size]

    def register(self, engine: IOEngine) -> MemoryDesc:
        return engine.register_memory(self.addr, self.size, -1, MemoryLocationType.CPU)


def child_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for a child Python: this one, with the source tree on the
    path when the package is not installed."""
    env = dict(os.environ)
    if not installed_from_wheel():
        env["PYTHONPATH"] = PYDIR + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("MORI_GO_SHADOW_MORI", "MORI_GO_DISABLE_SHIM"):
        env.pop(k, None)
    if extra:
        env.update(extra)
    return env


def run_python(code: str, timeout: float = 60, env: Optional[Dict[str, str]] = None,
               cwd: Optional[str] = None, python: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter; fail the test (never hang) if it
    runs past timeout."""
    try:
        return subprocess.run([python or sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=env if env is not None else child_env(), cwd=cwd)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"child Python ran past {timeout}s (hang?)\nstdout: {e.stdout}\nstderr: {e.stderr}")
