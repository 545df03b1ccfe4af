#!/usr/bin/env bash
# The main job as users run it: SGLang's own HTTP servers, a prefill and a
# decode `launch_server` with --disaggregation-transfer-backend mori (served
# by mori-go) behind `sglang_router.launch_router --pd-disaggregation`, next
# to a plain `launch_server`; prompts through both, answers compared, time to
# first token and the KV bytes mori-go moved printed
# (python/examples/pd_servers_demo.py).
#
#   scripts/run-pd-servers.sh [pd_servers_demo.py options, e.g. --model tiny]
#
# On a fresh Debian/Ubuntu machine with Go and Python 3.11 it sets up
# everything first: system packages (scripts/setup.sh), libmori_go.so
# (./build.sh lib), the sglang-mori-go wheel (scripts/build-wheel.sh) and the
# pinned SGLang environment with its server set and the wheel
# (scripts/install-sglang.sh; about 3 GB of downloads and 6.4 GB on disk the
# first time, seconds afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
./build.sh lib
./scripts/build-wheel.sh
py=$(./scripts/install-sglang.sh)
exec "$py" python/examples/pd_servers_demo.py "$@"
