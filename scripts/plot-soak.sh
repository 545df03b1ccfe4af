#!/usr/bin/env bash
# Draws a mori-soak curve (RSS, live heap, goroutines, descriptors,
# transfers/s) from the CSV that `mori-soak -csv FILE` writes:
#
#   scripts/plot-soak.sh soak.csv docs/img/soak.png "title"
#
# Uses build/plot-venv, made on first use with the matplotlib and numpy
# pinned in bench/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/plot-venv
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/pip" install -q "$(grep '^matplotlib==' bench/requirements.txt)" "$(grep '^numpy==' bench/requirements.txt)"
fi
exec "$venv/bin/python" scripts/plot-soak.py "$@"
