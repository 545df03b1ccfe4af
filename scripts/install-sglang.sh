#!/usr/bin/env bash
# Installs the pinned SGLang set that runs SGLang's own mori PD backend
# (sglang/srt/disaggregation/mori/conn.py, unchanged) on a CPU-only machine,
# plus the sglang-mori-go wheel that serves `import mori.io`.
#
#   scripts/install-sglang.sh [PYTHON]
#
# PYTHON: install into that interpreter's environment. Without it, into a
# venv made with ${PYTHON_FOR_VENV:-python3.11} (SGLang 0.5.23 ships cp311
# wheels only) at $SGLANG_VENV, by default
# ~/.cache/mori-go/sglang-venv-<hash of the pins>, linked from
# build/sglang-venv. It lives outside the checkout so that a fresh clone (CI)
# finds it ready: writing its 6 GB takes minutes even from local wheels.
#
# What: sglang==$SGLANG_VERSION with --no-deps, then
# python/tests/sglang/requirements.txt (torch and the handful of packages the
# import chain really needs; see that file), then
# python/tests/sglang/requirements-server.txt (what SGLang's HTTP servers and
# sglang-router need on top; its own stamp, not part of the venv's name).
#
# Idempotent: stamps in the environment record what was installed; a rerun
# with the same pins only reinstalls the mori-go wheel (seconds). Wheels are
# kept in $MORI_GO_WHEELHOUSE (default ~/.cache/mori-go/sglang-wheels) and
# installed from there offline, so a rebuilt venv (CI's fresh clone) costs no
# download. (pip's own cache is not relied on: behind some proxies it keeps
# nothing.)
#
# The mori-go wheel: $MORI_GO_WHEEL, else the newest build/dist/
# sglang_mori_go-*.whl (scripts/build-wheel.sh), force-reinstalled every run.
# MORI_GO_WHEEL=none skips it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SGLANG_VERSION=0.5.23
req=$root/python/tests/sglang/requirements.txt
req_server=$root/python/tests/sglang/requirements-server.txt
wheelhouse=${MORI_GO_WHEELHOUSE:-$HOME/.cache/mori-go/sglang-wheels}
start=$(date +%s)

say() { echo "install-sglang: $*" >&2; }

want=$( (echo "sglang==$SGLANG_VERSION"; cat "$req") | sha256sum | cut -c1-16)
want_server=$( (echo "$want"; cat "$req_server") | sha256sum | cut -c1-16)
if [[ $# -ge 1 ]]; then
  py=$1
else
  cache=$HOME/.cache/mori-go
  venv=${SGLANG_VENV:-$cache/sglang-venv-$want}
  if [[ ! -x $venv/bin/python ]]; then
    base=${PYTHON_FOR_VENV:-python3.11}
    if [[ -z ${SGLANG_VENV:-} ]]; then
      # venvs of older pins: ours, by name
      for old in "$cache"/sglang-venv-*; do
        [[ -d $old && $old != "$venv" ]] && { say "removing $old"; rm -rf "$old"; }
      done
    fi
    say "creating venv $venv with $base"
    mkdir -p "$(dirname "$venv")"
    "$base" -m venv "$venv"
  fi
  mkdir -p build
  if [[ -L build/sglang-venv || ! -e build/sglang-venv ]]; then
    ln -sfn "$venv" build/sglang-venv
  fi
  py=$venv/bin/python
fi
"$py" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"SGLang $SGLANG_VERSION needs Python 3.11, {sys.executable} is {sys.version.split()[0]}"' \
  || { say "wrong Python"; exit 1; }
prefix=$("$py" -c 'import sys; print(sys.prefix)')
stamp=$prefix/.mori-go-sglang-stamp

pip_() { "$py" -m pip --disable-pip-version-check "$@"; }

offline=(--no-index --find-links "$wheelhouse")
# 1. SGLang and what its mori PD backend imports (the venv's name hashes these)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  say "SGLang $SGLANG_VERSION set already installed in $prefix"
else
  mkdir -p "$wheelhouse"
  if ! pip_ install -q "${offline[@]}" --no-deps "sglang==$SGLANG_VERSION" 2>/dev/null \
     || ! pip_ install -q "${offline[@]}" -r "$req" 2>/dev/null; then
    say "downloading wheels into $wheelhouse (about 2.7 GB the first time)"
    pip_ download -q -d "$wheelhouse" --no-deps "sglang==$SGLANG_VERSION"
    pip_ download -q -d "$wheelhouse" -r "$req"
    pip_ install -q "${offline[@]}" --no-deps "sglang==$SGLANG_VERSION"
    pip_ install -q "${offline[@]}" -r "$req"
  fi
  echo "$want" > "$stamp"
  say "installed sglang==$SGLANG_VERSION and $(grep -c '^[a-zA-Z]' "$req") pinned packages into $prefix"
fi

# 2. what SGLang's HTTP servers and the PD router need on top: a second set
#    with its own stamp, so that it never rebuilds the venv; -c keeps the
#    first set's pins
stamp_server=$prefix/.mori-go-sglang-server-stamp
if [[ -f $stamp_server && $(cat "$stamp_server") == "$want_server" ]]; then
  say "server set already installed in $prefix"
else
  mkdir -p "$wheelhouse"
  if ! pip_ install -q "${offline[@]}" -c "$req" -r "$req_server" 2>/dev/null; then
    say "downloading the server set's wheels into $wheelhouse (about 200 MB the first time)"
    pip_ download -q -d "$wheelhouse" --find-links "$wheelhouse" -c "$req" -r "$req_server"
    pip_ install -q "${offline[@]}" -c "$req" -r "$req_server"
  fi
  echo "$want_server" > "$stamp_server"
  say "installed $(grep -c '^[a-zA-Z]' "$req_server") pinned packages of $(basename "$req_server") into $prefix"
fi

wheel=${MORI_GO_WHEEL:-}
if [[ -z $wheel ]]; then
  wheel=$(ls -t build/dist/sglang_mori_go-*.whl 2>/dev/null | head -1 || true)
fi
if [[ $wheel == none ]]; then
  :
elif [[ -n $wheel ]]; then
  pip_ install -q --force-reinstall --no-deps "$wheel"
  say "installed $(basename "$wheel")"
else
  say "no sglang-mori-go wheel (run scripts/build-wheel.sh); \`import mori.io\` will fail"
fi

end=$(date +%s)
say "done in $((end - start)) s; environment $(du -sh "$prefix" 2>/dev/null | cut -f1), wheelhouse $(du -sh "$wheelhouse" 2>/dev/null | cut -f1)"
"$py" -c "import sys; print(sys.executable)"
