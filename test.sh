#!/usr/bin/env bash
# Runs every test of mori-go after setting up the machine: lint, Go tests
# with the race detector (fuzz seed corpora included), the C ABI test, the
# header under C and C++ with -Wall -Wextra -Werror, and the Python tests
# when the package is present.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
./build.sh

echo "== lint"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then echo "gofmt would change: $unformatted"; exit 1; fi
go vet ./...
go tool staticcheck ./...

echo "== header compiles from C and C++"
for std in "gcc -std=c99 -x c" "gcc -std=c11 -x c" "g++ -std=c++11 -x c++" "g++ -std=c++17 -x c++"; do
  echo '#include "mori_go.h"
int main(void) { return (int)mg_abi_version() - (int)MG_ABI_VERSION; }' | $std -Wall -Wextra -Werror -pedantic -Iinclude -fsyntax-only -
done

echo "== C ABI test"
./build/bin/c_transfer_test

echo "== C/C++ install: ./build.sh install --prefix, then pkg-config and CMake builds"
./tests/install/run.sh

echo "== Go tests"
go test -race -count=1 -timeout 15m ./...

echo "== benchmark smoke run (figures only, no thresholds)"
./build/bin/mori-bench -quick
./build/bin/abi_bench 10000 5

if [[ -f python/pyproject.toml ]]; then
  echo "== Python tests"
  ./scripts/test-python.sh
  echo "== SGLang's own mori PD backend on mori-go (pinned SGLang, installed once and cached)"
  ./python/tests/sglang/run.sh
  echo "== the same SGLang harness tests with TLS 1.3 on every engine (the real-server deployment runs once, above)"
  MORI_GO_SGLANG_REBUILD_WHEEL=0 ./python/tests/sglang/run.sh --tls --ignore=tests/sglang/test_sglang_servers.py
  echo "== peer benchmark smoke run (mori-go via Python and C ABI, raw sockets, memcpy)"
  ./scripts/bench-smoke.sh
fi
echo "== all tests passed"
