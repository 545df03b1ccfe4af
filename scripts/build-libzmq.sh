#!/usr/bin/env bash
# Build a dependency-free, static, PIC libzmq for linking into libmori_go.so.
#
# Debian's libzmq.a drags in gssapi/krb5/sodium/pgm/norm/bsd, and linking the
# shared libzmq.so makes libmori_go.so unloadable on hosts without libzmq5.
# This script fetches the libzmq source from the Debian archive (apt is the only
# network access it needs), builds it with no optional dependencies (CURVE uses
# the bundled tweetnacl), and installs it into a private prefix together with a
# pkg-config file whose Libs: line links the static archive and a static
# libstdc++, so `#cgo pkg-config: libzmq` (github.com/pebbe/zmq4) picks it up.
#
# Usage:
#   eval "$(scripts/build-libzmq.sh)"   # exports PKG_CONFIG_PATH and CGO_CPPFLAGS
#   CGO_ENABLED=1 go build -buildmode=c-shared -o libmori_go.so .
#
# Why CGO_CPPFLAGS: Go's build cache does not key cgo packages on pkg-config
# output (golang/go#24544). A github.com/pebbe/zmq4 object built earlier against
# the system libzmq.pc (-lzmq) is silently reused and the .so then NEEDs
# libzmq.so.5. CGO_CPPFLAGS *is* part of the cache key, so we add a harmless
# -DMORI_GO_ZMQ_PC=<hash of our .pc>, forcing a distinct cache entry.
#
# Environment:
#   MORI_GO_ZMQ_PREFIX   install prefix          (default: <repo>/.build/zmq)
#   MORI_GO_ZMQ_WORKDIR  source + build scratch  (default: <repo>/.build/zmq-work)
#   MORI_GO_ZMQ_SRC_DIR  use this unpacked libzmq source tree instead of apt
#   MORI_GO_ZMQ_CURVE    ON|OFF, CURVE security via bundled tweetnacl (default ON)
#   MORI_GO_ZMQ_JOBS     parallel build jobs     (default: 2)
#
# Idempotent: if <prefix>/lib/libzmq.a exists, only the .pc file is (re)written.
# stdout carries only the two `export VAR=value` lines; logs go to stderr.
set -euo pipefail
shopt -s extglob

log() { printf 'build-libzmq: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${MORI_GO_ZMQ_PREFIX:-$REPO/.build/zmq}"
WORK="${MORI_GO_ZMQ_WORKDIR:-$REPO/.build/zmq-work}"
CURVE="${MORI_GO_ZMQ_CURVE:-ON}"
JOBS="${MORI_GO_ZMQ_JOBS:-2}"
SRC_PKG=zeromq3

mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"   # absolute: cgo links from a temp dir
LIBDIR="$PREFIX/lib"
PCDIR="$LIBDIR/pkgconfig"

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*"; fi
}

# Make sure `apt-get source` can see a deb-src index for this Debian release.
ensure_deb_src() {
  if [[ -n "$(apt-cache showsrc "$SRC_PKG" 2>/dev/null)" ]]; then
    return
  fi
  local codename
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  [[ -n "$codename" ]] || die "cannot determine Debian codename from /etc/os-release"
  local f=/etc/apt/sources.list.d/mori-go-deb-src.sources
  log "adding deb-src entry $f ($codename)"
  as_root tee "$f" >/dev/null <<SRC
# Added by mori-go scripts/build-libzmq.sh to fetch the libzmq source.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  as_root apt-get update -qq >&2
  [[ -n "$(apt-cache showsrc "$SRC_PKG" 2>/dev/null)" ]] \
    || die "apt-cache showsrc $SRC_PKG still empty after adding deb-src"
}

# Prints the path of an unpacked libzmq source tree, fetching it if needed.
get_source() {
  if [[ -n "${MORI_GO_ZMQ_SRC_DIR:-}" ]]; then
    [[ -f "$MORI_GO_ZMQ_SRC_DIR/CMakeLists.txt" ]] \
      || die "MORI_GO_ZMQ_SRC_DIR=$MORI_GO_ZMQ_SRC_DIR has no CMakeLists.txt"
    echo "$MORI_GO_ZMQ_SRC_DIR"; return
  fi
  local srcroot="$WORK/src" dir
  dir="$(find "$srcroot" -mindepth 2 -maxdepth 2 -name CMakeLists.txt -printf '%h\n' 2>/dev/null | sort | tail -n1 || true)"
  if [[ -n "$dir" && -f "$srcroot/.complete" ]]; then
    log "using cached source $dir"
    echo "$dir"; return
  fi
  command -v dpkg-source >/dev/null 2>&1 || {
    log "installing dpkg-dev (for dpkg-source)"
    as_root apt-get install -y -qq --no-install-recommends dpkg-dev >&2
  }
  ensure_deb_src
  rm -rf "$srcroot"; mkdir -p "$srcroot"
  log "fetching $SRC_PKG source from the Debian archive"
  # Runs unsandboxed as root (apt warns about _apt); hashes are checked by apt
  # against the signed Sources index.
  (cd "$srcroot" && apt-get source -qq "$SRC_PKG" >&2 2>&1) \
    || die "apt-get source $SRC_PKG failed"
  dir="$(find "$srcroot" -mindepth 2 -maxdepth 2 -name CMakeLists.txt -printf '%h\n' | sort | tail -n1)"
  [[ -n "$dir" ]] || die "no CMakeLists.txt in the unpacked $SRC_PKG source"
  touch "$srcroot/.complete"
  echo "$dir"
}

