"""Exceptions raised by the mori-go binding.

Every error the engine reports carries a status code (the values of
:class:`~sglang_mori_go.enums.StatusCode`) and the engine's message. Each code
has its own exception class, all derived from :class:`MoriGoError`, which is a
:class:`RuntimeError` like the exceptions MORI-IO's pybind layer raises. Where
a Python built-in exception fits, the class derives from it too, so that
``except ValueError`` or ``except TimeoutError`` work as one would expect.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "MoriGoError",
    "LibraryLoadError",
    "InvalidArgsError",
    "NotFoundError",
    "RdmaOpError",
    "BadStateError",
    "GpuOpError",
    "TransferTimeoutError",
    "TimeoutError_",
    "MoriConnectionError",
    "ConnectionError_",
    "RemoteError",
    "InternalError",
    "ForkedProcessError",
    "UnsupportedError",
    "error_for_code",
]


class MoriGoError(RuntimeError):
    """Base class of every mori-go error.

    Attributes:
        code: the engine's status code (an ``int``; compare with
            :class:`~sglang_mori_go.enums.StatusCode`), or ``None`` when the
            error did not come from the engine.
        message: the engine's message.
    """

    default_code: Optional[int] = None

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code

    def __str__(self) -> str:
        return self.message


class LibraryLoadError(MoriGoError, ImportError):
    """libmori_go.so could not be found or loaded, or has the wrong ABI."""

    def __init__(self, message: str) -> None:
        MoriGoError.__init__(self, message)


class InvalidArgsError(MoriGoError, ValueError):
    """ERR_INVALID_ARGS (11): an argument is wrong (bad range, bad descriptor...)."""

    default_code = 11


class NotFoundError(MoriGoError, LookupError):
    """ERR_NOT_FOUND (12): unknown memory, remote engine or uid."""

    default_code = 12


class RdmaOpError(MoriGoError):
    """ERR_RDMA_OP (13): an RDMA operation failed."""

    default_code = 13


class BadStateError(MoriGoError):
    """ERR_BAD_STATE (14): the engine is not in a state that allows the call
    (no backend yet, engine closed...)."""

    default_code = 14


class GpuOpError(MoriGoError):
    """ERR_GPU_OP (15): a GPU driver call failed."""

    default_code = 15


class TransferTimeoutError(MoriGoError, TimeoutError):
    """ERR_TIMEOUT (16, mori-go): an operation did not finish in time."""

    default_code = 16


class MoriConnectionError(MoriGoError, ConnectionError):
    """ERR_CONNECTION (17, mori-go): the connection to a peer failed or was refused."""

    default_code = 17


class RemoteError(MoriGoError):
    """ERR_REMOTE (18, mori-go): the remote engine refused the request."""

    default_code = 18


class InternalError(MoriGoError):
    """ERR_INTERNAL (19, mori-go): a bug in the engine; please report it."""

    default_code = 19


class ForkedProcessError(MoriGoError):
    """ERR_FORKED (20, mori-go): the process was forked after the library
    was loaded. The Go runtime inside libmori_go.so does not survive
    ``fork()``; start workers with the ``spawn`` (or ``forkserver``) method."""

    default_code = 20


class UnsupportedError(MoriGoError, NotImplementedError):
    """A MORI-IO call that mori-go does not implement."""


# Short aliases named after the built-ins they extend.
TimeoutError_ = TransferTimeoutError
ConnectionError_ = MoriConnectionError

_BY_CODE: Dict[int, Type[MoriGoError]] = {
    11: InvalidArgsError,
    12: NotFoundError,
    13: RdmaOpError,
    14: BadStateError,
    15: GpuOpError,
    16: TransferTimeoutError,
    17: MoriConnectionError,
    18: RemoteError,
    19: InternalError,
    20: ForkedProcessError,
}


def error_for_code(code: int, message: str) -> MoriGoError:
    """Return the exception instance for an engine status code."""
    cls = _BY_CODE.get(int(code), MoriGoError)
    if not message:
        message = f"mori-go call failed with status code {int(code)}"
    return cls(message, int(code))
