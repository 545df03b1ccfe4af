#!/usr/bin/env bash
# Small transfers (issue 16): one interleaved benchmark run of the
# small-transfer workloads (bench/run.py: mori-go C and Python, raw sockets,
# Mooncake, NIXL), the latency breakdown of one 4 KiB write at the commit
# before the latency work and at the current tree (in alternation), and the
# section "Small transfers" of docs/benchmarks.md rewritten from them
# (bench/small.py). Also: one write with 20 µs of caller work between writes
# (bench/run.py --gap-us), and, as a diagnostic, with the guest kernel's idle
# polling on for the run, and with every system on cubic congestion control
# instead of the system's (root; each put back at once; HALTPOLL=0, CUBIC=0
# skip them).
# About 15 minutes on a quiet 2-core machine.
#
#   scripts/small-transfers.sh              all of it
#   SKIP_BENCH=1 scripts/small-transfers.sh breakdowns and page only
#   BEFORE=<commit>                         the "before" of the breakdown (default 9d80a35)
set -euo pipefail
cd "$(dirname "$0")/.."
before=${BEFORE:-9d80a35}
CUBIC_WORKLOADS="=4 KiB x 1|=4 KiB x 10|=4 KiB x 1000|=4 KiB x 10000|=1 KiB x 8192|=4 KiB x 4096 over 4 targets|=1 MiB x 32|=1 MiB x 32 over 4 targets|=64 MiB x 1"
results=bench/results
mkdir -p "$results"
source bench/setup.sh
bench_setup full
# run_bench OUT ARGS...: one interleaved run of bench/run.py into
# $results/OUT.
run_bench() {
  local out=$1
  shift
  build/bench-venv/bin/python bench/run.py --no-conns --no-progress --cell-time "${CELL_TIME:-2}" \
    --rounds "${ROUNDS:-4}" --json "$results/$out" "$@"
}
# with_setting FILE VALUE OUT ONLY: run_bench of the workloads ONLY with the
# kernel setting FILE at VALUE, put back at once (also if interrupted).
with_setting() {
  local file=$1 value=$2 out=$3 only=$4 was
  was=$(cat "$file")
  trap 'echo "$was" >"$file"' EXIT
  echo "$value" >"$file"
  run_bench "$out" --only "$only" --no-doc || true
  echo "$was" >"$file"
  trap - EXIT
}
if [[ -z ${SKIP_BENCH:-} ]]; then
  if [[ -f $results/small.json ]]; then
    mv "$results/small.json" "$results/small-previous.json"
  fi
  run_bench small.json --only "4 KiB x|1 KiB x 8192|MiB x"
  # One write with the caller's own work between writes: every initiator
  # spins 20 µs before each batch (outside its time), as a caller does
  # between requests; the back-to-back loop above gives the other side no
  # time to fall asleep.
  run_bench small-gap.json --only "=4 KiB x 1|=4 KiB x 10" --gap-us 20 --no-doc
  # Diagnostic: the same with the guest kernel's idle polling on
  # (cpuidle-haltpoll's guest_halt_poll_ns, 0 on these VMs, 200000 the
  # kernel's default), which keeps an idle vCPU from halting for 200 µs, so
  # that waking a thread on it does not go through the hypervisor. Put back
  # at once. HALTPOLL=0 skips it; skipped where the knob is absent or set.
  knob=/sys/module/haltpoll/parameters/guest_halt_poll_ns
  if [[ ${HALTPOLL:-1} != 0 && -w $knob && $(cat "$knob") == 0 ]]; then
    with_setting "$knob" 200000 small-haltpoll.json "=4 KiB x 1|=4 KiB x 10"
  else
    rm -f "$results/small-haltpoll.json"
  fi
  # Diagnostic: every system with cubic congestion control (the system's
  # default, bbr on these VMs, switched for the run and put back). bbr paces
  # each stream with a kernel timer per burst at the bandwidth it estimates,
  # far below loopback's. CUBIC=0 skips it; skipped where it cannot be set.
  cc=/proc/sys/net/ipv4/tcp_congestion_control
  if [[ ${CUBIC:-1} != 0 && -w $cc && $(cat "$cc") != cubic ]] && grep -qw cubic /proc/sys/net/ipv4/tcp_available_congestion_control; then
    with_setting "$cc" cubic small-cubic.json "$CUBIC_WORKLOADS"
  else
    rm -f "$results/small-cubic.json"
  fi
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
