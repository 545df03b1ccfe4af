"""Loading of libmori_go.so and its ctypes prototypes; the fork guard.

The library is loaded lazily, on the first call that needs it (creating an
engine, decoding a descriptor). Importing the package, or ``mori.io``
through the shim, therefore starts no Go runtime: a process may import it and
still ``fork()`` safely as long as it created nothing before.

Fork safety: the Go runtime inside the library does not survive ``fork()``
(the child hangs on its first call into Go). When the library is loaded we
record the pid and register an ``os.register_at_fork`` hook that marks a
forked child; every engine call checks the mark first and raises
:class:`~sglang_mori_go.errors.ForkedProcessError` without touching the
library. The C side independently answers ``MG_ERR_FORKED`` (20) in a forked
child, for forks that bypass Python's hooks.

``ctypes.CDLL`` releases the GIL around every foreign call, so waits in the
engine do not block other Python threads.
"""

from __future__ import annotations

import ctypes
import os
import threading
from ctypes import POINTER, c_char_p, c_int, c_int32, c_int64, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Any, Callable, Optional

from .errors import ForkedProcessError, InvalidArgsError, LibraryLoadError, MoriGoError, error_for_code

__all__ = ["lib", "check_fork", "raise_for", "call_sized", "library_path", "Transfer", "ABI_VERSION"]

#: The ABI version this binding was written for (MG_ABI_VERSION).
ABI_VERSION = 1

MG_OK = 0
MG_ERR_INVALID_ARGS = 11
MG_ERR_FORKED = 20
MG_WAIT_FAIL_FAST = 1  # mg_wait_all_flags: return at the first failure


class Transfer(ctypes.Structure):
    """``mg_transfer_t``: one transfer of a batch. Pointer fields are
    declared ``c_void_p`` / ``c_char_p`` so that integer addresses and
    ``bytes`` can be stored without casts."""

    _fields_ = [
        ("local_desc", c_char_p),
        ("local_desc_len", c_size_t),
        ("remote_desc", c_char_p),
        ("remote_desc_len", c_size_t),
        ("local_offsets", c_void_p),
        ("remote_offsets", c_void_p),
        ("sizes", c_void_p),
        ("count", c_size_t),
        ("uid", c_uint64),
    ]


_u64p = POINTER(c_uint64)
_u32p = POINTER(c_uint32)
_szp = POINTER(c_size_t)

_PROTOTYPES = {
    "mg_abi_version": (c_uint32, []),
    "mg_version": (c_char_p, []),
    "mg_last_error": (c_char_p, []),
    "mg_engine_create": (c_int, [c_char_p, _u64p]),
    "mg_engine_destroy": (c_int, [c_uint64]),
    "mg_engine_create_backend": (c_int, [c_uint64, c_uint32, c_char_p, _u32p]),
    "mg_engine_remove_backend": (c_int, [c_uint64, c_uint32]),
    "mg_engine_desc": (c_int, [c_uint64, c_void_p, c_size_t, _szp]),
    "mg_engine_register_remote": (c_int, [c_uint64, c_char_p, c_size_t]),
    "mg_engine_deregister_remote": (c_int, [c_uint64, c_char_p, c_size_t]),
    "mg_register_memory": (c_int, [c_uint64, c_uint64, c_uint64, c_int32, c_uint32, c_void_p, c_size_t, _szp]),
    "mg_register_memory_opts": (
        c_int, [c_uint64, c_uint64, c_uint64, c_int32, c_uint32, c_char_p, c_void_p, c_size_t, _szp]
    ),
    "mg_deregister_memory": (c_int, [c_uint64, c_char_p, c_size_t]),
    "mg_allocate_uid": (c_int, [c_uint64, _u64p]),
    "mg_allocate_uids": (c_int, [c_uint64, c_uint64, _u64p]),
    "mg_submit": (c_int, [c_uint64, c_uint32, POINTER(Transfer), c_size_t, _u64p]),
    "mg_submit_opts": (c_int, [c_uint64, c_uint32, POINTER(Transfer), c_size_t, c_char_p, _u64p]),
    "mg_status_code": (c_int, [c_uint64, _u32p]),
    "mg_status_message": (c_int, [c_uint64, c_void_p, c_size_t, _szp]),
    "mg_status_wait": (c_int, [c_uint64, c_int64, _u32p]),
    "mg_status_release": (c_int, [c_uint64]),
    "mg_wait_all": (c_int, [_u64p, c_size_t, c_int64, _u32p]),
    "mg_wait_all_flags": (c_int, [_u64p, c_size_t, c_int64, c_uint32, _u32p]),
    "mg_pop_inbound": (c_int, [c_uint64, c_char_p, c_uint64, POINTER(c_int32), _u32p, c_void_p, c_size_t]),
    "mg_notify": (c_int, [c_uint64, c_char_p, c_char_p, c_size_t]),
    "mg_pop_notifications": (c_int, [c_uint64, c_void_p, c_size_t, _szp]),
    "mg_desc_to_json": (c_int, [c_char_p, c_size_t, c_void_p, c_size_t, _szp]),
    "mg_engine_stats": (c_int, [c_uint64, c_void_p, c_size_t, _szp]),
}

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None
_load_pid: Optional[int] = None
_forked = False


