#!/usr/bin/env bash
# spark-submit a custseg job with the packed environment and Delta's jars, for any master:
#
#   scripts/submit.sh [spark-submit options] JOB.py [job arguments]
#   scripts/submit.sh --master spark://127.0.0.1:7177 --executor-memory 1g \
#       jobs/run_pipeline.py --conf conf/cluster.toml --as-of 2024-06-30
#
# Everything before the job file goes to spark-submit, everything after it to the job (custseg's own
# --conf FILE, --set key=value, --as-of ...). On top of the given options this adds:
#   --archives dist/custseg-env.tar.gz#environment   custseg, numpy, pyarrow (scripts/package.sh builds it
#                                                    when missing), unpacked as ./environment on every executor
#   spark.pyspark.python=./environment/bin/python    executors run the shipped Python, nothing of the node's
#   spark.pyspark.driver.python                      client mode: build/cluster-env/bin/python (the environment
#                                                    that was packed); cluster mode: ./environment/bin/python
#   --jars jars/*.jar                                Delta's jars, fetched by scripts/setup.sh, for driver and executors
#   spark.sql.extensions, spark.sql.catalog.spark_catalog   Delta's SQL extension and catalog
#   on 127.0.0.1 / localhost masters only: SPARK_LOCAL_IP and spark.driver.host/bindAddress = 127.0.0.1
#
# Settings (environment): CUSTSEG_ENV_ARCHIVE [dist/custseg-env.tar.gz], CUSTSEG_DRIVER_PYTHON (client
# mode driver Python), CUSTSEG_JARS_DIR [jars], SPARK_HOME [the pyspark installed in .venv].
# An option given explicitly (e.g. --conf spark.pyspark.python=...) wins over the defaults above.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"

VENV="${CUSTSEG_VENV:-$REPO/.venv}"
ARCHIVE="${CUSTSEG_ENV_ARCHIVE:-$REPO/dist/custseg-env.tar.gz}"
JARS_DIR="${CUSTSEG_JARS_DIR:-$REPO/jars}"
if [ -z "${SPARK_HOME:-}" ]; then
  SPARK_HOME="$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  export SPARK_HOME
fi

# split: spark-submit options | job file | job arguments
spark_args=()
job=""
while [ $# -gt 0 ]; do
  case "$1" in
    --verbose|-v|--supervise|--help|-h|--version) spark_args+=("$1"); shift ;;
    --*=*) spark_args+=("$1"); shift ;;
    -*) spark_args+=("$1" "${2:-}"); shift $(($# > 1 ? 2 : 1)) ;;  # an option and its value
    *) job="$1"; shift; break ;;
  esac
done
[ -n "$job" ] || { echo "usage: $0 [spark-submit options] JOB.py [job arguments]" >&2; exit 2; }

# what the caller already set
master="" deploy_mode="client" given=" "
for ((i = 0; i < ${#spark_args[@]}; i++)); do
  a="${spark_args[$i]}"
  case "$a" in
    --master) master="${spark_args[$((i + 1))]:-}" ;;
    --master=*) master="${a#--master=}" ;;
    --deploy-mode) deploy_mode="${spark_args[$((i + 1))]:-}" ;;
    --deploy-mode=*) deploy_mode="${a#--deploy-mode=}" ;;
    --conf) given+="${spark_args[$((i + 1))]%%=*} " ;;
    --conf=*) a="${a#--conf=}"; given+="${a%%=*} " ;;
    --archives|--archives=*|--jars|--jars=*) given+="${a%%=*} " ;;
  esac
done
has() { [[ "$given" == *" $1 "* ]]; }

if [ ! -f "$ARCHIVE" ]; then
  [ "$ARCHIVE" = "$REPO/dist/custseg-env.tar.gz" ] || { echo "submit: no archive at $ARCHIVE" >&2; exit 1; }
  "$REPO/scripts/package.sh"
fi

extra=()
has --archives || extra+=(--archives "$ARCHIVE#environment")
if ! has --jars; then
  jars="$(ls "$JARS_DIR"/*.jar 2>/dev/null | paste -sd, -)"
  [ -n "$jars" ] || { echo "submit: no jars in $JARS_DIR: run scripts/setup.sh" >&2; exit 1; }
  extra+=(--jars "$jars")
fi
has spark.pyspark.python || extra+=(--conf spark.pyspark.python=./environment/bin/python)
if ! has spark.pyspark.driver.python; then
  if [ "$deploy_mode" = "cluster" ]; then
    extra+=(--conf spark.pyspark.driver.python=./environment/bin/python)
  else
    extra+=(--conf "spark.pyspark.driver.python=${CUSTSEG_DRIVER_PYTHON:-$REPO/build/cluster-env/bin/python}")
  fi
fi
has spark.sql.extensions || extra+=(--conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension)
has spark.sql.catalog.spark_catalog || \
  extra+=(--conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog)
case "$master" in
  spark://127.0.0.1:*|spark://localhost:*|local|local\[*)
    export SPARK_LOCAL_IP=127.0.0.1
    has spark.driver.host || extra+=(--conf spark.driver.host=127.0.0.1)
    has spark.driver.bindAddress || extra+=(--conf spark.driver.bindAddress=127.0.0.1)
    ;;
esac

exec "$SPARK_HOME/bin/spark-submit" "${spark_args[@]}" "${extra[@]}" "$job" "$@"
