#!/usr/bin/env python3
"""Microbenchmark: the cost of submitting one batch_write of many ranges
through the Python binding.

Two engines in this process (TCP on loopback here). For each way of passing
offsets and sizes (Python lists, array.array('Q'), numpy arrays when numpy
is installed) it times:

* convert: the Python-side conversion of the three offset/size sequences to
  uint64 buffers (what batch_write does before the foreign call);
* submit:  the whole ``engine.batch_write(...)`` call: conversion, building
  the mg_transfer_t, the one foreign call (the library copies the ranges and
  starts the transfer) and wrapping the status. Waiting for completion is
  not timed.

It prints medians as ns per range and ranges per second; no thresholds.

    python3 python/bench/abi_overhead.py [--ranges 10000] [--iters 30] [--size 64]

Run from the repository with the wheel installed, or with
PYTHONPATH=python (the library is then build/lib/libmori_go.so or
$MORI_GO_LIBRARY).
"""

from __future__ import annotations

import argparse
import array
import ctypes
import os
import statistics
import sys
import time

try:
    import sglang_mori_go  # noqa: F401  (installed?)
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sglang_mori_go import BackendType, IOEngine, IOEngineConfig, MemoryLocationType, StatusCode  # noqa: E402
from sglang_mori_go.engine import _u64_array  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="batch_write submission cost through Python")
    ap.add_argument("--ranges", type=int, default=10000, help="ranges per batch_write (default 10000)")
    ap.add_argument("--iters", type=int, default=30, help="timed iterations per input kind (default 30)")
    ap.add_argument("--size", type=int, default=64, help="bytes per range (default 64)")
    args = ap.parse_args(argv)
    n, size = args.ranges, args.size

    a = IOEngine(f"bench-a-{os.getpid()}", IOEngineConfig("127.0.0.1", 0))
    b = IOEngine(f"bench-b-{os.getpid()}", IOEngineConfig("127.0.0.1", 0))
    backend = a.create_backend(BackendType.RDMA)
    b.create_backend(BackendType.RDMA)
    a.register_remote_engine(b.get_engine_desc())
    # Ranges two sizes apart, so that the engine cannot merge them.
    total = 2 * n * size
    src, dst = ctypes.create_string_buffer(total), ctypes.create_string_buffer(total)
    ms = a.register_memory(ctypes.addressof(src), total, -1, MemoryLocationType.CPU)
    md = b.register_memory(ctypes.addressof(dst), total, -1, MemoryLocationType.CPU)

    lo = list(range(0, total, 2 * size))
    ro = lo[::-1]
    sz = [size] * n
    kinds = {"list": (lo, ro, sz), "array.array('Q')": tuple(array.array("Q", x) for x in (lo, ro, sz))}
    try:
        import numpy as np

        kinds["numpy uint64"] = tuple(np.array(x, dtype=np.uint64) for x in (lo, ro, sz))
        kinds["numpy int64"] = tuple(np.array(x, dtype=np.int64) for x in (lo, ro, sz))
    except ImportError:
        pass

    print(f"mori-go batch_write submission: {n} ranges of {size} B per call, {args.iters} iterations, "
          f"backend {backend.name}, Python {sys.version.split()[0]}")
    print(f"{'input':<18} {'convert ns/range':>17} {'submit ns/range':>16} {'submit ranges/s':>16} "
          f"{'submit ms/call':>15}")
    for name, (l, r, s) in kinds.items():
        conv, sub = [], []
        for i in range(args.iters + 2):  # two warm-up rounds
            t0 = time.perf_counter_ns()
            _u64_array(l, "lo")
            _u64_array(r, "ro")
            _u64_array(s, "sz")
            t1 = time.perf_counter_ns()
            sts = a.batch_write([ms], [l], [md], [r], [s], [a.allocate_transfer_uid()])
            t2 = time.perf_counter_ns()
            code = a.wait_all(sts, 60000)
            if code != StatusCode.SUCCESS:
                print(f"transfer failed: {code} {sts[0].Message()}", file=sys.stderr)
                return 1
            if i >= 2:
                conv.append(t1 - t0)
                sub.append(t2 - t1)
        c, s_ = statistics.median(conv), statistics.median(sub)
        print(f"{name:<18} {c / n:>17.1f} {s_ / n:>16.1f} {n / (s_ / 1e9):>16,.0f} {s_ / 1e6:>15.3f}")
    a.deregister_memory(ms)
    b.deregister_memory(md)
    a.close()
    b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
