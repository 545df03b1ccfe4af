#!/usr/bin/env bash
# Builds mori-go: libmori_go.so with its C header, the C test program, the
# demo, and (when the Python package exists) the wheel. Output: build/.
#
#   ./build.sh            everything
#   ./build.sh lib        the library and header only
#   ./build.sh install --prefix DIR
#                         the library and header, then installs for C/C++
#                         callers: DIR/lib/libmori_go.so.1 (SONAME, the
#                         major is MG_ABI_VERSION) with the libmori_go.so
#                         link, DIR/include/mori_go.h, DIR/lib/pkgconfig/
#                         mori_go.pc and DIR/lib/cmake/mori_go (CMake
#                         package: find_package(mori_go) gives the
#                         imported target mori_go::mori_go). The wheel, if
#                         built, stays in build/dist/.
#
# Needs Go, gcc, pkg-config and cmake. libzmq is built from source into
# .build/zmq as a static library without optional dependencies (see
# scripts/build-libzmq.sh), so libmori_go.so loads where no libzmq exists.
set -euo pipefail
cd "$(dirname "$0")"
root=$PWD
what=${1:-all}
prefix=
if [[ $what == install ]]; then
  shift
  while (($#)); do
    case $1 in
      --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
      --prefix=*) prefix=${1#--prefix=}; shift ;;
      *) echo "build.sh install: unknown argument $1 (want --prefix DIR)" >&2; exit 2 ;;
    esac
  done
  [[ -n $prefix ]] || { echo "build.sh install: --prefix DIR is required" >&2; exit 2; }
fi
abi=$(sed -n 's/^#define MG_ABI_VERSION \([0-9]*\)u\{0,1\}$/\1/p' include/mori_go.h)
[[ -n $abi ]] || { echo "build.sh: MG_ABI_VERSION not found in include/mori_go.h" >&2; exit 1; }
soname=libmori_go.so.$abi

mkdir -p build/lib build/include build/bin

# Static libzmq (cached after the first build). The script prints
# PKG_CONFIG_PATH and a CGO_CPPFLAGS define naming the archive: Go's build
# cache ignores pkg-config output (golang/go#24544), so without the define
# a zmq4 object built against the system libzmq.so would be reused.
eval "$(./scripts/build-libzmq.sh)"

# Symbols of the static archives (libzmq) stay private to the library, so a
# libzmq loaded by the host (pyzmq) never binds to ours or ours to it.
# The SONAME carries the ABI's major version (MG_ABI_VERSION); programs
# linked with -lmori_go record libmori_go.so.$abi.
CGO_ENABLED=1 CGO_LDFLAGS="${CGO_LDFLAGS:-} -Wl,--exclude-libs,ALL -Wl,-soname,$soname" \
  go build -trimpath -buildmode=c-shared -o "build/lib/$soname" ./capi
rm -f build/lib/libmori_go.so.h build/lib/*.h # cgo's own header; include/mori_go.h is the API
ln -sfn "$soname" build/lib/libmori_go.so
cp include/mori_go.h build/include/
if readelf -d "build/lib/$soname" | grep -q 'NEEDED.*libzmq'; then
  echo "build.sh: libmori_go.so links libzmq dynamically; the static build was not used" >&2
  exit 1
fi
echo "build.sh: build/lib/$soname (+ libmori_go.so link), build/include/mori_go.h" >&2
[[ $what == lib ]] && exit 0
if [[ $what == install ]]; then
  exec ./scripts/install-c.sh "$prefix" "$abi"
fi

gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude tests/c/transfer_test.c -Lbuild/lib -lmori_go \
  -Wl,-rpath,'$ORIGIN/../lib' -o build/bin/c_transfer_test
gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude tests/c/abi_bench.c -Lbuild/lib -lmori_go \
  -Wl,-rpath,'$ORIGIN/../lib' -o build/bin/abi_bench
go build -trimpath -o build/bin/mori-kvdemo ./cmd/mori-kvdemo
go build -trimpath -o build/bin/mori-bench ./cmd/mori-bench
echo "build.sh: build/bin/{c_transfer_test,abi_bench,mori-kvdemo,mori-bench}" >&2

if [[ -f python/pyproject.toml ]]; then
  ./scripts/build-wheel.sh
fi
