#!/usr/bin/env bash
# Runs SGLang's own mori PD backend tests (python/tests/sglang) against the
# current mori-go: builds the library and the wheel when missing, installs
# the pinned SGLang set and the wheel (scripts/install-sglang.sh, idempotent),
# then runs pytest in that environment. Extra arguments go to pytest.
#
#   python/tests/sglang/run.sh [-k tp_mismatch] [-x] ...
#   python/tests/sglang/run.sh --tls ...   every engine with TLS 1.3 on the control and
#                                          data planes (a throw-away CA made with openssl,
#                                          MORI_GO_TLS_CERT/KEY/CA in the environment)
#
# MORI_GO_SGLANG_REBUILD_WHEEL=0 installs build/dist's wheel as it is.
set -euo pipefail
cd "$(dirname "$0")/../../.."

if [[ ${1:-} == --tls ]]; then
  shift
  tls=$(mktemp -d)
  trap 'rm -rf "$tls"' EXIT
  (
    cd "$tls"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj /CN=mori-go-test-ca -days 1 -out ca.crt
    openssl ecparam -name prime256v1 -genkey -noout -out engine.key
    openssl req -new -key engine.key -subj /CN=engine -out engine.csr
    openssl x509 -req -in engine.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out engine.crt
  ) 2>/dev/null
  export MORI_GO_TLS_CERT=$tls/engine.crt MORI_GO_TLS_KEY=$tls/engine.key MORI_GO_TLS_CA=$tls/ca.crt
  echo "run.sh: every engine with TLS ($tls)" >&2
fi

if [[ ${MORI_GO_SGLANG_REBUILD_WHEEL:-1} != 0 || -z $(ls build/dist/sglang_mori_go-*.whl 2>/dev/null) ]]; then
  ./build.sh lib   # incremental: seconds when nothing changed
  scripts/build-wheel.sh
fi
py=$(scripts/install-sglang.sh)
# pytest runs from python/ (its pyproject.toml holds the pytest settings).
cd python
"$py" -m pytest -p no:cacheprovider tests/sglang "$@"
