#!/usr/bin/env bash
# Set-up, idempotent: a virtual environment with custseg and its pinned dependencies, and Delta Lake's
# JVM jars in ./jars (from Maven Central, once). After this, runs and tests need no network.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CUSTSEG_VENV:-.venv}"
JARS_DIR="${CUSTSEG_JARS_DIR:-jars}"
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
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
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
