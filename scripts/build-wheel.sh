#!/usr/bin/env bash
# Builds the Python wheel build/dist/sglang_mori_go-<ver>-py3-none-<platform>.whl:
# the sglang_mori_go package with libmori_go.so inside and the .pth file that
# makes `import mori.io` / `import mori.cpp` resolve to mori-go.
#
#   scripts/build-wheel.sh
#
# Builds build/lib/libmori_go.so first (./build.sh lib) when it is missing.
# MORI_GO_WHEEL_LIB ships another library; MORI_GO_WHEEL_DIR writes
# elsewhere; PYTHON picks the interpreter (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
lib=${MORI_GO_WHEEL_LIB:-build/lib/libmori_go.so}
out=${MORI_GO_WHEEL_DIR:-build/dist}

if [[ ! -f $lib ]]; then
  if [[ -n ${MORI_GO_WHEEL_LIB:-} ]]; then
    echo "build-wheel.sh: $lib not found" >&2
    exit 1
  fi
  echo "build-wheel.sh: $lib missing; running ./build.sh lib" >&2
  ./build.sh lib
fi

wheel=$("$python" python/build_backend/mori_go_build.py --lib "$lib" --out "$out")
echo "build-wheel.sh: $wheel" >&2
