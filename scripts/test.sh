#!/usr/bin/env bash
# Run the checks and the test suite (set-up first): ruff on the code and tests, mypy (strict) on lib/, then
# pytest on CUSTSEG_TEST_WORKERS (default 2) pytest-xdist workers, each with its own SparkSession and whole modules
# as work units (0: one process). Extra arguments go to pytest, e.g. scripts/test.sh -k features.
# CUSTSEG_LINT=0 skips ruff and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CUSTSEG_JARS_DIR="${CUSTSEG_JARS_DIR:-$PWD/jars}"
PY="${CUSTSEG_VENV:-.venv}/bin/python"
if [ "${CUSTSEG_LINT:-1}" != "0" ]; then
  echo "test: ruff check lib tests scripts jobs"
  "$PY" -m ruff check lib tests scripts jobs
  echo "test: mypy lib (strict, setup.cfg)"
  "$PY" -m mypy lib
fi
exec "$PY" -m pytest -n "${CUSTSEG_TEST_WORKERS:-2}" "$@"
