#!/usr/bin/env bash
# Run the whole pipeline in local mode. With no arguments: on the built-in synthetic sample (generated on
# first use). Extra arguments go to `custseg run`, e.g.:
#   scripts/run_local.sh --set input.path=my.csv --as-of 2024-06-30
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CUSTSEG_JARS_DIR="${CUSTSEG_JARS_DIR:-$PWD/jars}"
exec "${CUSTSEG_VENV:-.venv}/bin/custseg" run --conf conf/local.toml --generate-if-missing "$@"
