#!/usr/bin/env bash
# Runs SGLang's own mori PD backend tests (python/tests/sglang) against the
# current mori-go: builds the library and the wheel when missing, installs
# the pinned SGLang set and the wheel (scripts/install-sglang.sh, idempotent),
# then runs pytest in that environment. Extra arguments go to pytest.
#
#   python/tests/sglang/run.sh [-k tp_mismatch] [-x] ...
#
# MORI_GO_SGLANG_REBUILD_WHEEL=0 installs build/dist's wheel as it is.
set -euo pipefail
cd "$(dirname "$0")/../../.."

if [[ ${MORI_GO_SGLANG_REBUILD_WHEEL:-1} != 0 || -z $(ls build/dist/sglang_mori_go-*.whl 2>/dev/null) ]]; then
  ./build.sh lib   # incremental: seconds when nothing changed
  scripts/build-wheel.sh
fi
py=$(scripts/install-sglang.sh)
# pytest runs from python/ (its pyproject.toml holds the pytest settings).
cd python
exec "$py" -m pytest -p no:cacheprovider tests/sglang "$@"
