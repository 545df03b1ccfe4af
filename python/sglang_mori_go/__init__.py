"""sglang-mori-go: MORI-IO's Python API over mori-go's libmori_go.so.

``import sglang_mori_go`` (or, with the wheel installed, ``import mori.io``
and ``import mori.cpp``) gives the names SGLang's ``mori`` disaggregation
backend uses: :class:`IOEngine`, :class:`IOEngineConfig`,
:class:`RdmaBackendConfig`, :class:`EngineDesc`, :class:`MemoryDesc`,
:class:`TransferStatus`, the enums, and :func:`set_log_level`.

Importing is cheap and starts nothing: the library (and the Go runtime in
it) is loaded on first use. The names are resolved lazily so that the
``.pth`` hook, which imports ``sglang_mori_go._hook`` in every Python
process, costs almost nothing.

Environment variables (read when an :class:`IOEngine` is created):
MORI_GO_BACKEND (auto|tcp|rdma), MORI_RDMA_DEVICES, MORI_GO_SECRET,
MORI_GO_LOG_LEVEL, MORI_GO_TRANSFER_TIMEOUT_MS, MORI_GO_TCP_STREAMS,
MORI_GO_TCP_BUSY_POLL_US, MORI_GO_TCP_CONGESTION, MORI_GO_GPU, MORI_NODE_ID,
MORI_GO_COMPRESSION (off|s2|zstd|auto), MORI_GO_COMPRESS_ELEM_SIZE. MORI_GO_LIBRARY (read at first load) overrides
the library path. MORI_GO_DISABLE_SHIM=1 and MORI_GO_SHADOW_MORI=1 control
the ``mori`` import shim (see :mod:`sglang_mori_go._hook`).
"""

# No module-level imports: this package is imported at every interpreter
# start by the .pth hook, so it must cost next to nothing (``typing`` alone
# costs ~10 ms).
TYPE_CHECKING = False

__version__ = "0.1.0"

_EXPORTS = {
    "IOEngine": "engine",
    "IOEngineSession": "engine",
    "set_log_level": "engine",
    "get_log_level": "engine",
    "IOEngineConfig": "config",
    "BackendConfig": "config",
    "RdmaBackendConfig": "config",
    "XgmiBackendConfig": "config",
    "FabricBackendConfig": "config",
    "EngineDesc": "desc",
    "MemoryDesc": "desc",
    "TransferStatus": "status",
    "wait_all": "status",
    "BackendType": "enums",
    "MemoryLocationType": "enums",
    "StatusCode": "enums",
    "PollCqMode": "enums",
    "MoriGoError": "errors",
    "LibraryLoadError": "errors",
    "InvalidArgsError": "errors",
    "NotFoundError": "errors",
    "RdmaOpError": "errors",
    "BadStateError": "errors",
    "GpuOpError": "errors",
    "TransferTimeoutError": "errors",
    "TimeoutError_": "errors",
    "MoriConnectionError": "errors",
    "ConnectionError_": "errors",
    "RemoteError": "errors",
    "InternalError": "errors",
    "ForkedProcessError": "errors",
    "UnsupportedError": "errors",
}

__all__ = sorted(_EXPORTS) + ["library_path", "library_version", "__version__"]


def __getattr__(name: str) -> object:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'sglang_mori_go' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return __all__


def library_path() -> str:
    """Path of libmori_go.so as loaded (or as it would be loaded)."""
    from . import _lib

    return _lib.library_path()


def library_version() -> str:
    """The library's version string (loads the library)."""
    from . import _lib

    return _lib.lib().mg_version().decode()


if TYPE_CHECKING:  # pragma: no cover
    from .config import (BackendConfig, FabricBackendConfig, IOEngineConfig, RdmaBackendConfig,  # noqa: F401
                         XgmiBackendConfig)
    from .desc import EngineDesc, MemoryDesc  # noqa: F401
    from .engine import IOEngine, IOEngineSession, get_log_level, set_log_level  # noqa: F401
    from .enums import BackendType, MemoryLocationType, PollCqMode, StatusCode  # noqa: F401
    from .errors import *  # noqa: F401,F403
    from .status import TransferStatus, wait_all  # noqa: F401
