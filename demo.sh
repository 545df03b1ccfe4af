#!/usr/bin/env bash
# The main job: a prefill/decode pair on loopback moving a DeepSeek-V3-sized
# KV cache, checked byte for byte, after setting up the machine.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
./build.sh >/dev/null
exec ./build/bin/mori-kvdemo "$@"
