"""A pure-torch stand-in for ``sgl_kernel``, for SGLang's CPU path in tests.

Test environment only: python/tests/sglang/server_deploy.py puts the folder
above this one on the servers' PYTHONPATH; nothing installs it.

Why: SGLang 0.5.23 imports ``sgl_kernel`` at import time of its memory-pool
code (``sglang/srt/mem_cache/allocation.py`` when ``SGLANG_USE_CPU_ENGINE=1``).
PyPI's ``sgl-kernel`` / ``sglang-kernel`` wheels are CUDA builds that fail to
load without a driver, and SGLang's CPU build of the kernels is not on PyPI.
On a CPU without AMX the scheduler calls exactly one op,
:func:`assign_req_to_token_pool_cpu`. Every other name SGLang imports from
``sgl_kernel`` (or its submodules) belongs to paths a tiny Llama on CPU does
not take; those names resolve to placeholders that raise if ever called, so
a path that does need a real kernel fails loudly instead of computing
something wrong.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

import torch

__all__ = ["assign_req_to_token_pool_cpu"]

STANDIN = True  # lets a test tell this module from a real sgl_kernel


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """For each request r with token range [start, end): write the next
    end-start entries of ``out_cache_loc`` into ``req_to_token[r, start:end]``
    (the entries of consecutive requests follow each other)."""
    del pool_len  # the row length; torch checks the bounds itself
    starts = start_offset.tolist()
    ends = end_offset.tolist()
    rows = req_pool_indices.tolist()
    pos = 0
    for row, s, e in zip(rows, starts, ends):
        n = e - s
        if n <= 0:
            continue
        req_to_token[row, s:e] = out_cache_loc[pos:pos + n].to(req_to_token.dtype)
        pos += n


class _Missing:
    """A kernel the stand-in does not provide: importable, fails if used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{self._name}: not provided by the test stand-in for sgl_kernel "
            "(python/tests/sglang/standin); this SGLang path needs the real kernels"
        )

    def __getattr__(self, attr: str) -> "_Missing":
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{self._name}.{attr}")

    def __repr__(self) -> str:
        return f"<sgl_kernel stand-in placeholder {self._name}>"


def _placeholder_module(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = []  # a package, so that deeper submodules import too

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Missing(f"{name}.{attr}")

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return mod


def __getattr__(attr: str) -> Any:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return _Missing(f"sgl_kernel.{attr}")


class _SubmoduleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves every ``sgl_kernel.<sub>`` import with a placeholder module."""

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[override]
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):  # type: ignore[override]
        return _placeholder_module(spec.name)

    def exec_module(self, module):  # type: ignore[override]
        pass


sys.meta_path.append(_SubmoduleFinder())
