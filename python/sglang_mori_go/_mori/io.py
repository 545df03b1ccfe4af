"""``mori.io`` served by mori-go: MORI-IO's Python API (see sglang_mori_go).

There is no ``make_fabric_mem_pool``, ``fabric_alloc`` or ``fabric_free``:
mori-go has no FABRIC backend, and SGLang expects ImportError there."""

from sglang_mori_go.config import (  # noqa: F401
    BackendConfig,
    FabricBackendConfig,
    IOEngineConfig,
    RdmaBackendConfig,
    XgmiBackendConfig,
)
from sglang_mori_go.desc import EngineDesc, MemoryDesc  # noqa: F401
from sglang_mori_go.engine import IOEngine, IOEngineSession, set_log_level  # noqa: F401
from sglang_mori_go.enums import BackendType, MemoryLocationType, PollCqMode, StatusCode  # noqa: F401

__all__ = [
    "BackendConfig",
    "BackendType",
    "EngineDesc",
    "FabricBackendConfig",
    "IOEngine",
    "IOEngineConfig",
    "IOEngineSession",
    "MemoryDesc",
    "MemoryLocationType",
    "PollCqMode",
    "RdmaBackendConfig",
    "StatusCode",
    "XgmiBackendConfig",
    "set_log_level",
]
