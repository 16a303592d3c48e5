#!/usr/bin/env bash
# Regenerate docs/report.png, the README's picture of the report, from the built-in sample.
#
# When the output folder has no segment profiles yet, scripts/run_local.sh first runs the whole pipeline on the
# sample. Then `custseg report` (re)builds the report of the latest date from the tables, as its own run: so the page
# shows a completed run (the ingest's input and duplicate rows, every stage's time), which a report written inside
# the run that ingested cannot. Headless Chromium opens the page from disk, with every network request blocked, and
# saves the top of it (the run, the segment cards, the heatmap) as docs/report.png.
#   CUSTSEG_OUTPUT_ROOT  the output folder (default: data/output, conf/local.toml's)
#   CUSTSEG_SHOT_HEIGHT  the picture's height in pixels (default 2500; the width is 1280)
# Extra arguments go to `custseg run` / `custseg report`, e.g. --as-of 2024-12-31.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CUSTSEG_JARS_DIR="${CUSTSEG_JARS_DIR:-$PWD/jars}"
ROOT="${CUSTSEG_OUTPUT_ROOT:-data/output}"
HEIGHT="${CUSTSEG_SHOT_HEIGHT:-2500}"

browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "report_screenshot: chromium is not installed (scripts/setup.sh installs it as root)" >&2; exit 1; }

if [ ! -d "$ROOT/segment_profiles" ]; then
  scripts/run_local.sh --set "output.root=$ROOT" "$@"
fi
"${CUSTSEG_VENV:-.venv}/bin/custseg" report --conf conf/local.toml --set "output.root=$ROOT" "$@"

page="$(ls -d "$ROOT"/reports/as_of_date=*/index.html | sort | tail -n 1)"
[ -f "$page" ] || { echo "report_screenshot: no report under $ROOT/reports" >&2; exit 1; }
mkdir -p docs
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# --virtual-time-budget lets the page's scripts finish drawing before the picture is taken
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --user-data-dir="$tmp/profile" \
  --host-resolver-rules="MAP * ~NOTFOUND" --proxy-server=http://127.0.0.1:9 --proxy-bypass-list="<-loopback>" \
  --disable-background-networking --disable-component-update --window-size="1280,$HEIGHT" \
  --virtual-time-budget=15000 --screenshot="$tmp/report.png" "file://$(realpath "$page")" >"$tmp/chromium.log" 2>&1 ||
  { cat "$tmp/chromium.log" >&2; exit 1; }
mv "$tmp/report.png" docs/report.png
echo "report_screenshot: docs/report.png ($(du -k docs/report.png | cut -f1) kB) from $page"
