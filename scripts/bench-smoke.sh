#!/usr/bin/env bash
# Short benchmark smoke run for CI (< 60 s): mori-go through the Python API
# and the C ABI, raw TCP sockets and memcpy, on three small workloads, data
# checked at the targets. Fails if mori-go fails or delivers wrong bytes;
# never on speed (the machine is shared). Prints the table; writes no page.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/setup.sh
bench_setup smoke
exec build/bench-venv/bin/python bench/run.py --smoke --no-progress "$@"
