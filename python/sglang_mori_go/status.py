"""TransferStatus: the state of one transfer, as MORI-IO's ``mori.cpp.TransferStatus``."""

from __future__ import annotations

import ctypes
from ctypes import c_uint32, c_uint64
from typing import Iterable, List, Optional, Union

from . import _lib
from .enums import StatusCode, to_status_code
from .errors import InvalidArgsError

__all__ = ["TransferStatus", "wait_all"]

_ERR_BEGIN = int(StatusCode.ERR_BEGIN)
_SUCCESS = StatusCode.SUCCESS
_IN_PROGRESS = StatusCode.IN_PROGRESS

Code = Union[StatusCode, int]


def _terminal(code: int) -> bool:
    return code == 0 or code > _ERR_BEGIN


class TransferStatus:
    """The state of one transfer.

    Statuses returned by the engine are backed by a handle in the library,
    released when the object is garbage-collected; keep the object while you
    need it. ``TransferStatus()`` makes a free-standing status (code INIT),
    which :meth:`IOEngine.pop_inbound_transfer_status` can fill, as in
    MORI-IO.

    Once a status is seen terminal its code is cached, so that later calls
    cost no foreign call. ``Wait`` and ``WaitFor`` release the GIL.
    """

    __slots__ = ("_h", "_code", "_msg", "_local", "__weakref__")

    def __init__(self) -> None:
        self._h = 0
        self._code: Optional[Code] = StatusCode.INIT
        self._msg: Optional[str] = ""
        self._local = True

    @classmethod
    def _from_handle(cls, handle: int) -> "TransferStatus":
        st = cls.__new__(cls)
        st._h = handle
        st._code = None
        st._msg = None
        st._local = False
        return st

    @classmethod
    def _with(cls, code: Code, message: str) -> "TransferStatus":
        st = cls()
        st._code = to_status_code(int(code))
        st._msg = message
        return st

    def __del__(self) -> None:
        h = self._h
        if h:
            self._h = 0
            try:
                lib = _lib.loaded()
                if lib is not None:
                    lib.mg_status_release(h)
            except Exception:  # interpreter shutdown
                pass

    # -- reading -----------------------------------------------------------

    def Code(self) -> Code:
        """The current status code (a :class:`StatusCode`)."""
        code = self._code
        if code is not None:
            return code
        c = c_uint32()
        _lib.raise_for(_lib.lib().mg_status_code(self._h, ctypes.byref(c)), "TransferStatus.Code")
        return self._seen(c.value)

    def _seen(self, value: int) -> Code:
        code = to_status_code(value)
        if _terminal(value):
            self._code = code
        return code

    def CodeUint32(self) -> int:
        """The current status code as an ``int``."""
        return int(self.Code())

    def Message(self) -> str:
        """The status message (why a transfer failed; "" on success)."""
        msg = self._msg
        if msg is not None:
            return msg
        code = self.Code()
        raw = _lib.call_sized(_lib.lib().mg_status_message, self._h, initial=256, what="TransferStatus.Message")
        msg = raw.decode("utf-8", "replace")
        if self._local or _terminal(int(code)):
            self._msg = msg
        return msg

    def Init(self) -> bool:
        """True while the transfer has not started."""
        return self.Code() == StatusCode.INIT

    def InProgress(self) -> bool:
        """True while the transfer runs."""
        return self.Code() == _IN_PROGRESS

    def Succeeded(self) -> bool:
        """True once the transfer has succeeded."""
        return self.Code() == _SUCCESS

    def Failed(self) -> bool:
        """True once the transfer has failed (code above ERR_BEGIN)."""
        return int(self.Code()) > _ERR_BEGIN

    # -- waiting -----------------------------------------------------------

    def WaitFor(self, timeout_ms: int = -1) -> Code:
        """Wait until the transfer ends or ``timeout_ms`` passes (<0: no
        limit; 0: poll) and return the code (IN_PROGRESS on timeout). The GIL
        is released while waiting."""
        code = self._code
        if code is not None and (self._local or _terminal(int(code))):
            return code
        c = c_uint32()
        _lib.raise_for(_lib.lib().mg_status_wait(self._h, int(timeout_ms), ctypes.byref(c)), "TransferStatus.WaitFor")
        return self._seen(c.value)

    def Wait(self) -> Code:
        """Wait until the transfer ends; returns its code (MORI-IO returns None)."""
        return self.WaitFor(-1)

    def WaitBusy(self, timeout_ms: int = -1) -> Code:
        """Same as :meth:`WaitFor` (MORI-IO spins; mori-go blocks)."""
        return self.WaitFor(timeout_ms)

    # -- writing (free-standing statuses, MORI compatibility) --------------

    def _detach(self) -> None:
        if not self._local:
            code = self.Code()
            msg = self.Message()
            self._code, self._msg, self._local = code, msg, True

    def SetCode(self, code: Code) -> None:
        """Set the code (makes the status free-standing)."""
        self._detach()
        self._code = to_status_code(int(code))

    def SetMessage(self, message: str) -> None:
        """Set the message (makes the status free-standing)."""
        self._detach()
        self._msg = str(message)

    def Update(self, code: Code, message: str) -> None:
        """Set code and message unless a failure is already recorded
        (failure wins, as in MORI-IO)."""
        if self.Failed():
            return
        self._detach()
        self._code = to_status_code(int(code))
        self._msg = str(message)

    def __repr__(self) -> str:
        try:
            code = self.Code()
            name = code.name if isinstance(code, StatusCode) else str(code)
            if int(code) > _ERR_BEGIN:
                return f"TransferStatus({name}: {self.Message()!r})"
            return f"TransferStatus({name})"
        except Exception as e:  # forked child, closed library...
            return f"TransferStatus(<{type(e).__name__}>)"


