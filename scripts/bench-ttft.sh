#!/usr/bin/env bash
# Time to first token of real SGLang servers: a plain server vs PD
# disaggregation on mori-go, on Mooncake TCP (and NIXL with --setups ...,nixl),
# interleaved (bench/ttft.py; docs/benchmarks.md has the figures).
#
#   scripts/bench-ttft.sh [--requests 20] [--lengths 1024,8192] [--setups plain,mori,mooncake] [--out FILE]
#
# Sets up first: libmori_go.so and the wheel, the pinned SGLang environment
# with its server set (scripts/install-sglang.sh), and the peers of
# bench/requirements-ttft.txt in build/ttft-peers (--no-deps; seconds when
# already there). Takes long: about 10 s per round at 8192 tokens on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
./build.sh lib >/dev/null
scripts/build-wheel.sh >/dev/null
py=$(scripts/install-sglang.sh)
peers=build/ttft-peers
want=$(sha256sum bench/requirements-ttft.txt | cut -c1-16)
if [[ ! -f $peers/.stamp || $(cat "$peers/.stamp") != "$want" ]]; then
  rm -rf "$peers"
  "$py" -m pip install -q --disable-pip-version-check --no-deps --target "$peers" -r bench/requirements-ttft.txt
  echo "$want" > "$peers/.stamp"
fi
MORI_GO_TTFT_PEERS=$PWD/$peers exec "$py" bench/ttft.py "$@"
