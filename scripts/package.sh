#!/usr/bin/env bash
# Package custseg for a cluster, offline (after scripts/setup.sh):
#   dist/custseg-<version>-py3-none-any.whl   the package
#   dist/custseg-env.tar.gz                   a packed Python environment (venv-pack) for spark-submit --archives:
#                                             custseg (installed from the wheel, not editable), numpy, pyarrow,
#                                             delta-spark's Python API, plotly (the report stage's figures, on the
#                                             driver). No pyspark/py4j: every Spark installation
#                                             puts its own on the Python workers' path, matching its JVM.
# --py-files cannot carry numpy's and pyarrow's native libraries; an unpacked environment can.
# The environment's bin/python links to the base interpreter it was made from, so every node needs that
# interpreter at the same path: by default the one behind .venv; CUSTSEG_PACK_PYTHON=/usr/bin/python3.11
# picks another (same minor version as .venv, whose wheels are packed). See README "On a cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

VENV="${CUSTSEG_VENV:-.venv}"
WHEELS_DIR="${CUSTSEG_WHEELS_DIR:-wheels}"
DIST="${CUSTSEG_DIST_DIR:-dist}"
ENV_DIR="${CUSTSEG_ENV_DIR:-build/cluster-env}"
ARCHIVE="$DIST/custseg-env.tar.gz"
PY="$VENV/bin/python"

mkdir -p "$DIST"
rm -f "$DIST"/custseg-*.whl

echo "package: building the custseg wheel"
# no build isolation: setuptools and wheel come from the test extras, so no network is needed
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$DIST" . >/dev/null
rm -rf build/lib build/bdist.* 2>/dev/null || true
wheel="$(ls "$DIST"/custseg-*.whl)"

echo "package: installing it into a clean environment $ENV_DIR"
base="${CUSTSEG_PACK_PYTHON:-$("$PY" -c 'import sys; print(sys._base_executable)')}"
want="$("$PY" -c 'import sys; print(sys.version_info[:2])')"
have="$("$base" -c 'import sys; print(sys.version_info[:2])')" || { echo "package: cannot run $base" >&2; exit 1; }
[ "$have" = "$want" ] || { echo "package: $base is Python $have; the packed wheels are for $want (.venv)" >&2; exit 1; }
rm -rf "$ENV_DIR"
"$base" -m venv --without-pip "$ENV_DIR"
# the dev environment's pip installs into the new one; the wheels come from set-up's wheelhouse
"$PY" -m pip --python "$ENV_DIR/bin/python" install --quiet --no-index --no-deps --no-warn-script-location \
  -r "$WHEELS_DIR/requirements.txt" --find-links "$WHEELS_DIR" "$wheel"

# custseg must come from the environment's site-packages (not an editable link to lib/), and the native
# dependencies must load, with pyspark from Spark's own zip as the workers will have it.
spark_lib="$("$PY" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "python", "lib"))')"
env_python="$(cd "$ENV_DIR" && pwd)/bin/python"
(cd / && PYTHONNOUSERSITE=1 PYTHONPATH="$(ls "$spark_lib"/pyspark.zip "$spark_lib"/py4j-*-src.zip | paste -sd:)" \
  "$env_python" -c '
import sys, custseg, numpy, pyarrow, delta, pyspark.ml.linalg, plotly
from plotly.offline import get_plotlyjs
assert "/site-packages/custseg/" in custseg.__file__, custseg.__file__
assert len(get_plotlyjs()) > 1_000_000, "plotly without its JavaScript bundle: the report could not inline it"
print(f"package: environment OK: custseg {custseg.__version__}, numpy {numpy.__version__}, "
      f"pyarrow {pyarrow.__version__}, plotly {plotly.__version__}, python {sys.version.split()[0]}")
')

echo "package: packing $ENV_DIR into $ARCHIVE"
"$VENV/bin/venv-pack" --prefix "$ENV_DIR" --output "$ARCHIVE" --force --quiet
ls -l "$wheel" "$ARCHIVE" | awk '{printf "package: %s (%.2f MB)\n", $NF, $5 / 1048576}'
echo "package: its Python links to $base: every node needs that interpreter at that path"
