#!/usr/bin/env bash
# Run the test suite (set-up first). Extra arguments go to pytest, e.g. scripts/test.sh -k features
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CUSTSEG_JARS_DIR="${CUSTSEG_JARS_DIR:-$PWD/jars}"
exec "${CUSTSEG_VENV:-.venv}/bin/python" -m pytest "$@"
