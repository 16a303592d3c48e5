#!/usr/bin/env bash
# A Spark standalone cluster on this machine, from the installed pyspark: one master and N workers on
# 127.0.0.1, each worker with its own work and scratch folders, one core and bounded memory.
#
#   scripts/local_cluster.sh start     start what is not running, wait until every worker is registered
#   scripts/local_cluster.sh stop      stop the workers (and their executors), then the master, by process id
#   scripts/local_cluster.sh status    the master's view (JSON), or "not running"
#   scripts/local_cluster.sh url       the master URL, for spark-submit --master
#
# Settings (environment; defaults in brackets):
#   CUSTSEG_CLUSTER_DIR [build/local-cluster]   pid files, logs, worker-<i>/{work,local}
#   CUSTSEG_MASTER_PORT [7177]  CUSTSEG_MASTER_UI_PORT [8177]   master RPC and web UI (the UI serves /json/)
#   CUSTSEG_WORKERS [2]  CUSTSEG_WORKER_CORES [1]  CUSTSEG_WORKER_MEMORY [2g]
#   CUSTSEG_WORKER_PORT [7180] CUSTSEG_WORKER_UI_PORT [8180]   worker i (1..N) uses port + i
#   CUSTSEG_CLUSTER_TIMEOUT [90]   seconds to wait for the master and the workers
#   SPARK_HOME [the pyspark installed in .venv]
#
# The daemons run with a minimal environment (no PYTHONPATH, no virtualenv): executors see only what
# spark-submit ships them, as on a real cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CUSTSEG_VENV:-.venv}"
DIR="${CUSTSEG_CLUSTER_DIR:-build/local-cluster}"
MASTER_PORT="${CUSTSEG_MASTER_PORT:-7177}"
MASTER_UI_PORT="${CUSTSEG_MASTER_UI_PORT:-8177}"
WORKERS="${CUSTSEG_WORKERS:-2}"
WORKER_CORES="${CUSTSEG_WORKER_CORES:-1}"
WORKER_MEMORY="${CUSTSEG_WORKER_MEMORY:-2g}"
WORKER_PORT="${CUSTSEG_WORKER_PORT:-7180}"
WORKER_UI_PORT="${CUSTSEG_WORKER_UI_PORT:-8180}"
TIMEOUT="${CUSTSEG_CLUSTER_TIMEOUT:-90}"
HOST=127.0.0.1
MASTER_URL="spark://$HOST:$MASTER_PORT"
JSON_URL="http://$HOST:$MASTER_UI_PORT/json/"

if [ -z "${SPARK_HOME:-}" ]; then
  SPARK_HOME="$("$VENV/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
fi
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

alive() {  # pid file -> true when its process runs and is one of our Spark daemons
  local pid
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "org.apache.spark.deploy"
}

descendants() {  # pid -> every descendant pid (children first found, recursively)
  local child
  for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

master_json() { curl -fsS --max-time 2 "$JSON_URL" 2>/dev/null; }

alive_workers() {
  master_json | tr -d ' \n' | grep -o '"aliveworkers":[0-9]*' | cut -d: -f2 || true
}

launch() {  # name, then the spark-class arguments: starts one daemon with a clean environment
  local name="$1"
  shift
  local log="$DIR/$name.log"
  local local_dir="$DIR/$name/local"
  mkdir -p "$local_dir"
  # env -i: no PYTHONPATH, VIRTUAL_ENV or PYSPARK_* from the caller reach the daemons or their executors
  nohup env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME="${HOME:-/root}" LANG=C.UTF-8 \
    ${JAVA_HOME:+JAVA_HOME="$JAVA_HOME"} SPARK_HOME="$SPARK_HOME" SPARK_LOCAL_IP="$HOST" \
    SPARK_LOCAL_DIRS="$local_dir" SPARK_DAEMON_MEMORY="${CUSTSEG_DAEMON_MEMORY:-512m}" \
    SPARK_LOG_DIR="$DIR" SPARK_PID_DIR="$DIR" \
    "$SPARK_HOME/bin/spark-class" "$@" >"$log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

wait_for() {  # description, command: retry the command until it succeeds or the timeout passes
  local what="$1"
  shift
  local deadline=$((SECONDS + TIMEOUT))
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "local_cluster: timed out after ${TIMEOUT}s waiting for $what; logs in $DIR" >&2
      tail -n 20 "$DIR"/*.log >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

master_up() { master_json | grep -q '"status" *: *"ALIVE"'; }
workers_up() { [ "$(alive_workers)" = "$WORKERS" ]; }

start() {
  if alive "$DIR/master.pid"; then
    echo "local_cluster: master already running (pid $(cat "$DIR/master.pid"))"
  else
    launch master org.apache.spark.deploy.master.Master --host "$HOST" --port "$MASTER_PORT" \
      --webui-port "$MASTER_UI_PORT"
    echo "local_cluster: master $MASTER_URL starting (pid $(cat "$DIR/master.pid"), UI http://$HOST:$MASTER_UI_PORT)"
  fi
  wait_for "the master" master_up
  local i
  for i in $(seq 1 "$WORKERS"); do
    local name="worker-$i"
    if alive "$DIR/$name.pid"; then
      echo "local_cluster: $name already running (pid $(cat "$DIR/$name.pid"))"
      continue
    fi
    mkdir -p "$DIR/$name/work"
    launch "$name" org.apache.spark.deploy.worker.Worker --host "$HOST" --port $((WORKER_PORT + i)) \
      --webui-port $((WORKER_UI_PORT + i)) --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
      --work-dir "$DIR/$name/work" "$MASTER_URL"
    echo "local_cluster: $name starting (pid $(cat "$DIR/$name.pid"), $WORKER_CORES core, $WORKER_MEMORY)"
  done
  wait_for "$WORKERS registered workers" workers_up
  echo "local_cluster: up: $MASTER_URL with $WORKERS workers"
}

stop_one() {  # pid file: TERM the daemon, then KILL it and whatever it had started (its executors)
  local pidfile="$1" pid kids
  [ -f "$pidfile" ] || return 0
  if alive "$pidfile"; then
    pid="$(cat "$pidfile")"
    kids="$(descendants "$pid")"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    # executors normally exit with their worker; any still running is killed by its own id
    for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
    echo "local_cluster: stopped $(basename "$pidfile" .pid) (pid $pid)"
  fi
  rm -f "$pidfile"
}

stop() {
  local f
  for f in "$DIR"/worker-*.pid; do
    [ -e "$f" ] && stop_one "$f"
  done
  stop_one "$DIR/master.pid"
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) master_json || { echo "local_cluster: not running"; exit 1; } ;;
  url) echo "$MASTER_URL" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
