#!/usr/bin/env bash
# Set-up, idempotent: a virtual environment with custseg and its pinned dependencies, Delta Lake's
# JVM jars in ./jars (from Maven Central, once), and the wheels of the cluster environment's native
# dependencies in ./wheels (scripts/package.sh packs them offline). After this, runs and tests need no network.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CUSTSEG_VENV:-.venv}"
JARS_DIR="${CUSTSEG_JARS_DIR:-jars}"
WHEELS_DIR="${CUSTSEG_WHEELS_DIR:-wheels}"
PY="${PYTHON:-python3}"

command -v java >/dev/null || { echo "setup: Java 17 is required (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi

# reinstall only when the package metadata changed
stamp="$VENV/.custseg-setup"
want="$(cat setup.cfg | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing custseg and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[test,bench]"
  echo "$want" > "$stamp"
fi

if ! ls "$JARS_DIR"/delta-spark_*.jar >/dev/null 2>&1; then
  command -v mvn >/dev/null || { echo "setup: Maven is required once, to fetch Delta's jars (apt-get install maven)" >&2; exit 1; }
  echo "setup: fetching Delta Lake jars into $JARS_DIR"
  tmp="$(mktemp -d)"
  # Spark already ships scala, hadoop, parquet, jackson, logging and compression jars: take Delta's own only.
  mvn -q -B -f scripts/delta-jars.pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime \
    -DexcludeGroupIds=org.scala-lang,org.apache.hadoop,org.apache.parquet,com.fasterxml.jackson.core,com.fasterxml.jackson.datatype,org.apache.logging.log4j,org.slf4j,org.xerial.snappy,com.github.luben,commons-logging,io.airlift,org.roaringbitmap
  mkdir -p "$JARS_DIR"
  mv "$tmp"/*.jar "$JARS_DIR"/
  rmdir "$tmp"
fi

# Headless Chromium, for the report's browser test (tests/test_report_browser.py) and its screenshot
# (scripts/report_screenshot.sh): Debian's chromium, installed once when missing and only where apt-get is usable
# (root); elsewhere one line says so and that test is skipped, saying so. CUSTSEG_NO_BROWSER=1 leaves it out.
have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
apt_chromium() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; }
if [ "${CUSTSEG_NO_BROWSER:-0}" != "1" ] && ! have_chromium; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (headless, for the report's browser test and screenshot)"
    # the package lists may be missing or stale on a fresh machine: update them once if the first try fails
    apt_chromium || { apt-get update -q >/dev/null 2>&1 && apt_chromium; } ||
      echo "setup: apt-get could not install chromium: the report's browser test will be skipped"
  else
    echo "setup: no chromium, and apt-get is not usable here (not root): the report's browser test will be skipped"
  fi
fi

# The packed cluster environment (scripts/package.sh) holds custseg and what its Python needs besides
# pyspark and py4j, which every Spark installation ships: numpy and pyarrow (native), delta-spark's Python
# API and its small dependencies, and plotly (the report's figures, pure Python, with its dependencies narwhals and
# packaging), at the versions installed above. Downloaded once per version set.
wanted="$("$VENV/bin/python" - <<'EOF'
from importlib.metadata import version
for name in ("numpy", "pyarrow", "delta-spark", "importlib_metadata", "zipp", "plotly", "narwhals", "packaging"):
    print(f"{name}=={version(name)}")
EOF
)"
if [ "$(cat "$WHEELS_DIR/requirements.txt" 2>/dev/null)" != "$wanted" ]; then
  echo "setup: fetching the cluster environment's wheels into $WHEELS_DIR"
  mkdir -p "$WHEELS_DIR"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS_DIR" $wanted
  echo "$wanted" > "$WHEELS_DIR/requirements.txt"
fi
