#!/usr/bin/env bash
# run-on-gpu.sh: the real-GPU tests and benchmarks of mori-go, for a GPU
# machine without a Go toolchain. It runs test binaries built elsewhere and
# prints the figures the GPU targets are stated in.
#
# Build the binaries on a machine with Go and gcc (no GPU needed), from the
# repository root:
#
#   eval "$(scripts/build-libzmq.sh)"   # static libzmq: the binaries need only libc
#   mkdir -p build/gpu-tests
#   CGO_ENABLED=1 go test -c -o build/gpu-tests/gpu.test ./gpu
#   CGO_ENABLED=1 go test -c -o build/gpu-tests/engine.test ./core/engine
#   cp gpu/testdata/run-on-gpu.sh build/gpu-tests/
#
# (`ldd build/gpu-tests/engine.test` should list only libc, libgcc_s and the
# loader; the GPU machine's glibc must be at least the build machine's.)
# Copy build/gpu-tests to the GPU machine and run there:
#
#   ./run-on-gpu.sh [directory of the binaries, default: this script's]
#
# The binaries load libcuda.so.1 or libamdhip64.so with dlopen (no CUDA or
# ROCm headers at build time); CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES
# apply. Everything uses device 0 (the TCP test also the last device).
#
# What it runs:
#   1. gpu.test     -test.run Real   pointer queries, range checks, copies,
#                                    staging, IPC across processes, dma-buf
#   2. engine.test  -test.run RealGPU
#                                    GPU memory between two engines over TCP
#                                    (staging rings), in one process, and
#                                    through the same-host IPC path with a
#                                    child process
#   3. engine.test  -test.bench 'BenchmarkGPU(TCP|IPC)$'
#        BenchmarkGPUTCP/{write,read}/{host,gpu}: TCP between two engines of
#          this process; target: gpu >= 80% of host (same run).
#        BenchmarkGPUIPC/driver-d2d, engine-{write,read}: the same-host path
#          to a child process's GPU memory; target: engine >= 90% of the
#          driver's own device-to-device copy (same run).
#   4. with FULL=1, also gpu.test's copy and staging benchmarks.
#
# Settings (environment):
#   BENCHTIME                  iterations per benchmark (default 20x, after
#                              one untimed warm-up)
#   MORI_BENCH_TCP_MIB         bytes per TCP transfer, MiB (default 256)
#   MORI_BENCH_IPC_MIB         bytes per same-host operation, MiB (default 1024)
#   MORI_GPU_STAGING_SLOTS     staging ring slots (default 4)
#   MORI_GPU_STAGING_SLOT_KIB  staging slot size, KiB (default 256)
#   MORI_GPU_LIBRARY           load this driver library instead of the
#                              vendor's (the stand-in, for a dry run on a
#                              CPU machine: build gpu/testdata/standin/standin.c
#                              with gcc -shared -fPIC -DARENA='((size_t)4<<30)'
#                              and use small MORI_BENCH_*_MIB)
#
# Exit status: 1 if a test failed; the benchmark ratios are reported, not
# enforced.
set -uo pipefail

dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
benchtime="${BENCHTIME:-20x}"
out="$(mktemp -d "${TMPDIR:-/tmp}/mori-gpu.XXXXXX")"
status=0

for bin in gpu.test engine.test; do
	if [[ ! -x "$dir/$bin" ]]; then
		echo "run-on-gpu: $dir/$bin not found or not executable (see the build commands at the top of $0)" >&2
		exit 2
	fi
done

echo "== machine"
uname -a
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
command -v rocm-smi >/dev/null && rocm-smi --showproductname
[[ -n "${MORI_GPU_LIBRARY:-}" ]] && echo "driver library: $MORI_GPU_LIBRARY (MORI_GPU_LIBRARY)"
echo "outputs: $out"

# run NAME BINARY ARGS...: runs a test binary from its directory (tests
# spawn themselves as child processes), keeps its output, and reports.
run() {
	local name="$1" bin="$2"
	shift 2
	echo
	echo "== $name"
	(cd "$dir" && "./$bin" "$@") >"$out/$name.log" 2>&1
	local rc=$?
	grep -E '^(=== RUN|--- (PASS|FAIL|SKIP)|PASS|FAIL|ok|Benchmark)|real_test.go|gpu_real_test.go' "$out/$name.log" |
		grep -vE '^=== RUN' | cut -c1-200
	if grep -q -- '--- SKIP' "$out/$name.log" && ! grep -q -- '--- PASS' "$out/$name.log"; then
		echo "run-on-gpu: $name: everything skipped (no GPU driver in this process?)"
	fi
	if [[ $rc -ne 0 ]]; then
		echo "run-on-gpu: $name FAILED (exit $rc); full output in $out/$name.log"
		status=1
	fi
}

run gpu-tests gpu.test -test.run 'Real' -test.v -test.count=1 -test.timeout 10m
run engine-tests engine.test -test.run 'RealGPU' -test.v -test.count=1 -test.timeout 10m
run engine-bench engine.test -test.run '^$' -test.bench 'BenchmarkGPU(TCP|IPC)$' \
	-test.benchtime "$benchtime" -test.count=1 -test.timeout 20m
if [[ "${FULL:-0}" == 1 ]]; then
	run gpu-bench gpu.test -test.run '^$' -test.bench . -test.benchtime "$benchtime" -test.timeout 20m
fi

# mbps NAME: the MB/s of benchmark NAME (without its -GOMAXPROCS suffix).
mbps() {
	awk -v want="$1" '
		$1 ~ /^Benchmark/ {
			name = $1; sub(/-[0-9]+$/, "", name)
			if (name != want) next
			for (i = 2; i < NF; i++) if ($(i+1) == "MB/s") { print $i; exit }
		}' "$out/engine-bench.log"
}

# ratio LABEL NUM DEN TARGET: prints NUM/DEN against TARGET.
ratio() {
	local label="$1" num="$2" den="$3" target="$4"
	if [[ -z "$num" || -z "$den" ]]; then
		printf '  %-34s  not measured (see %s)\n' "$label" "$out/engine-bench.log"
		return
	fi
	awk -v l="$label" -v n="$num" -v d="$den" -v t="$target" 'BEGIN {
		r = n / d
		printf "  %-34s  %9.1f / %9.1f MB/s = %5.1f%%  (target >= %d%%: %s)\n",
			l, n, d, 100 * r, 100 * t, (r >= t ? "met" : "NOT met")
	}'
}

echo
echo "== figures (same run, same machine)"
[[ -n "${MORI_GPU_LIBRARY:-}" ]] && echo "  (driver library $MORI_GPU_LIBRARY: not a GPU unless it is the vendor's)"
ratio "TCP write: GPU->GPU vs host->host" "$(mbps BenchmarkGPUTCP/write/gpu)" "$(mbps BenchmarkGPUTCP/write/host)" 0.80
ratio "TCP read:  GPU<-GPU vs host<-host" "$(mbps BenchmarkGPUTCP/read/gpu)" "$(mbps BenchmarkGPUTCP/read/host)" 0.80
ratio "same-host write vs driver D2D" "$(mbps BenchmarkGPUIPC/engine-write)" "$(mbps BenchmarkGPUIPC/driver-d2d)" 0.90
ratio "same-host read vs driver D2D" "$(mbps BenchmarkGPUIPC/engine-read)" "$(mbps BenchmarkGPUIPC/driver-d2d)" 0.90
echo
if [[ $status -eq 0 ]]; then
	echo "run-on-gpu: tests passed"
else
	echo "run-on-gpu: some tests FAILED"
fi
exit $status
