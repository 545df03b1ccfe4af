#!/usr/bin/env python3
"""Python's own work per small transfer through the MORI-IO API.

    build/bench-venv/bin/python bench/py_overhead.py [RANGES]

Times ``allocate_transfer_uid`` + ``batch_write`` + ``wait_all`` + the
status's release, one transfer of RANGES 4 KiB ranges (default 1) per
iteration, with the library's foreign calls (mg_submit, mg_wait_all_flags,
mg_status_release) replaced by ``sched_yield`` (returns 0 at once): what
is left is the wrapper's Python and ctypes work, the part of the Python
API's latency that the C ABI does not have. Prints the median over 20000
iterations and, for scale, three bare foreign calls.
"""

import ctypes
import sys
import time
import types

import numpy as np

import sglang_mori_go._lib as L
from sglang_mori_go import BackendType, IOEngine, IOEngineConfig, MemoryLocationType


def main() -> int:
    ranges = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    eng = IOEngine("py-overhead", IOEngineConfig("127.0.0.1", 0))
    eng.create_backend(BackendType.TCP)
    buf = np.ones(4096 * ranges, np.uint8)
    md = eng.register_memory(buf.ctypes.data, buf.nbytes, -1, MemoryLocationType.CPU)
    noop = ctypes.CDLL(None).sched_yield
    real = L.lib()
    stub = types.SimpleNamespace(mg_submit=noop, mg_wait_all_flags=noop, mg_status_release=noop,
                                 mg_allocate_uids=real.mg_allocate_uids)
    L.lib = lambda: stub
    L.loaded = lambda: stub
    offs = [np.arange(0, 4096 * ranges, 4096, dtype=np.uint64)]
    sizes = [np.full(ranges, 4096, np.uint64)]
    pc, n = time.perf_counter, 20000
    lat = np.zeros(n)
    for i in range(n):
        t0 = pc()
        sts = eng.batch_write([md], offs, [md], offs, sizes, [eng.allocate_transfer_uid()])
        eng.wait_all(sts)
        del sts
        lat[i] = pc() - t0
    bare = np.zeros(n)
    for i in range(n):
        t0 = pc()
        noop(), noop(), noop()
        bare[i] = pc() - t0
    print(f"{ranges} range(s): Python's own work per transfer, median {np.median(lat) * 1e6:.2f} µs "
          f"(three bare foreign calls: {np.median(bare) * 1e6:.2f} µs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
