#!/usr/bin/env bash
# The main job: SGLang's own servers in PD disaggregation on mori-go — a
# prefill and a decode `launch_server --disaggregation-transfer-backend mori`
# behind `sglang-router --pd-disaggregation` — answering HTTP next to a plain
# server: same answers, time to first token, KV bytes moved
# (scripts/run-pd-servers.sh). Sets up everything first.
#
#   ./demo.sh            the HTTP deployment (the first run installs pinned SGLang)
#   ./demo.sh --harness  SGLang's mori PD classes in two processes moving one
#                        DeepSeek-V3-shaped request (549 MiB), checked byte
#                        for byte (scripts/run-pd-demo.sh)
#   ./demo.sh --engine   the same KV cache between two bare mori-go engines
set -euo pipefail
cd "$(dirname "$0")"
case ${1:-} in
--engine)
  shift
  ./scripts/setup.sh
  ./build.sh >/dev/null
  exec ./build/bin/mori-kvdemo "$@"
  ;;
--harness)
  shift
  exec ./scripts/run-pd-demo.sh "$@"
  ;;
esac
exec ./scripts/run-pd-servers.sh "$@"
