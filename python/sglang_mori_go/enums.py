"""Enumerations of MORI-IO, with the values of ``include/mori/io/enum.hpp``.

They are :class:`enum.IntEnum` so that they compare equal to the plain
integers that cross the C ABI, as pybind11's enums do.
"""

from __future__ import annotations

import enum
from typing import Union

__all__ = ["BackendType", "MemoryLocationType", "StatusCode", "PollCqMode", "to_status_code"]


class BackendType(enum.IntEnum):
    """Data-plane backend kinds. mori-go serves RDMA (falling back to TCP
    where no RDMA device is usable) and TCP; XGMI and FABRIC are refused."""

    Unknown = 0
    XGMI = 1
    RDMA = 2
    TCP = 3
    FABRIC = 4


class MemoryLocationType(enum.IntEnum):
    """Where registered memory lives."""

    Unknown = 0
    CPU = 1
    GPU = 2


class StatusCode(enum.IntEnum):
    """State of a transfer. Values up to ERR_GPU_OP are MORI-IO's; 16..20 are
    mori-go's own failure codes. Every code above ERR_BEGIN is a failure."""

    SUCCESS = 0
    INIT = 1
    IN_PROGRESS = 2
    ERR_BEGIN = 10
    ERR_INVALID_ARGS = 11
    ERR_NOT_FOUND = 12
    ERR_RDMA_OP = 13
    ERR_BAD_STATE = 14
    ERR_GPU_OP = 15
    ERR_TIMEOUT = 16
    ERR_CONNECTION = 17
    ERR_REMOTE = 18
    ERR_INTERNAL = 19
    ERR_FORKED = 20


class PollCqMode(enum.IntEnum):
    """RDMA completion-queue polling mode (accepted, passed to the engine)."""

    POLLING = 0
    EVENT = 1


_CODES = {int(c): c for c in StatusCode}


def to_status_code(value: int) -> Union[StatusCode, int]:
    """Map an integer from the library to a :class:`StatusCode` (an unknown
    value, from a newer library, stays a plain ``int``)."""
    return _CODES.get(value, value)
