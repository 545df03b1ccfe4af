#!/usr/bin/env bash
# Where the time of one small write goes: the steps of a 4 KiB write from
# an engine to an engine in another process, timed with the marks of
# internal/lattrace (a build with the tag latencytrace), median of each
# step over 3000 writes made one at a time.
#
#   scripts/latency-breakdown.sh [OUT.md]    prints the table (and writes it to OUT.md)
#
# MORI_BREAKDOWN_N and MORI_BREAKDOWN_SIZE change the count and the size.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/build-libzmq.sh)"
export MORI_BREAKDOWN_OUT=${1:+$(realpath -m "$1")}
go test -tags latencytrace -count=1 -run '^TestBreakdown$' -v ./stack | sed -n 's/^        //p' | grep '^|'
