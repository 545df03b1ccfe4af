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
  ``sys.meta_path`` finds a regular ``mori`` module or package (a bare
  directory named ``mori``, which Python would import as a namespace
  package, does not count), or a distribution that provides ``mori``
  (``amd-mori``, ``amd_mori``, ``amd-mori-nightly``) is installed. A real
  AMD MORI install is thus never shadowed by default.

In every mode it answers ``mori`` only as the parent of a submodule being
imported (``import mori.io``, ``from mori.cpp import ...``): a bare
``import mori`` raises ImportError, so that code that takes a successful
``import mori`` to mean "MoRI (EP) is installed", as SGLang's MoRI-EP
dispatcher does, is not misled. (Once ``mori.io`` has been imported,
``mori`` is in ``sys.modules`` and a bare import finds it there.)

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
        if _flag("MORI_GO_DISABLE_SHIM") or not _importing_submodule():
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


def _importing_submodule() -> bool:
    """Whether ``mori`` is being imported as the parent of ``mori.<x>``: the
    import machinery's frames name the module it was asked for."""
    f = sys._getframe(1)
    while f is not None:
        code = f.f_code
        if code.co_name in ("_find_and_load", "_find_and_load_unlocked") and "importlib" in code.co_filename:
            name = f.f_locals.get("name")
            if isinstance(name, str) and name.startswith("mori."):
                return True
        f = f.f_back
    return False


def _regular(spec) -> bool:
    """Whether spec is a module or package with code, not a namespace
    package made of bare directories."""
    return spec is not None and spec.origin not in (None, "namespace") and spec.loader is not None


def real_mori_installed(skip=None) -> bool:
    """Whether something other than mori-go provides ``mori``."""
    for finder in list(sys.meta_path):
        if finder is skip or isinstance(finder, MoriShimFinder):
            continue
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        try:
            if _regular(find("mori", None)):
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