def wait_all(statuses: Iterable[Optional[TransferStatus]], timeout_ms: int = -1, fail_fast: bool = False) -> Code:
    """Wait for every status, as MORI-IO's ``wait_all``.

    Waits until every status is terminal or ``timeout_ms`` passes (<0: no
    limit; 0: poll), then returns the first failure in the order given,
    SUCCESS when all succeeded, or IN_PROGRESS when the time ran out with no
    failure yet. ``None`` entries are skipped. With ``fail_fast=True`` (an
    option of mori-go's own) it returns as soon as any status has failed,
    without waiting for the others. One foreign call; the GIL is released
    while waiting. A free-standing status that is not terminal counts as
    still running (IN_PROGRESS is returned, never an endless wait on it).
    """
    given: List[TransferStatus] = []
    handles: List[int] = []
    pending: List[TransferStatus] = []
    local_running = False
    failed = False
    for st in statuses:
        if st is None:
            continue
        if not isinstance(st, TransferStatus):
            raise InvalidArgsError(f"wait_all: expected TransferStatus objects or None, got {type(st).__name__}")
        given.append(st)
        code = st._code
        if code is None:
            handles.append(st._h)
            pending.append(st)
            continue
        if int(code) > _ERR_BEGIN:
            if fail_fast:
                return code
            failed = True
        elif code != 0:
            if st._local:
                local_running = True
            else:
                handles.append(st._h)
                pending.append(st)
    code: Code = _SUCCESS
    if handles:
        lib = _lib.lib()
        n = len(handles)
        arr = (c_uint64 * n)(*handles)
        c = c_uint32()
        flags = _lib.MG_WAIT_FAIL_FAST if fail_fast else 0
        rc = lib.mg_wait_all_flags(arr, n, int(timeout_ms), flags, ctypes.byref(c))
        if rc:
            _lib.raise_for(rc, "wait_all")
        code = to_status_code(c.value)
        if code == _SUCCESS:
            for st in pending:
                st._code = _SUCCESS
    if failed or int(code) > _ERR_BEGIN:
        for st in given:  # the first failure in the order given
            sc = st.Code()
            if int(sc) > _ERR_BEGIN:
                return sc
    if code == _SUCCESS and local_running:
        return _IN_PROGRESS
    return code
