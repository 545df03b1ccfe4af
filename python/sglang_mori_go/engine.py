"""IOEngine and IOEngineSession: MORI-IO's Python API over libmori_go.so."""

from __future__ import annotations

import array
import ctypes
import json
import logging
import operator
import os
import struct
import sys
import threading
from ctypes import c_int32, c_uint32, c_uint64
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from . import _lib, _moriio_env
from .config import BackendConfig, IOEngineConfig, RdmaBackendConfig
from .desc import EngineDesc, MemoryDesc
from .enums import BackendType, MemoryLocationType, StatusCode, to_status_code
from .errors import BadStateError, InvalidArgsError
from .status import TransferStatus, wait_all as _wait_all

__all__ = ["IOEngine", "IOEngineSession", "set_log_level", "get_log_level"]

log = logging.getLogger("sglang_mori_go")

_OP_WRITE = 1
_OP_READ = 2

_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "err": "error",
    "critical": "error",
    "off": "error",
}
_PY_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
_default_log_level: Optional[str] = None
_backend_logged = False
_backend_log_lock = threading.Lock()


def _norm_level(level: str, what: str) -> str:
    lv = _LEVELS.get(str(level).strip().lower())
    if lv is None:
        raise InvalidArgsError(f"{what}: log level {level!r}: want one of {', '.join(sorted(_LEVELS))}")
    return lv


def set_log_level(level: str) -> None:
    """Set the log level ("trace", "debug", "info", "warn", "error",
    "critical") of engines created after this call, and of this package's
    Python logger. An explicit ``IOEngineConfig.log_level`` or the
    MORI_GO_LOG_LEVEL variable takes precedence for the engine."""
    global _default_log_level
    lv = _norm_level(level, "set_log_level")
    _default_log_level = lv
    log.setLevel(_PY_LEVELS[lv])


def get_log_level() -> Optional[str]:
    """The level set by :func:`set_log_level` (None if never called)."""
    return _default_log_level


# -- argument conversion ------------------------------------------------------

_Q_CODES = tuple(c for c in "LQ" if array.array(c).itemsize == 8)


def _label(what: Any) -> str:
    """An argument's name for an error message: a string, or (call, name,
    index) as the hot path passes it, formatted only when needed."""
    if isinstance(what, tuple):
        call, name, i = what
        return f"{call}: {name} {i}"
    return what


def _u64_array(seq: Any, what: Any) -> Tuple[Any, int, int]:
    """Convert offsets or sizes to a uint64 buffer without a per-element
    Python loop. Returns (object owning the memory, address, length).

    Accepts an ``array.array`` of 8-byte unsigned ints (used in place), a
    numpy integer array (a contiguous uint64 one in place, others converted
    with numpy), or any sequence of ints (``array.array('Q', seq)``). The
    common cases come first: this runs three times per transfer."""
    t = type(seq)
    if t is not list and t is not tuple:
        if t is array.array:
            if seq.typecode in _Q_CODES:
                n = len(seq)
                return seq, (seq.buffer_info()[0] if n else 0), n
        else:
            np = sys.modules.get("numpy")
            if np is not None and isinstance(seq, np.ndarray):
                flags = seq.flags
                if seq.dtype is _np_uint64(np) and flags.c_contiguous:
                    n = seq.size
                    if flags.writeable and n:  # used in place
                        return seq, ctypes.addressof(ctypes.c_char.from_buffer(seq)), n
                    if n <= _COPY_READONLY_UP_TO:
                        # Read-only (a view of bytes, say): a copy is cheaper
                        # than asking numpy for the address.
                        seq = array.array("Q", seq.tobytes())
                        return seq, (seq.buffer_info()[0] if n else 0), n
                return _np_u64(np, seq, what)
    try:
        seq = array.array("Q", seq)
    except OverflowError as e:
        raise InvalidArgsError(
            f"{_label(what)}: {e} (offsets and sizes must be non-negative integers < 2**64)"
        ) from None
    except TypeError as e:
        raise InvalidArgsError(f"{_label(what)}: {e} (expected a sequence of non-negative integers)") from None
    n = len(seq)
    return seq, (seq.buffer_info()[0] if n else 0), n


# Transfer uids reserved per foreign call (allocate_transfer_uid).
_UID_BLOCK = 256

_U64_DTYPE: Any = None

# Read-only uint64 arrays up to this many values are copied (see _u64_array).
_COPY_READONLY_UP_TO = 4096


