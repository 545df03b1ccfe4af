#!/usr/bin/env bash
# Prepares everything bench/run.py needs; sourced by scripts/bench.sh and
# scripts/bench-smoke.sh (after `cd` to the repository root).
#
#   bench_setup full    venv with the harness and the peers (Mooncake, NIXL)
#   bench_setup smoke   venv with numpy only
#
# 1. build/lib/libmori_go.so (./build.sh lib; always for full, when missing for smoke)
# 2. build/bench-venv with the pinned packages of bench/requirements*.txt
#    (reinstalled only when those files change)
# 3. the mori-go wheel (scripts/build-wheel.sh into build/dist), installed
#    into the venv; without it run.py falls back to python/ and build/lib
# 4. build/bench/cbench from bench/cbench.c (raw sockets, C ABI, memcpy)
bench_setup() {
  local mode=$1
  local venv=build/bench-venv py=${PYTHON:-python3}
  if [[ $mode == full || ! -f build/lib/libmori_go.so ]]; then
    ./build.sh lib
  fi
  if [[ ! -x $venv/bin/python ]]; then
    "$py" -m venv "$venv"
  fi
  local stamp=$venv/.bench-$mode
  local want
  want=$(cat bench/requirements.txt $([[ $mode == full ]] && echo bench/requirements-peers.txt bench/requirements-nixl.txt) | sha256sum | cut -c1-16)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    if [[ $mode == full ]]; then
      "$venv/bin/pip" install -q -r bench/requirements.txt -r bench/requirements-peers.txt
      "$venv/bin/pip" install -q --no-deps -r bench/requirements-nixl.txt
    else
      "$venv/bin/pip" install -q "$(grep '^numpy==' bench/requirements.txt)"
    fi
    echo "$want" >"$stamp"
  fi
  if [[ -x scripts/build-wheel.sh && -f python/pyproject.toml ]]; then
    if scripts/build-wheel.sh >/dev/null; then
      local whl
      whl=$(ls -t build/dist/sglang_mori_go-*.whl 2>/dev/null | head -1)
      if [[ -n $whl ]]; then
        "$venv/bin/pip" install -q --no-deps --force-reinstall "$whl"
      fi
    else
      echo "bench: scripts/build-wheel.sh failed; using python/ and build/lib instead of the wheel" >&2
      "$venv/bin/pip" uninstall -q -y sglang-mori-go >/dev/null 2>&1 || true
    fi
  fi
  mkdir -p build/bench
  gcc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude bench/cbench.c -Lbuild/lib -lmori_go -lpthread \
    -Wl,-rpath,'$ORIGIN/../lib' -o build/bench/cbench
}
