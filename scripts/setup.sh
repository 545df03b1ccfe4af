#!/usr/bin/env bash
# Installs what building and testing mori-go needs on a fresh Debian/Ubuntu
# machine (run as root, or with sudo available). Idempotent and quick when
# everything is there already.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(gcc g++ make cmake pkg-config libzmq3-dev libibverbs-dev dpkg-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo_=""
  [[ $(id -u) -ne 0 ]] && sudo_=sudo
  echo "setup: installing ${missing[*]}" >&2
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "setup: Go 1.26 is required (https://go.dev/dl)" >&2; exit 1; }

# Go tools (staticcheck, stringer) are pinned in go.mod's tool block and run
# with `go tool NAME`: nothing is installed outside the module cache.
go mod download
