"""The ``mori`` import shim, installed by ``sglang_mori_go.pth``.

The wheel puts ``sglang_mori_go.pth`` in site-packages; Python's ``site``
module runs its one line (``import sglang_mori_go._hook``) at the start of
every interpreter using that site-packages, spawned multiprocessing children
included. This module then puts a meta-path finder first in
``sys.meta_path``. The finder answers only for the top-level name ``mori``,
and only when the import actually happens (nothing is checked or loaded at
start-up):

* ``MORI_GO_DISABLE_SHIM=1``: it never answers; ``mori`` is whatever else is
  installed (or absent).
* ``MORI_GO_SHADOW_MORI=1``: it always answers with mori-go's ``mori``.
* otherwise it answers unless a real ``mori`` exists: another finder on
  ``sys.meta_path`` finds a ``mori`` module or package, or a distribution
  that provides ``mori`` (``amd-mori``, ``amd_mori``, ``amd-mori-nightly``)
  is installed. A real AMD MORI install is thus never shadowed by default.

mori-go's ``mori`` package lives in ``sglang_mori_go/_mori``: ``mori.io``
and ``mori.cpp`` re-export the binding (so ``mori.io.IOEngine is
sglang_mori_go.IOEngine``), and ``mori.__mori_go__`` is True. Nothing else
of MORI (``mori.ops``, ``mori.shmem``, ``mori.io.make_fabric_mem_pool``...)
exists, so code probing for those gets ImportError / AttributeError.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_MORI_DIR = os.path.join(_HERE, "_mori")
_REAL_MORI_DISTS = ("amd-mori", "amd_mori", "amd-mori-nightly", "amd_mori_nightly")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class MoriShimFinder:
    """Meta-path finder that provides mori-go's ``mori`` package."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D401 - importlib protocol
        if fullname != "mori":
            return None  # submodules are found through mori.__path__
        if _flag("MORI_GO_DISABLE_SHIM"):
            return None
        if not _flag("MORI_GO_SHADOW_MORI") and real_mori_installed(self):
            return None
        import importlib.util

        return importlib.util.spec_from_file_location(
            "mori", os.path.join(_MORI_DIR, "__init__.py"), submodule_search_locations=[_MORI_DIR]
        )

    def invalidate_caches(self) -> None:
        pass

    def __repr__(self) -> str:
        return "<sglang_mori_go MoriShimFinder>"


def real_mori_installed(skip=None) -> bool:
    """Whether something other than mori-go provides ``mori``."""
    for finder in list(sys.meta_path):
        if finder is skip or isinstance(finder, MoriShimFinder):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            if find("mori", None) is not None:
                return True
        except Exception:
            continue
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover
        return False
    for name in _REAL_MORI_DISTS:
        try:
            metadata.distribution(name)
            return True
        except Exception:
            continue
    return False


def install() -> None:
    """Put the finder first on sys.meta_path (idempotent)."""
    if _flag("MORI_GO_DISABLE_SHIM"):
        return
    if any(isinstance(f, MoriShimFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, MoriShimFinder())


try:
    install()
except Exception:  # never break interpreter start-up
    pass
