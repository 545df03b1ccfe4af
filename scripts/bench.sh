#!/usr/bin/env bash
# The full benchmark: mori-go (Python API and C ABI) against raw TCP sockets,
# a memcpy bound, Mooncake Transfer Engine (tcp) and NIXL (UCX tcp), on the
# same machine in one interleaved run, over range sizes 1 KiB-64 MiB, batches
# of 1-10,000 ranges, DeepSeek-V3 and Llama-3-70B KV shapes (with TP
# mismatch), 1/2/4 connections and 4 target engines.
#
#   scripts/bench.sh                 about 15 minutes; rewrites docs/benchmarks.md and docs/img/*.png
#   scripts/bench.sh --only "KiB"    any bench/run.py option (see bench/run.py -h)
#
# Sets up build/bench-venv with pinned packages (bench/requirements*.txt),
# builds the library, the wheel and build/bench/cbench first.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/setup.sh
bench_setup full
exec build/bench-venv/bin/python bench/run.py "$@"
