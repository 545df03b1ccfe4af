"""``mori.cpp`` served by mori-go: the names MORI's pybind module offers that
callers import directly (SGLang: ``from mori.cpp import TransferStatus``)."""

from sglang_mori_go.config import (  # noqa: F401
    BackendConfig,
    FabricBackendConfig,
    IOEngineConfig,
    RdmaBackendConfig,
    XgmiBackendConfig,
)
from sglang_mori_go.desc import EngineDesc, MemoryDesc  # noqa: F401
from sglang_mori_go.engine import set_log_level  # noqa: F401
from sglang_mori_go.enums import BackendType, MemoryLocationType, PollCqMode, StatusCode  # noqa: F401
from sglang_mori_go.status import TransferStatus  # noqa: F401

__all__ = [
    "BackendConfig",
    "BackendType",
    "EngineDesc",
    "FabricBackendConfig",
    "IOEngineConfig",
    "MemoryDesc",
    "MemoryLocationType",
    "PollCqMode",
    "RdmaBackendConfig",
    "StatusCode",
    "TransferStatus",
    "XgmiBackendConfig",
    "set_log_level",
]
