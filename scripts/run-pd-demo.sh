#!/usr/bin/env bash
# The main job through SGLang itself: a prefill and a decode process running
# SGLang's unchanged mori PD backend (MoriKVManager / MoriKVSender /
# MoriKVReceiver / bootstrap server) over mori-go, moving one
# DeepSeek-V3-shaped request (61 layers, MLA 576 x bf16, 8192 tokens) on
# loopback, checked byte for byte (python/examples/pd_demo.py).
#
#   scripts/run-pd-demo.sh [pd_demo.py options, e.g. --page-size 1]
#
# On a fresh Debian/Ubuntu machine with Go and Python 3.11 it sets up
# everything first: system packages (scripts/setup.sh), libmori_go.so
# (./build.sh lib), the sglang-mori-go wheel (scripts/build-wheel.sh) and the
# pinned SGLang environment with the wheel (scripts/install-sglang.sh; about
# 3 GB of downloads and 6 GB on disk the first time, seconds afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
./build.sh lib
./scripts/build-wheel.sh
py=$(./scripts/install-sglang.sh)
exec "$py" python/examples/pd_demo.py "$@"
