"""Benchmark only: makes SGLang's Mooncake backend run on a machine
without CUDA, for bench/ttft.py. Python imports this module at start-up
because bench/ttft.py puts this folder on the PYTHONPATH of its Mooncake
(and NIXL) servers, and of nothing else.

The one change: ``MooncakeKVSender.supports_host_tensor_indices`` is set to
False once SGLang's ``sglang.srt.disaggregation.mooncake.conn`` is imported.
With it True (SGLang 0.5.23's value), ``prefill.py``'s ``_send_kv_chunk``
copies the page indices into pinned memory and records a
``torch.cuda.Event``: the first transfer crashes the prefill server where
there is no CUDA driver. With it False, prefill computes the same page
indices on the host (the path every other backend, mori included, takes);
greedy outputs stay identical to the plain server's. SGLang's files are not
modified. This is Mooncake's (SGLang's Mooncake backend's) limitation on
CPU-only machines, not something a user of mori-go needs.
"""

import importlib.abc
import sys

_TARGET = "sglang.srt.disaggregation.mooncake.conn"


class _MooncakeOnCPU(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            module.MooncakeKVSender.supports_host_tensor_indices = False

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _MooncakeOnCPU())