def _np_uint64(np: Any) -> Any:
    """numpy's native uint64 dtype (one object: compared with ``is``)."""
    global _U64_DTYPE
    if _U64_DTYPE is None:
        _U64_DTYPE = np.dtype(np.uint64)
    return _U64_DTYPE


def _np_u64(np: Any, arr: Any, what: Any) -> Tuple[Any, int, int]:
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    dt = arr.dtype
    kind = dt.kind
    if kind not in "iu":
        raise InvalidArgsError(f"{_label(what)}: numpy array of dtype {arr.dtype}, expected integers")
    n = arr.size
    if kind == "i" and n and int(arr.min()) < 0:
        raise InvalidArgsError(
            f"{_label(what)}: negative value {int(arr.min())} (offsets and sizes must be non-negative)"
        )
    if dt.itemsize != 8 or not dt.isnative or not arr.flags.c_contiguous:
        # (non-negative int64 has the bits of its uint64: used as it is)
        arr = np.ascontiguousarray(arr, dtype=np.uint64)
    if not n:
        return arr, 0, 0
    return arr, _address(arr), n


def _address(buf: Any) -> int:
    """Address of a C-contiguous buffer. ``from_buffer`` takes a writable
    one in well under a microsecond; ``__array_interface__`` (a few
    microseconds: it builds a dict) serves read-only arrays."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError, BufferError):
        return buf.__array_interface__["data"][0]


def _mem(desc: Any, what: str) -> bytes:
    if not isinstance(desc, MemoryDesc):
        raise InvalidArgsError(f"{what}: expected a MemoryDesc, got {type(desc).__name__}")
    return desc._blob


def _mem_ref(desc: Any, what: Any) -> Tuple[int, int]:
    """Address and length of a memory descriptor's bytes, for mg_transfer_t.
    The descriptor keeps a C copy of its (immutable) bytes, made at its
    first transfer, so that later ones cost no conversion."""
    if type(desc) is not MemoryDesc and not isinstance(desc, MemoryDesc):
        raise InvalidArgsError(f"{_label(what)}: expected a MemoryDesc, got {type(desc).__name__}")
    ref = desc._cref
    if ref is None:
        blob = desc._blob
        buf = ctypes.create_string_buffer(blob, len(blob))
        ref = desc._cref = (ctypes.addressof(buf) if blob else 0, len(blob), buf)
    return ref[0], ref[1]


# mg_transfer_t packed in one call: local_desc, local_desc_len, remote_desc,
# remote_desc_len, local_offsets, remote_offsets, sizes, count, uid.
_TRANSFER = struct.Struct("@PNPNPPPNQ")
assert _TRANSFER.size == ctypes.sizeof(_lib.Transfer)

def _env(name: str) -> Optional[str]:
    v = os.environ.get(name)
    if v is None or v.strip() == "":
        return None
    return v.strip()


def _env_int(name: str) -> Optional[int]:
    v = _env(name)
    if v is None:
        return None
    try:
        return int(v, 0)
    except ValueError:
        raise InvalidArgsError(f"environment variable {name}={v!r}: expected an integer") from None


def _pick(explicit: Any, env_value: Any) -> Any:
    return explicit if explicit is not None else env_value


class IOEngine:
    """A mori-go transfer engine with MORI-IO's Python API.

    ``IOEngine(key, config)``: ``key`` names the engine uniquely among its
    peers; ``config`` is an :class:`IOEngineConfig` (environment variables
    fill what it leaves unset, read now — see :class:`IOEngineConfig`).

    The control plane listens from construction; call
    :meth:`create_backend` before registering remote engines. Every method
    raises a :class:`~sglang_mori_go.errors.MoriGoError` subclass on failure,
    and :class:`~sglang_mori_go.errors.ForkedProcessError` in a process
    forked after the library was loaded. Methods are safe to call from
    several threads at once.
    """

    def __init__(self, key: str, config: Optional[IOEngineConfig] = None) -> None:
        self._h = 0
        self._uids: Iterator[int] = iter(())  # a block reserved by mg_allocate_uids
        self._lock = threading.Lock()
        self._remotes: Set[str] = set()
        self._backend: Optional[BackendType] = None
        if not isinstance(key, str) or not key:
            raise InvalidArgsError(f"IOEngine: key must be a non-empty string, got {key!r}")
        if config is None:
            config = IOEngineConfig()
        self.key = key
        self.config = config
        cfg = self._config_json(key, config)
        self._backend_mode = cfg.get("backend", "auto")
        lib = _lib.lib()
        out = c_uint64()
        _lib.raise_for(lib.mg_engine_create(json.dumps(cfg).encode(), ctypes.byref(out)), f"IOEngine({key!r})")
        self._h = out.value

    @staticmethod
    def _config_json(key: str, c: IOEngineConfig) -> Dict[str, Any]:
        cfg: Dict[str, Any] = {"key": key, "host": str(c.host or ""), "port": int(c.port or 0)}
        backend = _pick(c.backend, _env("MORI_GO_BACKEND"))
        if backend is not None:
            b = str(backend).lower()
            if b not in ("auto", "tcp", "rdma"):
                raise InvalidArgsError(f"backend {backend!r} (MORI_GO_BACKEND): want auto, tcp or rdma")
            cfg["backend"] = b
        for field, env, name in (
            ("rdma_devices", "MORI_RDMA_DEVICES", "rdma_devices"),
            ("secret", "MORI_GO_SECRET", "secret"),
            ("gpu", "MORI_GO_GPU", "gpu"),
            ("node_id", "MORI_NODE_ID", "node_id"),
        ):
            v = _pick(getattr(c, field), _env(env))
            if v is not None:
                cfg[name] = str(v)
        level = _pick(c.log_level, _env("MORI_GO_LOG_LEVEL"))
        if level is None:
            level = _default_log_level
        if level is not None:
            cfg["log_level"] = _norm_level(level, "log level (MORI_GO_LOG_LEVEL)")
        for field, env, name in (
            ("transfer_timeout_ms", "MORI_GO_TRANSFER_TIMEOUT_MS", "transfer_timeout_ms"),
            ("handshake_timeout_ms", "MORI_GO_HANDSHAKE_TIMEOUT_MS", "handshake_timeout_ms"),
            ("totals_log_ms", "MORI_GO_TOTALS_LOG_MS", "totals_log_ms"),
        ):
            v = _pick(getattr(c, field), _env_int(env))
            if v is not None:
                cfg[name] = int(v)
        tcp: Dict[str, Any] = {}
        streams = _pick(c.tcp_streams, _env_int("MORI_GO_TCP_STREAMS"))
        if streams is not None:
            tcp["streams"] = int(streams)
        poll = _pick(getattr(c, "tcp_busy_poll_us", None), _env_int("MORI_GO_TCP_BUSY_POLL_US"))
        if poll is not None:
            tcp["busy_poll_us"] = int(poll)
        cc = _pick(getattr(c, "tcp_congestion", None), _env("MORI_GO_TCP_CONGESTION"))
        if cc:
            tcp["congestion"] = str(cc)
        comp = _pick(getattr(c, "compression", None), _env("MORI_GO_COMPRESSION"))
        if comp is not None:
            m = str(comp).lower()
            if m not in ("off", "s2", "zstd", "auto"):
                raise InvalidArgsError(f"compression {comp!r} (MORI_GO_COMPRESSION): want off, s2, zstd or auto")
            tcp["compression"] = m
        elem = _pick(getattr(c, "compress_elem_size", None), _env_int("MORI_GO_COMPRESS_ELEM_SIZE"))
        if elem is not None:
            tcp["compress_elem_size"] = int(elem)
        if tcp:
            cfg["tcp"] = tcp
        tls = {}
        for field, env, name in (
            ("tls_cert", "MORI_GO_TLS_CERT", "cert"),
            ("tls_key", "MORI_GO_TLS_KEY", "key"),
            ("tls_ca", "MORI_GO_TLS_CA", "ca"),
        ):
            v = _pick(getattr(c, field, None), _env(env))
            if v:
                tls[name] = str(v)
        if tls:
            cfg["tls"] = tls
        return cfg

    # -- lifetime ----------------------------------------------------------

    def _handle(self) -> int:
        _lib.check_fork()
        h = self._h
        if not h:
            raise BadStateError(f"IOEngine {self.key!r} is closed")
        return h

    def close(self) -> None:
        """Stop the engine: transfers in flight fail, connections close.
        Idempotent. Statuses already returned stay readable."""
        with self._lock:
            h, self._h = self._h, 0
        if h and not _lib.is_forked():
            _lib.raise_for(_lib.lib().mg_engine_destroy(h), f"IOEngine({self.key!r}).close")

    def __enter__(self) -> "IOEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            h = getattr(self, "_h", 0)
            if h:
                self._h = 0
                lib = _lib.loaded()
                if lib is not None:
                    lib.mg_engine_destroy(h)
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return not self._h

    @property
    def backend_type(self) -> Optional[BackendType]:
        """The data plane actually in use (None before create_backend)."""
        return self._backend

    def __repr__(self) -> str:
        state = "closed" if not self._h else (self._backend.name if self._backend else "no backend")
        return f"IOEngine({self.key!r}, {state})"

    # -- backends and descriptors ----------------------------------------------

    def create_backend(self, type: Union[BackendType, int], config: Optional[BackendConfig] = None) -> BackendType:
        """Start the data plane.

        ``BackendType.RDMA`` gives RDMA where a device is usable and TCP
        otherwise (MORI_GO_BACKEND=tcp forces TCP, =rdma requires RDMA);
        ``BackendType.TCP`` gives TCP. XGMI and FABRIC are not supported
        (InvalidArgsError). Creating a second backend changes nothing.
        Returns the backend type actually in use (MORI-IO returns None).
        """
        h = self._handle()
        t = int(type)
        cfg_json: Optional[bytes] = None
        if t == BackendType.RDMA:
            if config is None:
                config = RdmaBackendConfig()
            if not isinstance(config, RdmaBackendConfig):
                raise InvalidArgsError(
                    f"create_backend(RDMA): expected an RdmaBackendConfig, got {_type_name_of(config)}"
                )
            config.validate()
            cfg_json = json.dumps(_moriio_env.apply(config.to_json_dict())).encode()
        actual = c_uint32()
        _lib.raise_for(
            _lib.lib().mg_engine_create_backend(h, t, cfg_json, ctypes.byref(actual)),
            f"IOEngine({self.key!r}).create_backend({_type_name(t)})",
        )
        try:
            self._backend = BackendType(actual.value)
        except ValueError:
            self._backend = actual.value  # type: ignore[assignment]
        self._log_backend(t)
        return self._backend  # type: ignore[return-value]

    def _log_backend(self, requested: int) -> None:
        global _backend_logged
        chosen = _type_name(int(self._backend))  # type: ignore[arg-type]
        msg = "mori-go engine %r: data plane %s (requested %s, backend mode %s, library %s)"
        args = (self.key, chosen, _type_name(requested), self._backend_mode, _lib.library_path())
        with _backend_log_lock:
            first, _backend_logged = not _backend_logged, True
        if first:
            log.info(msg, *args)
        else:
            log.debug(msg, *args)
        reason = self.stats().get("rdma_fallback") if requested == BackendType.RDMA else ""
        if reason:
            log.warning("mori-go engine %r: RDMA requested, serving %s instead: %s", self.key, chosen, reason)

    def remove_backend(self, type: Union[BackendType, int]) -> None:
        """Stop the data plane of this type, as MORI-IO: its transfers fail,
        new ones fail until :meth:`create_backend` is called again, and peers
        are connected again over the new one at their next transfer (peers
        must register this engine's new descriptor to reach it). A type not
        running is no error."""
        h = self._handle()
        _lib.raise_for(
            _lib.lib().mg_engine_remove_backend(h, int(type)),
            f"IOEngine({self.key!r}).remove_backend({_type_name(int(type))})",
        )

    def get_engine_desc(self) -> EngineDesc:
        """This engine's descriptor, to send to peers (``.pack()``)."""
        h = self._handle()
        blob = _lib.call_sized(_lib.lib().mg_engine_desc, h, initial=1024, what="get_engine_desc")
        return EngineDesc(blob)

    def register_remote_engine(self, engine_desc: EngineDesc) -> None:
        """Make a peer known and return at once, as MORI-IO: the connection
        (control-plane handshake, then data-plane connections) is made in the
        background. Transfers to the peer wait for it; a peer that cannot be
        reached fails the transfers (tried again by the first transfer after
        a backoff), not this call. Needs a backend (BadStateError otherwise)."""
        h = self._handle()
        blob = _engine_blob(engine_desc, "register_remote_engine")
        _lib.raise_for(
            _lib.lib().mg_engine_register_remote(h, blob, len(blob)),
            f"IOEngine({self.key!r}).register_remote_engine",
        )
        self._remotes.add(engine_desc.key)

    def deregister_remote_engine(self, engine_desc: EngineDesc) -> None:
        """Forget a peer; its transfers in flight fail. An unknown peer is no
        error (as MORI-IO)."""
        h = self._handle()
        blob = _engine_blob(engine_desc, "deregister_remote_engine")
        _lib.raise_for(
            _lib.lib().mg_engine_deregister_remote(h, blob, len(blob)),
            f"IOEngine({self.key!r}).deregister_remote_engine",
        )
        self._remotes.discard(engine_desc.key)

    # -- memory --------------------------------------------------------------

    def register_memory(
        self, ptr: int, size: int, device_id: int, mem_loc: Union[MemoryLocationType, int],
        elem_size: Optional[int] = None,
    ) -> MemoryDesc:
        """Register ``size`` bytes at address ``ptr`` (an int) on GPU
        ``device_id`` (-1 for CPU memory). The memory must stay valid until
        :meth:`deregister_memory`. Returns its descriptor.

        ``elem_size`` (mori-go; MORI-IO has no such argument) is the size of
        the elements the memory holds, for compressed TCP writes from it: 2
        for bf16 or fp16 K/V shuffles their bytes into planes before
        compressing (docs/compression.md); ``None`` or 0 takes the engine's
        ``compress_elem_size``, 1 means no shuffle, at most 16."""
        h = self._handle()
        try:
            p, n, dev, loc = int(ptr), int(size), int(device_id), int(mem_loc)
        except (TypeError, ValueError) as e:
            raise InvalidArgsError(f"register_memory: {e}") from None
        if p <= 0 or p >= 1 << 64:
            raise InvalidArgsError(f"register_memory: bad address {ptr!r}")
        if n <= 0 or n >= 1 << 64:
            raise InvalidArgsError(f"register_memory: bad size {size!r}")
        what = f"IOEngine({self.key!r}).register_memory({p:#x}, {n}, {dev}, {_loc_name(loc)})"
        if elem_size is None:
            blob = _lib.call_sized(_lib.lib().mg_register_memory, h, p, n, dev, loc, initial=4096, what=what)
        else:
            opts = _elem_options(elem_size, "register_memory")
            blob = _lib.call_sized(_lib.lib().mg_register_memory_opts, h, p, n, dev, loc, opts, initial=4096, what=what)
        return MemoryDesc(blob)

    def register_torch_tensor(self, tensor: Any, elem_size: Optional[int] = None) -> MemoryDesc:
        """Register a contiguous torch tensor (CPU or CUDA/ROCm device);
        torch itself is not imported (any object with torch's tensor
        interface works). ``elem_size`` as in :meth:`register_memory`
        (``tensor.element_size()`` is the tensor's)."""
        if not tensor.is_contiguous():
            raise InvalidArgsError("register_torch_tensor: the tensor must be contiguous")
        nbytes = tensor.nelement() * tensor.element_size()
        dev = tensor.device
        if dev.type == "cpu":
            loc, index = MemoryLocationType.CPU, -1
        elif dev.type == "cuda":
            loc, index = MemoryLocationType.GPU, (dev.index if dev.index is not None else 0)
        else:
            raise InvalidArgsError(f"register_torch_tensor: unsupported device type {dev.type!r} (cpu or cuda)")
        return self.register_memory(tensor.data_ptr(), nbytes, index, loc, elem_size=elem_size)

    def deregister_memory(self, mem_desc: MemoryDesc) -> None:
        """Deregister local memory; transfers using it fail from now on.
        Memory not registered (any more) is no error (as MORI-IO)."""
        h = self._handle()
        blob = _mem(mem_desc, "deregister_memory")
        _lib.raise_for(_lib.lib().mg_deregister_memory(h, blob, len(blob)), f"IOEngine({self.key!r}).deregister_memory")

    # -- transfers -----------------------------------------------------------

    def allocate_transfer_uid(self) -> int:
        """A new transfer uid, unique in this engine.

        Uids are reserved from the library in blocks (one foreign call per
        _UID_BLOCK uids) and handed out here; ``next`` on the block is atomic
        under the GIL, and two threads refilling at once each get a block of
        their own."""
        h = self._handle()  # a closed engine or a forked child raises
        uid = next(self._uids, None)
        if uid is None:
            first = c_uint64()
            rc = _lib.lib().mg_allocate_uids(h, _UID_BLOCK, ctypes.byref(first))
            if rc:
                _lib.raise_for(rc, "allocate_transfer_uid")
            block = iter(range(first.value, first.value + _UID_BLOCK))
            uid = next(block)
            self._uids = block
        return uid

    def _submit(
        self,
        op: int,
        local_mems: Sequence[MemoryDesc],
        local_offsets: Sequence[Any],
        remote_mems: Sequence[MemoryDesc],
        remote_offsets: Sequence[Any],
        sizes: Sequence[Any],
        uids: Sequence[int],
        what: str,
        elem_size: Optional[int] = None,
    ) -> List[TransferStatus]:
        h = self._handle()
        opts = None if elem_size is None else _elem_options(elem_size, what)
        n = len(local_mems)
        if not (len(local_offsets) == len(remote_mems) == len(remote_offsets) == len(sizes) == len(uids) == n):
            raise InvalidArgsError(
                f"{what}: the six lists must have one element per transfer; got {n} local memories, "
                f"{len(local_offsets)} local offset lists, {len(remote_mems)} remote memories, "
                f"{len(remote_offsets)} remote offset lists, {len(sizes)} size lists, {len(uids)} uids"
            )
        if n == 0:
            return []
        xfers = (_lib.Transfer * n)()
        keep = []  # the offset and size buffers, alive until the call returns
        pack = _TRANSFER.pack_into
        for i in range(n):
            # (labels for error messages, formatted only if one is raised)
            la, ll = _mem_ref(local_mems[i], (what, "local memory", i))
            ra, rl = _mem_ref(remote_mems[i], (what, "remote memory", i))
            lo, lo_p, cnt = _u64_array(local_offsets[i], (what, "local offsets", i))
            ro, ro_p, rcnt = _u64_array(remote_offsets[i], (what, "remote offsets", i))
            sz, sz_p, scnt = _u64_array(sizes[i], (what, "sizes", i))
            if not cnt == rcnt == scnt:
                raise InvalidArgsError(
                    f"{what}: transfer {i} has {cnt} local offsets, {rcnt} remote offsets and {scnt} sizes; "
                    "they must be equal"
                )
            keep.append((lo, ro, sz))
            uid = uids[i]
            try:
                pack(xfers, i * _TRANSFER.size, la, ll, ra, rl, lo_p, ro_p, sz_p, cnt, uid)
            except struct.error:
                got = repr(uid) if isinstance(uid, int) else _type_name_of(uid)
                raise InvalidArgsError(f"{what}: uid {i} must be an int in [0, 2**64), got {got}") from None
        out = (c_uint64 * n)()
        if opts is None:
            rc = _lib.lib().mg_submit(h, op, xfers, n, out)
        else:
            rc = _lib.lib().mg_submit_opts(h, op, xfers, n, opts, out)
        if rc:
            _lib.raise_for(rc, f"IOEngine({self.key!r}).{what}")
        return [TransferStatus._from_handle(s) for s in out]

    def read(
        self, local_mem: MemoryDesc, local_offset: int, remote_mem: MemoryDesc, remote_offset: int, size: int,
        transfer_uid: int,
    ) -> TransferStatus:
        """Read ``size`` bytes of remote memory at ``remote_offset`` into
        local memory at ``local_offset``. Returns at once; the status tells
        the outcome (wrong ranges fail the status, not the call)."""
        return self._submit(
            _OP_READ, (local_mem,), ((local_offset,),), (remote_mem,), ((remote_offset,),), ((size,),),
            (transfer_uid,), "read",
        )[0]

    def write(
        self, local_mem: MemoryDesc, local_offset: int, remote_mem: MemoryDesc, remote_offset: int, size: int,
        transfer_uid: int, *, elem_size: Optional[int] = None,
    ) -> TransferStatus:
        """Write ``size`` bytes of local memory at ``local_offset`` to
        remote memory at ``remote_offset``. Returns at once. ``elem_size``
        (mori-go) overrides the local memory's element size for this write
        (see :meth:`register_memory`; 1: no shuffle)."""
        return self._submit(
            _OP_WRITE, (local_mem,), ((local_offset,),), (remote_mem,), ((remote_offset,),), ((size,),),
            (transfer_uid,), "write", elem_size,
        )[0]

    def batch_read(
        self, local_mems: Sequence[MemoryDesc], local_offsets: Sequence[Any], remote_mems: Sequence[MemoryDesc],
        remote_offsets: Sequence[Any], sizes: Sequence[Any], transfer_uids: Sequence[int],
    ) -> List[TransferStatus]:
        """Engine-level multi-pair read: element ``i`` of each list describes
        one transfer (a local and a remote memory, offset and size lists of
        equal length, one uid). One foreign call for the whole batch; offset
        and size lists may be lists, ``array.array('Q')`` or numpy integer
        arrays. Returns one status per transfer. Malformed arguments raise
        InvalidArgsError; a wrong range, an unknown remote engine or
        deregistered memory fail that transfer's status."""
        return self._submit(_OP_READ, local_mems, local_offsets, remote_mems, remote_offsets, sizes, transfer_uids,
                            "batch_read")

    def batch_write(
        self, local_mems: Sequence[MemoryDesc], local_offsets: Sequence[Any], remote_mems: Sequence[MemoryDesc],
        remote_offsets: Sequence[Any], sizes: Sequence[Any], transfer_uids: Sequence[int], *,
        elem_size: Optional[int] = None,
    ) -> List[TransferStatus]:
        """Engine-level multi-pair write; see :meth:`batch_read`.
        ``elem_size`` (mori-go) overrides the local memories' element size
        for the whole batch (see :meth:`register_memory`; 1: no shuffle)."""
        return self._submit(_OP_WRITE, local_mems, local_offsets, remote_mems, remote_offsets, sizes, transfer_uids,
                            "batch_write", elem_size)

    def wait_all(
        self, statuses: Sequence[Optional[TransferStatus]], timeout_ms: int = -1, fail_fast: bool = False,
    ) -> Union[StatusCode, int]:
        """Wait for every status, as MORI-IO (see
        :func:`sglang_mori_go.status.wait_all`): SUCCESS, the first failure in
        the order given, or IN_PROGRESS when the time ran out with no failure
        yet; ``None`` is skipped. ``fail_fast=True`` returns at the first
        failure without waiting for the others."""
        _lib.check_fork()
        return _wait_all(statuses, timeout_ms, fail_fast)

    def pop_inbound_transfer_status(
        self, remote_key: str, transfer_uid: int, status: Optional[TransferStatus] = None
    ) -> Union[Optional[TransferStatus], bool]:
        """What this engine knows of the transfer that engine ``remote_key``
        made into or out of its memory under ``transfer_uid``; a finished
        entry is removed by the call.

        Two call forms, for compatibility with both MORI-IO layers:

        * ``pop_inbound_transfer_status(key, uid)`` (MORI-IO's Python
          wrapper) returns a :class:`TransferStatus` or ``None`` if nothing
          is known;
        * ``pop_inbound_transfer_status(key, uid, status)`` (MORI-IO's C++
          and ``mori.cpp`` form) fills ``status`` and returns ``True`` if
          something is known, else ``False``.
        """
        h = self._handle()
        found = c_int32()
        code = c_uint32()
        msg = ctypes.create_string_buffer(1024)
        _lib.raise_for(
            _lib.lib().mg_pop_inbound(h, str(remote_key).encode(), int(transfer_uid), ctypes.byref(found),
                                      ctypes.byref(code), msg, len(msg)),
            "pop_inbound_transfer_status",
        )
        text = msg.value.decode("utf-8", "replace")
        if status is None:
            return TransferStatus._with(code.value, text) if found.value else None
        if found.value:
            status.SetCode(to_status_code(code.value))
            status.SetMessage(text)
        return bool(found.value)

    def create_session(self, local_mem: MemoryDesc, remote_mem: MemoryDesc) -> Optional["IOEngineSession"]:
        """A session bound to one (local, remote) memory pair, or None when
        no backend exists or the remote engine is not registered (as MORI-IO
        returns None when no backend can serve the pair)."""
        self._handle()
        _mem(local_mem, "create_session: local memory")
        _mem(remote_mem, "create_session: remote memory")
        if self._backend is None or remote_mem.engine_key not in self._remotes:
            return None
        return IOEngineSession(self, local_mem, remote_mem)

    # -- mori-go extras --------------------------------------------------------

    def notify(self, remote_key: str, message: bytes) -> None:
        """Send a small message to a registered remote engine (mori-go)."""
        h = self._handle()
        data = bytes(message)
        _lib.raise_for(_lib.lib().mg_notify(h, str(remote_key).encode(), data, len(data)), "notify")

    def pop_notifications(self) -> List[Tuple[str, bytes]]:
        """Return and forget the messages received so far, oldest first, as
        (sender key, data) pairs (mori-go)."""
        h = self._handle()
        raw = _lib.call_sized(_lib.lib().mg_pop_notifications, h, initial=4096, what="pop_notifications")
        out: List[Tuple[str, bytes]] = []
        i, n = 0, len(raw)
        while i < n:
            (klen,) = struct.unpack_from("<H", raw, i)
            i += 2
            key = raw[i: i + klen].decode("utf-8", "replace")
            i += klen
            (dlen,) = struct.unpack_from("<I", raw, i)
            i += 4
            out.append((key, raw[i: i + dlen]))
            i += dlen
        return out

    def stats(self) -> Dict[str, Any]:
        """Engine counters: backend, in-flight transfers, registered regions,
        inbound entries, live handles; what this engine's transfers moved:
        bytes_written, bytes_read (of transfers that succeeded),
        transfers_succeeded, transfers_failed, transfer_ns (submit-to-end time
        summed over the successful transfers); what it refused to peers:
        access_denied (accesses with a wrong memory token), streams_refused
        (data streams not admitted, over a limit, or failing TLS, and
        control-plane connections refused in the TLS handshake);
        rdma_fallback: why RDMA was asked for and TCP serves ("" if not);
        on TCP, responses_read_by_waiters (acknowledgements that a thread
        waiting for its transfers read from the socket itself) (mori-go)."""
        h = self._handle()
        return json.loads(_lib.call_sized(_lib.lib().mg_engine_stats, h, initial=512, what="stats"))


class IOEngineSession:
    """A (local memory, remote memory) pair of an engine, as MORI-IO's
    session: the same transfers without naming the descriptors each time."""

    def __init__(self, engine: IOEngine, local_mem: MemoryDesc, remote_mem: MemoryDesc) -> None:
        self._engine = engine
        self.local_mem = local_mem
        self.remote_mem = remote_mem
        self._local = (local_mem,)
        self._remote = (remote_mem,)

    def allocate_transfer_uid(self) -> int:
        """A new transfer uid of the engine."""
        return self._engine.allocate_transfer_uid()

    def read(self, local_offset: int, remote_offset: int, size: int, transfer_uid: int) -> TransferStatus:
        """Read one range of the remote memory into the local memory."""
        return self._engine._submit(_OP_READ, self._local, ((local_offset,),), self._remote, ((remote_offset,),),
                                    ((size,),), (transfer_uid,), "session.read")[0]

    def write(self, local_offset: int, remote_offset: int, size: int, transfer_uid: int, *,
              elem_size: Optional[int] = None) -> TransferStatus:
        """Write one range of the local memory to the remote memory
        (``elem_size`` as in :meth:`IOEngine.write`)."""
        return self._engine._submit(_OP_WRITE, self._local, ((local_offset,),), self._remote, ((remote_offset,),),
                                    ((size,),), (transfer_uid,), "session.write", elem_size)[0]

    def batch_read(self, local_offsets: Any, remote_offsets: Any, sizes: Any, transfer_uid: int) -> TransferStatus:
        """Read many ranges under one uid; one status for them all."""
        return self._engine._submit(_OP_READ, self._local, (local_offsets,), self._remote, (remote_offsets,),
                                    (sizes,), (transfer_uid,), "session.batch_read")[0]

    def batch_write(self, local_offsets: Any, remote_offsets: Any, sizes: Any, transfer_uid: int, *,
                    elem_size: Optional[int] = None) -> TransferStatus:
        """Write many ranges under one uid; one status for them all
        (``elem_size`` as in :meth:`IOEngine.write`)."""
        return self._engine._submit(_OP_WRITE, self._local, (local_offsets,), self._remote, (remote_offsets,),
                                    (sizes,), (transfer_uid,), "session.batch_write", elem_size)[0]

    def alive(self) -> bool:
        """True while the engine is open and the remote engine registered."""
        e = self._engine
        return not e.closed and not _lib.is_forked() and self.remote_mem.engine_key in e._remotes

    def __repr__(self) -> str:
        return f"IOEngineSession({self._engine.key!r} -> {self.remote_mem.engine_key!r})"


def _elem_options(elem_size: Any, what: str) -> bytes:
    """The options JSON of an element size (the library checks its bounds)."""
    try:
        if isinstance(elem_size, bool):
            raise TypeError
        n = operator.index(elem_size)
    except TypeError:
        raise InvalidArgsError(f"{what}: elem_size must be an int, got {_type_name_of(elem_size)}") from None
    return b'{"elem_size": %d}' % n


def _engine_blob(desc: Any, what: str) -> bytes:
    if not isinstance(desc, EngineDesc):
        raise InvalidArgsError(f"{what}: expected an EngineDesc, got {type(desc).__name__}")
    if not desc._blob:
        raise InvalidArgsError(f"{what}: empty EngineDesc")
    return desc._blob


def _type_name_of(x: Any) -> str:
    return type(x).__name__


def _type_name(t: int) -> str:
    try:
        return BackendType(t).name
    except ValueError:
        return f"BackendType({t})"


def _loc_name(loc: int) -> str:
    try:
        return MemoryLocationType(loc).name
    except ValueError:
        return f"MemoryLocationType({loc})"