build_and_install() {
  local src="$1" bld="$WORK/build"
  command -v cmake >/dev/null 2>&1 || die "cmake not found"
  rm -rf "$bld"; mkdir -p "$bld"
  log "configuring $src (CURVE=$CURVE)"
  local t0=$SECONDS
  # Every optional dependency is switched off explicitly; option names checked
  # against libzmq 4.3.4's CMakeLists.txt (no GSSAPI support in its CMake build).
  cmake -S "$src" -B "$bld" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" \
    -DCMAKE_INSTALL_LIBDIR=lib \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON \
    -DBUILD_SHARED=OFF -DBUILD_STATIC=ON \
    -DBUILD_TESTS=OFF -DWITH_DOCS=OFF -DWITH_PERF_TOOL=OFF \
    -DENABLE_DRAFTS=OFF -DENABLE_WS=OFF -DWITH_TLS=OFF -DWITH_NSS=OFF \
    -DWITH_LIBSODIUM=OFF -DENABLE_CURVE="$CURVE" \
    -DWITH_LIBBSD=OFF -DWITH_OPENPGM=OFF -DWITH_NORM=OFF -DWITH_VMCI=OFF \
    -DENABLE_CPACK=OFF -DENABLE_PRECOMPILED=OFF -DLIBZMQ_WERROR=OFF \
    >"$WORK/cmake-configure.log" 2>&1 \
    || { tail -n 40 "$WORK/cmake-configure.log" >&2; die "cmake configure failed (log: $WORK/cmake-configure.log)"; }
  log "building with -j$JOBS"
  cmake --build "$bld" -j"$JOBS" >"$WORK/cmake-build.log" 2>&1 \
    || { tail -n 40 "$WORK/cmake-build.log" >&2; die "build failed (log: $WORK/cmake-build.log)"; }
  cmake --install "$bld" >"$WORK/cmake-install.log" 2>&1 \
    || { tail -n 40 "$WORK/cmake-install.log" >&2; die "install failed (log: $WORK/cmake-install.log)"; }
  [[ -f "$LIBDIR/libzmq.a" && -f "$PREFIX/include/zmq.h" ]] \
    || die "install did not produce $LIBDIR/libzmq.a and $PREFIX/include/zmq.h"
  # Never let a shared libzmq shadow the archive.
  rm -f "$LIBDIR"/libzmq.so*
  log "built libzmq in $((SECONDS - t0))s"
}

# pebbe/zmq4 uses `#cgo pkg-config: libzmq` (no --static), so Libs: itself must
# name the archive. libstdc++ is linked statically (-l:libstdc++.a) so the .so
# needs only libc/libm/libgcc_s at runtime. Only cgo-allowlisted flags are used.
write_pc() {
  local version
  version="$(awk '/#define ZMQ_VERSION_(MAJOR|MINOR|PATCH)/{v=v (v?".":"") $3} END{print v}' "$PREFIX/include/zmq.h")"
  mkdir -p "$PCDIR"
  cat >"$PCDIR/libzmq.pc.tmp" <<PC
# Generated by mori-go scripts/build-libzmq.sh: static, dependency-free libzmq.
prefix=$PREFIX
exec_prefix=\${prefix}
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: libzmq
Description: 0MQ c++ library (static, no optional deps)
Version: $version
Libs: \${libdir}/libzmq.a -l:libstdc++.a -lm -lpthread -lrt
Libs.private:
Cflags: -I\${includedir} -DZMQ_STATIC
PC
  mv -f "$PCDIR/libzmq.pc.tmp" "$PCDIR/libzmq.pc"
}

if [[ -f "$LIBDIR/libzmq.a" && -f "$PREFIX/include/zmq.h" ]]; then
  log "cached: $LIBDIR/libzmq.a"
else
  mkdir -p "$WORK"
  build_and_install "$(get_source)"
fi
write_pc
pc_hash="$(sha256sum "$PCDIR/libzmq.pc" "$LIBDIR/libzmq.a" | sha256sum | cut -c1-16)"
cppflags="${CGO_CPPFLAGS:-}"
cppflags="${cppflags//-DMORI_GO_ZMQ_PC=+([0-9a-f])/}"   # idempotent re-eval
cppflags="$(echo $cppflags) -DMORI_GO_ZMQ_PC=$pc_hash"
log "done; set these before go build (eval \"\$(scripts/build-libzmq.sh)\"):"
printf 'export PKG_CONFIG_PATH=%q\n' "$PCDIR"
printf 'export CGO_CPPFLAGS=%q\n' "${cppflags# }"
