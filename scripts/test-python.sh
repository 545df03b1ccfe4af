#!/usr/bin/env bash
# Runs the Python tests (python/tests) against the installed wheel:
#   1. builds the wheel (scripts/build-wheel.sh; builds the library if missing);
#   2. installs it into the venv build/pyenv (created once, with the system
#      site-packages for pytest; pytest is installed there if missing, numpy
#      best effort);
#   3. runs pytest from the repository root; the fresh-venv install test uses
#      the same wheel. Exits non-zero on any failure.
#
# PYTHON picks the interpreter (default python3). MORI_GO_WHEEL_LIB and
# MORI_GO_WHEEL_DIR are passed to build-wheel.sh; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${MORI_GO_WHEEL_DIR:-build/dist}

./scripts/build-wheel.sh
wheel=$(ls -t "$out"/sglang_mori_go-*.whl | head -1)

venv=build/pyenv
py=$PWD/$venv/bin/python
if ! "$py" -c "import sys" 2>/dev/null; then # missing, or its interpreter is gone
  rm -rf "$venv"
  "$python" -m venv --system-site-packages "$venv"
fi
if ! "$py" -c "import pytest" 2>/dev/null; then
  echo "test-python.sh: installing pytest" >&2
  "$py" -m pip install -q --disable-pip-version-check pytest
fi
if ! "$py" -c "import numpy" 2>/dev/null && [[ ! -f $venv/.numpy-tried ]]; then
  touch "$venv/.numpy-tried" # try once per venv: offline machines skip the numpy cases
  timeout 180 "$py" -m pip install -q --disable-pip-version-check numpy >/dev/null 2>&1 ||
    echo "test-python.sh: numpy not installable; its cases will skip" >&2
fi
"$py" -m pip install -q --no-index --no-deps --force-reinstall --disable-pip-version-check "$wheel"

# One clear line if the library cannot load at all, instead of every test failing.
if ! msg=$("$py" -c "import sglang_mori_go as m; print(m.library_version())" 2>&1); then
  echo "test-python.sh: the installed package cannot load its library:" >&2
  echo "$msg" | tail -3 >&2
  exit 1
fi
echo "test-python.sh: $wheel ($msg)" >&2

export MORI_GO_WHEEL=$(realpath "$wheel") MORI_GO_REQUIRE_WHEEL=1
# python/tests/sglang runs in the SGLang environment (python/tests/sglang/run.sh).
timeout 900 "$py" -m pytest python/tests -q -p no:randomly --ignore=python/tests/sglang "$@"
