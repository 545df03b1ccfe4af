#!/usr/bin/env bash
# Installs the built library for C and C++ callers (called by
# `./build.sh install --prefix DIR`, after the library is built):
#
#   DIR/lib/libmori_go.so.ABI          the library, SONAME libmori_go.so.ABI
#   DIR/lib/libmori_go.so              link for -lmori_go
#   DIR/include/mori_go.h              the header
#   DIR/lib/pkgconfig/mori_go.pc       pkg-config --cflags --libs mori_go
#   DIR/lib/cmake/mori_go/             find_package(mori_go): mori_go::mori_go
#
#   scripts/install-c.sh DIR ABI
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:?usage: install-c.sh PREFIX ABI}
abi=${2:?usage: install-c.sh PREFIX ABI}
soname=libmori_go.so.$abi
version=$(sed -n 's/.*"mori-go \([0-9][0-9.]*\)".*/\1/p' capi/mori_go.c | head -1)
[[ -n $version ]] || { echo "install-c: version not found in capi/mori_go.c" >&2; exit 1; }
[[ -f build/lib/$soname ]] || { echo "install-c: build/lib/$soname missing (run ./build.sh lib)" >&2; exit 1; }

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
libdir=$prefix/lib
install -d "$libdir/pkgconfig" "$libdir/cmake/mori_go" "$prefix/include"
install -m 0755 "build/lib/$soname" "$libdir/$soname"
ln -sfn "$soname" "$libdir/libmori_go.so"
install -m 0644 include/mori_go.h "$prefix/include/mori_go.h"

cat >"$libdir/pkgconfig/mori_go.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: mori_go
Description: mori-go KV-cache transfer engine (C ABI)
Version: $version
Libs: -L\${libdir} -lmori_go
Cflags: -I\${includedir}
PC

# The package locates itself: the prefix is two levels above this folder's
# parent (lib/cmake/mori_go), so an installed tree can be moved.
cat >"$libdir/cmake/mori_go/mori_go-config.cmake" <<'CMAKE'
# CMake package of mori-go: find_package(mori_go) defines mori_go::mori_go.
get_filename_component(_mori_go_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET mori_go::mori_go)
  add_library(mori_go::mori_go SHARED IMPORTED)
  set_target_properties(mori_go::mori_go PROPERTIES
    IMPORTED_LOCATION "${_mori_go_prefix}/lib/@SONAME@"
    IMPORTED_SONAME "@SONAME@"
    INTERFACE_INCLUDE_DIRECTORIES "${_mori_go_prefix}/include")
endif()
set(mori_go_INCLUDE_DIRS "${_mori_go_prefix}/include")
set(mori_go_LIBRARIES mori_go::mori_go)
unset(_mori_go_prefix)
CMAKE
sed -i "s/@SONAME@/$soname/g" "$libdir/cmake/mori_go/mori_go-config.cmake"

cat >"$libdir/cmake/mori_go/mori_go-config-version.cmake" <<CMAKE
# Same major version (the ABI) and at least the requested version.
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION_MAJOR AND NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "${version%%.*}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
CMAKE

echo "install-c: $libdir/$soname, $prefix/include/mori_go.h, $libdir/pkgconfig/mori_go.pc, $libdir/cmake/mori_go" >&2
wheel=$(ls -t build/dist/sglang_mori_go-*.whl 2>/dev/null | head -1 || true)
[[ -n $wheel ]] && echo "install-c: the Python wheel stays at $wheel (pip install it)" >&2
exit 0
