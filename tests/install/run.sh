#!/usr/bin/env bash
# The C/C++ install story, tested: `./build.sh install --prefix` into a
# temporary prefix, then a C++ program (write_one.cpp: one write between
# two engines, bytes checked) built against it with pkg-config and with
# CMake's find_package, and run. Needs the library built (./build.sh lib).
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
passed=0 failed=0
check() { # name, command...
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then passed=$((passed + 1)); echo "ok    $name"
  else failed=$((failed + 1)); echo "FAIL  $name"; sed 's/^/      /' "$tmp/out"; fi
}

./build.sh install --prefix "$prefix" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log"; exit 1; }
abi=$(sed -n 's/^#define MG_ABI_VERSION \([0-9]*\)u\{0,1\}$/\1/p' include/mori_go.h)

check "installed files" test -f "$prefix/lib/libmori_go.so.$abi" -a -L "$prefix/lib/libmori_go.so" \
  -a -f "$prefix/include/mori_go.h" -a -f "$prefix/lib/pkgconfig/mori_go.pc" \
  -a -f "$prefix/lib/cmake/mori_go/mori_go-config.cmake"
check "SONAME is libmori_go.so.$abi" bash -c "readelf -d '$prefix/lib/libmori_go.so.$abi' | grep -q 'SONAME.*\[libmori_go.so.$abi\]'"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
check "pkg-config build" bash -c "g++ -std=c++17 -Wall -Wextra -Werror tests/install/write_one.cpp \$(pkg-config --cflags --libs mori_go) -o '$tmp/write_one_pc'"
check "pkg-config program needs libmori_go.so.$abi" bash -c "readelf -d '$tmp/write_one_pc' | grep -q 'NEEDED.*\[libmori_go.so.$abi\]'"
check "pkg-config program runs" env LD_LIBRARY_PATH="$prefix/lib" "$tmp/write_one_pc"

check "CMake configure" cmake -S tests/install -B "$tmp/cmake" -DCMAKE_PREFIX_PATH="$prefix"
check "CMake build" cmake --build "$tmp/cmake"
check "CMake program runs" "$tmp/cmake/write_one"

echo "$passed passed, $failed failed"
((failed == 0))
