"""Engine and memory descriptors.

A descriptor is an opaque byte string made by the engine; ``pack()`` returns
it and ``unpack()`` rebuilds the object, to be carried between processes by
the application (ZMQ, torch.distributed...). The fields MORI-IO exposes are
decoded from it on demand through the library.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Union

from . import _lib
from .enums import MemoryLocationType
from .errors import InvalidArgsError

__all__ = ["EngineDesc", "MemoryDesc"]

BytesLike = Union[bytes, bytearray, memoryview]


def _as_bytes(data: Any, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise InvalidArgsError(f"{what}: expected bytes, got {type(data).__name__}")


def _decode(blob: bytes, kind: str, what: str) -> Dict[str, Any]:
    info = json.loads(_lib.decode_json(blob, what))
    if info.get("kind") != kind:
        raise InvalidArgsError(f"{what}: the bytes are a {info.get('kind')} descriptor, not an {kind} descriptor")
    return info


class EngineDesc:
    """Identifies an engine and says how to reach it.

    Attributes (read-only): ``key``, ``node_id``, ``hostname``, ``host``,
    ``port`` (control-plane port), ``pid``.
    """

    __slots__ = ("_blob", "_info", "_cref")

    def __init__(self, _blob: bytes = b"", _info: Optional[Dict[str, Any]] = None) -> None:
        self._blob = _blob
        self._info = _info
        self._cref: Any = None  # a C copy of _blob for transfers (engine._mem_ref)

    @staticmethod
    def unpack(data: BytesLike) -> "EngineDesc":
        """Rebuild a descriptor from :meth:`pack`'s bytes (InvalidArgsError
        if they are not an engine descriptor)."""
        blob = _as_bytes(data, "EngineDesc.unpack")
        return EngineDesc(blob, _decode(blob, "engine", "EngineDesc.unpack"))

    def pack(self) -> bytes:
        """The descriptor as bytes, to send to peers."""
        return self._blob

    def _field(self, name: str) -> Any:
        if self._info is None:
            if not self._blob:
                return {"port": 0, "pid": 0}.get(name, "")
            self._info = _decode(self._blob, "engine", "EngineDesc")
        return self._info[name]

    @property
    def key(self) -> str:
        return self._field("key")

    @property
    def node_id(self) -> str:
        return self._field("node_id")

    @property
    def hostname(self) -> str:
        return self._field("hostname")

    @property
    def host(self) -> str:
        return self._field("host")

    @property
    def port(self) -> int:
        return self._field("port")

    @property
    def pid(self) -> int:
        return self._field("pid")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EngineDesc):
            return NotImplemented
        return self._blob == other._blob

    def __hash__(self) -> int:
        return hash(self._blob)

    def __reduce__(self):  # picklable, e.g. through multiprocessing queues
        if not self._blob:
            return (EngineDesc, ())
        return (EngineDesc.unpack, (self._blob,))

    def __repr__(self) -> str:
        if not self._blob:
            return "EngineDesc()"
        return f"EngineDesc(key={self.key!r}, host={self.host!r}, port={self.port}, pid={self.pid})"


class MemoryDesc:
    """Describes registered memory.

    Attributes (read-only): ``engine_key``, ``id``, ``device_id``,
    ``device_bus_id``, ``data`` (address), ``size``, ``loc``
    (:class:`MemoryLocationType`), ``numa_node``, ``ipc_handle``.
    ``MemoryDesc()`` makes an empty descriptor, as MORI-IO allows.
    """

    __slots__ = ("_blob", "_info", "_cref")

    def __init__(self, _blob: bytes = b"", _info: Optional[Dict[str, Any]] = None) -> None:
        self._blob = _blob
        self._info = _info
        self._cref: Any = None  # a C copy of _blob for transfers (engine._mem_ref)

    @staticmethod
    def unpack(data: BytesLike) -> "MemoryDesc":
        """Rebuild a descriptor from :meth:`pack`'s bytes (InvalidArgsError
        if they are not a memory descriptor)."""
        blob = _as_bytes(data, "MemoryDesc.unpack")
        return MemoryDesc(blob, _decode(blob, "memory", "MemoryDesc.unpack"))

    def pack(self) -> bytes:
        """The descriptor as bytes, to send to peers."""
        return self._blob

    _EMPTY = {
        "engine_key": "",
        "id": 0,
        "device_id": -1,
        "device_bus_id": "",
        "data": 0,
        "size": 0,
        "location": 0,
        "numa_node": -1,
    }

    def _field(self, name: str) -> Any:
        if self._info is None:
            if not self._blob:
                return self._EMPTY[name]
            self._info = _decode(self._blob, "memory", "MemoryDesc")
        return self._info[name]

    @property
    def engine_key(self) -> str:
        return self._field("engine_key")

    @property
    def id(self) -> int:
        return self._field("id")

    @property
    def device_id(self) -> int:
        return self._field("device_id")

    @property
    def device_bus_id(self) -> str:
        return self._field("device_bus_id")

    @property
    def data(self) -> int:
        return self._field("data")

    @property
    def size(self) -> int:
        return self._field("size")

    @property
    def loc(self) -> MemoryLocationType:
        v = self._field("location")
        try:
            return MemoryLocationType(v)
        except ValueError:
            return v

    @property
    def numa_node(self) -> int:
        return self._field("numa_node")

    @property
    def ipc_handle(self) -> bytes:
        """Always 64 zero bytes: mori-go moves GPU memory without IPC handles."""
        return bytes(64)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MemoryDesc):
            return NotImplemented
        return self._blob == other._blob

    def __hash__(self) -> int:
        return hash(self._blob)

    def __reduce__(self):
        if not self._blob:
            return (MemoryDesc, ())
        return (MemoryDesc.unpack, (self._blob,))

    def __repr__(self) -> str:
        if not self._blob:
            return "MemoryDesc()"
        return (
            f"MemoryDesc(engine_key={self.engine_key!r}, id={self.id}, loc={self.loc!r}, "
            f"device_id={self.device_id}, data={self.data:#x}, size={self.size})"
        )
