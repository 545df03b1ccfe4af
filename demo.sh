#!/usr/bin/env bash
# The main job: a prefill and a decode process running SGLang's own mori PD
# backend (MoriKVManager / MoriKVSender / MoriKVReceiver and the bootstrap
# server, unchanged) over mori-go, moving one DeepSeek-V3-shaped request
# (61 layers, MLA 576 x bf16, 8192 tokens) on loopback, checked byte for
# byte. Sets up everything first (see scripts/run-pd-demo.sh).
#
#   ./demo.sh            through SGLang (the first run installs pinned SGLang)
#   ./demo.sh --engine   the same KV cache between two bare mori-go engines
set -euo pipefail
cd "$(dirname "$0")"
if [[ ${1:-} == --engine ]]; then
  shift
  ./scripts/setup.sh
  ./build.sh >/dev/null
  exec ./build/bin/mori-kvdemo "$@"
fi
exec ./scripts/run-pd-demo.sh "$@"