def _mark_forked() -> None:
    global _forked
    _forked = True


def _candidates() -> list:
    env = os.environ.get("MORI_GO_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        os.path.join(here, "lib", "libmori_go.so"),
        # Development: python/sglang_mori_go -> <repo>/build/lib.
        os.path.normpath(os.path.join(here, "..", "..", "build", "lib", "libmori_go.so")),
    ]


def library_path() -> str:
    """Path of the library that is (or would be) loaded."""
    if _lib_path is not None:
        return _lib_path
    for path in _candidates():
        if os.path.exists(path):
            return path
    return _candidates()[0]


def _load() -> ctypes.CDLL:
    global _lib, _lib_path, _load_pid
    with _lock:
        if _lib is not None:
            return _lib
        paths = _candidates()
        path = next((p for p in paths if os.path.exists(p)), None)
        if path is None:
            raise LibraryLoadError(
                "mori-go: libmori_go.so not found (looked in %s); reinstall the sglang-mori-go wheel "
                "or set MORI_GO_LIBRARY to the library's path" % ", ".join(paths)
            )
        try:
            handle = ctypes.CDLL(path)
        except OSError as e:
            hint = ""
            if "static TLS" in str(e):
                hint = (
                    " (the library's thread-local storage does not fit glibc's reserve for dlopen(); "
                    "this is a library bug; as a stop-gap start Python with "
                    "GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384)"
                )
            raise LibraryLoadError(f"mori-go: cannot load {path}: {e}{hint}") from e
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                fn = getattr(handle, name)
            except AttributeError:
                raise LibraryLoadError(f"mori-go: {path} lacks the symbol {name}; library and binding do not match")
            fn.restype = restype
            fn.argtypes = argtypes
        abi = handle.mg_abi_version()
        if abi != ABI_VERSION:
            raise LibraryLoadError(
                f"mori-go: {path} has ABI version {abi}, this binding needs {ABI_VERSION}; "
                "install matching versions"
            )
        _load_pid = os.getpid()
        os.register_at_fork(after_in_child=_mark_forked)
        _lib, _lib_path = handle, path
        return handle


def _forked_error() -> ForkedProcessError:
    return ForkedProcessError(
        f"mori-go: this process (pid {os.getpid()}) was forked from pid {_load_pid} after libmori_go.so "
        "was loaded there; the Go runtime inside the library does not survive fork(), so no mori-go object "
        "is usable in the child and no new one can be created. Start worker processes with "
        "multiprocessing's 'spawn' (or 'forkserver') start method, e.g. "
        "multiprocessing.set_start_method('spawn') or SGLANG_MP_START_METHOD=spawn"
    )


def check_fork() -> None:
    """Raise ForkedProcessError in a child forked after the library was loaded."""
    if _forked:
        raise _forked_error()


def is_forked() -> bool:
    """Whether this process is a child forked after the library was loaded."""
    return _forked


def lib() -> ctypes.CDLL:
    """The loaded library, after the fork check. Loads it on first use."""
    if _forked:
        raise _forked_error()
    if _lib is not None:
        return _lib
    return _load()


def loaded() -> Optional[ctypes.CDLL]:
    """The library if it is loaded and usable, else None (never loads it)."""
    if _forked:
        return None
    return _lib


def last_error() -> str:
    """The calling thread's last error message from the library."""
    assert _lib is not None
    msg = _lib.mg_last_error()
    return msg.decode("utf-8", "replace") if msg else ""


def raise_for(rc: int, what: str = "") -> None:
    """Raise the typed exception for a non-zero return code ``rc``; must be
    called on the thread that made the failing call."""
    if rc == MG_OK:
        return
    if rc == MG_ERR_FORKED:
        _mark_forked()
        raise _forked_error()
    msg = last_error()
    if what:
        msg = f"{what}: {msg}" if msg else what
    raise error_for_code(rc, msg)


def call_sized(fn: Callable[..., int], *args: Any, initial: int = 256, what: str = "") -> bytes:
    """Call a function that follows the header's size protocol (``buf``,
    ``cap``, ``*len`` as its last three arguments) and return the bytes,
    growing the buffer once if the first one was too small."""
    cap = initial
    n = c_size_t(0)
    for _ in range(4):
        buf = ctypes.create_string_buffer(cap)
        rc = fn(*args, buf, cap, ctypes.byref(n))
        if rc == MG_OK:
            return buf.raw[: n.value]
        if rc == MG_ERR_INVALID_ARGS and n.value > cap:
            cap = n.value
            continue
        raise_for(rc, what)
    raise MoriGoError(f"mori-go: {what or 'call'}: output kept growing past {cap} bytes")


def decode_json(blob: bytes, what: str) -> bytes:
    """mg_desc_to_json of a descriptor (raises InvalidArgsError if blob is
    not a descriptor)."""
    if not blob:
        raise InvalidArgsError(f"{what}: empty descriptor")
    return call_sized(lib().mg_desc_to_json, blob, len(blob), initial=512, what=what)
