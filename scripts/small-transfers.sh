#!/usr/bin/env bash
# Small transfers (issue 16): one interleaved benchmark run of the
# small-transfer workloads (bench/run.py: mori-go C and Python, raw sockets,
# Mooncake, NIXL), the latency breakdown of one 4 KiB write at the commit
# before the latency work and at the current tree (in alternation), and the
# section "Small transfers" of docs/benchmarks.md rewritten from them
# (bench/small.py). About 15 minutes on a quiet 2-core machine.
#
#   scripts/small-transfers.sh              all of it
#   SKIP_BENCH=1 scripts/small-transfers.sh breakdowns and page only
#   BEFORE=<commit>                         the "before" of the breakdown (default 9d80a35)
set -euo pipefail
cd "$(dirname "$0")/.."
before=${BEFORE:-9d80a35}
results=bench/results
mkdir -p "$results"
source bench/setup.sh
bench_setup full
if [[ -z ${SKIP_BENCH:-} ]]; then
  if [[ -f $results/small.json ]]; then
    mv "$results/small.json" "$results/small-previous.json"
  fi
  build/bench-venv/bin/python bench/run.py --only "4 KiB x|1 KiB x 8192|MiB x" --no-conns --no-progress \
    --cell-time "${CELL_TIME:-2}" --rounds "${ROUNDS:-4}" --json "$results/small.json"
fi

# Breakdown test binaries of both trees, run in alternation.
eval "$(scripts/build-libzmq.sh 2>/dev/null)"
tmp=$(mktemp -d)
trap 'git worktree remove --force "$tmp/before" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
git worktree add --detach "$tmp/before" "$before" >/dev/null
# The before tree runs today's breakdown test, waiting as its C ABI did
# (core.WaitAll: a goroutine parked on a channel).
sed 's/core\.WaitAllThread(/core.WaitAll(/' stack/breakdown_test.go >"$tmp/before/stack/breakdown_test.go"
(cd "$tmp/before" && go test -c -tags latencytrace -o "$tmp/before.test" ./stack)
go test -c -tags latencytrace -o "$tmp/after.test" ./stack
for i in 1 2 3; do
  for v in before after; do
    MORI_BREAKDOWN_OUT="$tmp/$v-$i.md" "$tmp/$v.test" -test.run '^TestBreakdown$' >/dev/null
  done
done
build/bench-venv/bin/python bench/small.py --pick "$tmp"
build/bench-venv/bin/python bench/small.py
