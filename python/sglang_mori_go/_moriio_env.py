"""MORI-IO's ``MORI_IO_*`` environment variables, as mori-go treats them.

MORI-IO lets these override the RDMA backend configuration inside
``create_backend``. mori-go honours the ones that mean something here, read
in Python when the backend is created (the library never reads a variable
Python may have changed after start), and warns once per process about the
others, naming them, instead of ignoring them silently.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional

from .errors import InvalidArgsError

log = logging.getLogger("sglang_mori_go")


def _int(name: str, v: str) -> int:
    try:
        return int(v.strip(), 0)
    except ValueError:
        raise InvalidArgsError(f"{name}={v!r}: not an integer") from None


def _bool(name: str, v: str) -> bool:
    s = v.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise InvalidArgsError(f"{name}={v!r}: want 0/1 (or true/false)")


def _poll_mode(name: str, v: str) -> int:
    s = v.strip().lower()
    if s in ("0", "polling"):
        return 0
    if s in ("1", "event"):
        return 1
    raise InvalidArgsError(f"{name}={v!r}: want 0/polling or 1/event")


# Variable -> (field of the RDMA backend configuration, parser).
OVERRIDES: Dict[str, tuple] = {
    "MORI_IO_QP_PER_TRANSFER": ("qp_per_transfer", _int),
    "MORI_IO_POST_BATCH_SIZE": ("post_batch_size", _int),
    "MORI_IO_NUM_WORKER_THREADS": ("num_worker_threads", _int),
    "MORI_IO_POLL_CQ_MODE": ("poll_cq_mode", _poll_mode),
    "MORI_IO_ENABLE_NOTIFICATION": ("enable_notification", _bool),
}

# Read by the library's RDMA backend itself when it starts (docs/rdma.md).
READ_BY_BACKEND = frozenset({"MORI_IO_TC", "MORI_IO_SL"})

_warned = False
_warn_lock = threading.Lock()


def apply(cfg: Dict[str, Any], environ: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Return the RDMA backend configuration ``cfg`` with the honoured
    ``MORI_IO_*`` variables applied over it (they win, as in MORI-IO), and
    warn once about the ones mori-go does not use."""
    env = os.environ if environ is None else environ
    out = dict(cfg)
    for name, (field, parse) in OVERRIDES.items():
        v = env.get(name)
        if v is not None and v.strip() != "":
            out[field] = parse(name, v)
    warn_unused(env)
    return out


def unused(env: Mapping[str, str]) -> List[str]:
    """The ``MORI_IO_*`` variables set in env that mori-go does not use."""
    return sorted(k for k in env if k.startswith("MORI_IO_") and k not in OVERRIDES and k not in READ_BY_BACKEND)


def warn_unused(env: Mapping[str, str], _log: Callable[..., None] = None) -> bool:  # type: ignore[assignment]
    """Warn, once per process, about the MORI_IO_* variables that have no
    meaning in mori-go. Returns whether this call warned."""
    global _warned
    names = unused(env)
    if not names:
        return False
    with _warn_lock:
        if _warned:
            return False
        _warned = True
    (_log or log.warning)(
        "mori-go: ignoring MORI-IO tuning variables that have no meaning here: %s "
        "(honoured: %s; read by the RDMA backend: %s)",
        ", ".join(names), ", ".join(sorted(OVERRIDES)), ", ".join(sorted(READ_BY_BACKEND)),
    )
    return True
