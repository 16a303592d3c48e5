#!/usr/bin/env python3
"""Benchmark custseg against reference engines on the same data, and check that they agree.

    .venv/bin/python scripts/bench.py --customers 200000 --repeat 3
    .venv/bin/python scripts/bench.py --customers 1000000 --steps generate,ingest,features,duckdb,check

Steps (all by default, in this order):
  generate  the synthetic log as Parquet (skipped when it already exists)
  ingest    `custseg ingest` (overwrite) into the benchmark's output root, made afresh for each of --repeat runs
  duckdb_ingest  the same ingest in DuckDB SQL over the same raw Parquet (parse, validate, first-failing
            reason, whole-record duplicates, Parquet partitioned by month), --repeat times; then both outputs
            compared: clean and quarantined rows, reasons, per-column sums and distinct counts
  features  `custseg features`, --repeat times (median reported)
  duckdb    the same feature definitions in DuckDB SQL over the raw Parquet, --repeat times
  check     custseg's features vs DuckDB's: row counts, and each column's sum within 1e-6 relative
  kmeans    MLlib KMeans vs scikit-learn's Lloyd on the same scaled matrix, same k and iterations
  segment   `custseg segment` on the features above, --repeat times: the stage, its model selection (on a
            sample of segment.selection_sample_rows customers when there are more) and the chosen model
  e2e       `custseg run` (ingest, features, segment, profile) once, with each stage's time
  sample    `custseg run` on the built-in sample with conf/local.toml, --repeat times, as a developer's first
            run: each stage's time, the chosen model, its silhouette and its adjusted Rand index against
            the planted groups (independent of --customers)

Every timed step runs as its own process; its wall time and the peak resident memory of its whole
process tree (Python, the JVM and any workers), sampled every 0.1 s from /proc, are recorded: private
(RssAnon + RssShmem) and with file-backed pages (+ RssFile: memory-mapped shuffle and input files). Results go
to <data-dir>/results-<customers>.json and a Markdown table on stdout. DuckDB and scikit-learn are
benchmark-only (`pip install -e .[bench]`), not custseg dependencies.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from custseg.core import columns as C

REPO = Path(__file__).resolve().parents[1]
# --set KEY=VALUE settings, handed from the benchmark to its own Spark steps (check, mllib, quality)
SETS_ENV = "CUSTSEG_BENCH_SETS"
AS_OF = "2024-12-31"
STEPS = ("generate", "ingest", "duckdb_ingest", "features", "duckdb", "check", "kmeans", "segment", "e2e")
EXTRA_STEPS = ("sample",)  # not in the default list: it runs on the built-in sample, not on --customers
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- measuring a process tree --------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _status_kb(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("Rss", "VmSize")))
    return {k: int(v.split()[0]) for k, v in fields.items()}


def tree_rss(root: int) -> tuple[int, int]:
    """Resident bytes of `root` and all its descendants: (private, all).

    Private is anonymous plus shared-memory pages (RssAnon + RssShmem): the memory the processes hold.
    All adds file-backed pages (RssFile), which for Spark include memory-mapped shuffle and input files
    that the kernel can drop and reload; reported as well, but not the figure to size a machine by.

    A child between fork (or the JVM's vfork-style spawn, which shares the parent's address space) and exec
    reports its parent's pages as its own: such a child (the same address-space size, VmSize, as its parent)
    is not counted again. Without this, a sample that caught the JVM starting a helper process counted the heap
    twice (25 GiB "private" on a 23.5 GiB machine). PSS from smaps_rollup would be exact, but reading it
    takes about 0.1 s for a 4 GB JVM, too slow to sample every 0.1 s.
    """
    kids, private, total = _children(), 0, 0
    stack: list[tuple[int, int | None]] = [(root, None)]
    while stack:
        pid, parent_key = stack.pop()
        try:
            kb = _status_kb(pid)
        except (OSError, IndexError, ValueError):
            continue
        key = kb.get("VmSize", 0)
        if key != parent_key:
            private += (kb.get("RssAnon", 0) + kb.get("RssShmem", 0)) * 1024
            total += (kb.get("RssAnon", 0) + kb.get("RssShmem", 0) + kb.get("RssFile", 0)) * 1024
        stack.extend((kid, key) for kid in kids.get(pid, []))
    return private, total


# a line of the JVM's log at WARN or above, in custseg's log4j2 layout (lib/custseg/io/log4j2.properties)
JVM_WARNING = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?:WARN|ERROR|FATAL) .*$", re.M)


def jvm_warnings(output: str) -> list[str]:
    """The JVM's warnings in a process's output, without their time stamps."""
    return [m.group(0).split(" ", 2)[2] for m in JVM_WARNING.finditer(output)]


def measure(cmd: list[str], label: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `cmd`, returning wall seconds, peak tree RSS and its output; raise if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})})
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            private, total = tree_rss(proc.pid)
            peak[0], peak[1] = max(peak[0], private), max(peak[1], total)
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}):\n{out[-4000:]}")
    print(f"  {label}: {wall:.1f} s, peak {peak[0] / 2**30:.2f} GiB private ({peak[1] / 2**30:.2f} GiB with "
          f"file-backed pages)", file=sys.stderr, flush=True)
    return {"seconds": round(wall, 2), "peak_rss_gib": round(peak[0] / 2**30, 3),
            "peak_rss_with_files_gib": round(peak[1] / 2**30, 3), "output": out}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"median_seconds": round(statistics.median(r["seconds"] for r in runs), 2),
            "runs_seconds": [r["seconds"] for r in runs],
            "peak_rss_gib": max(r["peak_rss_gib"] for r in runs),
            "peak_rss_with_files_gib": max(r["peak_rss_with_files_gib"] for r in runs),
            # what the JVM printed at WARN or above (the user reads these): each distinct one once
            "jvm_warnings": sorted({w for r in runs for w in jvm_warnings(r["output"])})}


# --- the DuckDB reference ------------------------------------------------------------------------

def delta_live_files(table: str) -> list[str]:
    """The Parquet files of a Delta table's latest version, from its JSON commits (adds minus removes).

    Enough for the benchmark's tables, whose logs keep every commit (Delta keeps JSON commits for 30 days,
    checkpoints or not); DuckDB reads them as plain Parquet. A log whose early commits were cleaned up is
    refused rather than read wrongly.
    """
    from urllib.parse import unquote

    commits = sorted((Path(table) / "_delta_log").glob("*.json"))
    if [int(c.stem) for c in commits] != list(range(len(commits))):
        raise SystemExit(f"{table}: the Delta log does not hold every commit from version 0; "
                         "re-run the ingest step to rebuild the table")
    live: set[str] = set()
    for commit in commits:
        for line in commit.read_text().splitlines():
            action = json.loads(line) if line.strip() else {}
            if "add" in action:
                live.add(unquote(action["add"]["path"]))
            elif "remove" in action:
                live.discard(unquote(action["remove"]["path"]))
    return sorted(str(Path(table) / f) for f in live)


def duckdb_features(table: str, out: str, as_of: str, threads: int, top_categories: int, top_channels: int) -> None:
    """custseg's feature definitions (README, Features) in DuckDB SQL, over the clean lines custseg's features
    stage reads: the transactions table's live Parquet files (same input, same work)."""
    import duckdb

    d = dt.date.fromisoformat(as_of)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}; SET TimeZone = 'UTC'; SET preserve_insertion_order = false")
    files = delta_live_files(table)
    if not files:
        raise SystemExit(f"no transactions table at {table}: run the ingest step first")
    listing = ", ".join(f"'{f}'" for f in files)
    lines = (f"SELECT {C.CUSTOMER_ID} AS c, {C.TRANSACTION_ID} AS t, {C.TXN_DATE} AS d, {C.AMOUNT} AS amount, "
             f"{C.IS_RETURN} AS is_return, {C.CATEGORY} AS cat, {C.CHANNEL} AS ch "
             f"FROM read_parquet([{listing}], hive_partitioning = false) WHERE {C.TXN_DATE} <= DATE '{as_of}'")

    def top(col: str, n: int) -> list[str]:
        q = (f"SELECT {col} FROM ({lines}) WHERE {col} IS NOT NULL AND {col} <> 'other' AND amount > 0 "
             f"GROUP BY {col} ORDER BY sum(amount) DESC, {col} LIMIT {n}")
        return [r[0] for r in con.execute(q).fetchall()]

    tops = [("cat", v) for v in top("cat", top_categories)] + [("ch", v) for v in top("ch", top_channels)]
    share_inv = "".join(f", sum(CASE WHEN {c} = '{v}' AND amount > 0 THEN amount ELSE 0 END) AS s{i}"
                        for i, (c, v) in enumerate(tops))
    share_day = "".join(f", sum(s{i}) AS s{i}" for i in range(len(tops)))
    share_cust = "".join(f", CASE WHEN sum(gross) > 0 THEN sum(s{i}) / sum(gross) END AS share_{c}_{v}"
                         for i, (c, v) in enumerate(tops))

    def before(days: int) -> str:
        return f"DATE '{d - dt.timedelta(days=days)}'"

    windows = "".join(
        f", coalesce(sum(net) FILTER (WHERE d > {before(w)}), 0) AS spend_{w}d"
        f", coalesce(sum(txns) FILTER (WHERE d > {before(w)}), 0) AS n_transactions_{w}d" for w in (30, 90, 365))
    sql = f"""
    WITH inv AS (
      SELECT c, d, t, sum(amount) AS net, sum(CASE WHEN amount > 0 THEN amount ELSE 0 END) AS gross,
             sum(CASE WHEN is_return THEN -amount ELSE 0 END) AS returned, count(*) AS lines,
             count(*) FILTER (WHERE NOT is_return) AS pl, count(*) FILTER (WHERE is_return) AS rl {share_inv}
      FROM ({lines}) GROUP BY c, d, t),
    day AS (
      SELECT c, d, sum(net) AS net, sum(gross) AS gross, sum(returned) AS returned, sum(lines) AS lines,
             sum(CASE WHEN t IS NULL THEN lines ELSE 1 END) AS txns,
             sum(CASE WHEN t IS NULL THEN pl ELSE CAST(pl > 0 AS INT) END) AS ptx,
             sum(CASE WHEN t IS NULL THEN rl ELSE CAST(rl > 0 AS INT) END) AS rtx,
             sum(pl) > 0 AS has_p {share_day}
      FROM inv GROUP BY c, d),
    gaps AS (
      SELECT c, date_diff('day', lag(d) OVER (PARTITION BY c ORDER BY d), d) AS gap FROM day WHERE has_p),
    g AS (SELECT c, avg(gap) AS gap_mean_days, stddev_pop(gap) AS gap_std_days FROM gaps GROUP BY c),
    cust AS (
      SELECT c, min(d) FILTER (WHERE has_p) AS first_d, max(d) FILTER (WHERE has_p) AS last_d,
             count(*) FILTER (WHERE has_p) AS n_days, sum(txns) AS ntx, sum(ptx) AS nbuy, sum(rtx) AS nret,
             sum(lines) AS n_lines, sum(net) AS total_spend, sum(gross) AS gross, sum(returned) AS returned_value,
             coalesce(sum(net) FILTER (WHERE d > {before(90)}), 0) AS last90,
             coalesce(sum(net) FILTER (WHERE d <= {before(90)} AND d > {before(180)}), 0) AS spend_prev_90d
             {windows} {share_cust}
      FROM day GROUP BY c HAVING count(*) FILTER (WHERE has_p) > 0)
    SELECT cust.c AS customer_id, date_diff('day', last_d, DATE '{as_of}') AS recency_days,
           ntx AS n_transactions, nbuy AS n_purchase_transactions, nret AS n_return_transactions, n_lines,
           n_days AS n_purchase_days, n_days - 1 AS repeat_frequency,
           date_diff('day', first_d, DATE '{as_of}') AS tenure_days,
           date_diff('day', first_d, last_d) AS age_at_last_purchase_days,
           total_spend, gross AS gross_spend, returned_value,
           CASE WHEN ntx > 0 THEN total_spend / ntx END AS avg_spend_per_transaction,
           CASE WHEN nbuy > 0 THEN gross / nbuy END AS avg_gross_per_transaction,
           total_spend / n_days AS avg_spend_per_purchase_day, gross / n_days AS avg_gross_per_purchase_day,
           CASE WHEN ntx > 0 THEN nret / ntx END AS return_rate,
           CASE WHEN gross > 0 THEN returned_value / gross END AS returned_share,
           g.gap_mean_days, g.gap_std_days, spend_prev_90d,
           CASE WHEN spend_prev_90d > 1e-6 THEN last90 / spend_prev_90d END AS trend_ratio_90d,
           cust.* EXCLUDE (c, first_d, last_d, n_days, ntx, nbuy, nret, n_lines, total_spend, gross, returned_value,
                      last90, spend_prev_90d)
    FROM cust LEFT JOIN g ON cust.c = g.c
    """
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT PARQUET)")


def _ingest_settings() -> dict[str, Any]:
    """The ingest checks' settings as custseg runs them in the benchmark (its defaults)."""
    from custseg.core import keys

    return {k: keys.SCHEMA[k].default for k in (
        "ingest.missing_id_values", "ingest.earliest_date", "ingest.future_tolerance_minutes",
        "ingest.max_abs_amount", "ingest.max_abs_quantity", "ingest.max_abs_unit_price")}


def _sql_text(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def duckdb_ingest(raw: str, out: str, threads: int) -> None:
    """custseg's ingest in DuckDB SQL over the generated log (`raw`, the generator's Parquet files and column
    names): the same parsing, checks and first-failing reason, the same whole-record duplicates (lines with a
    transaction id; the first file in path order kept), the clean rows in the transactions table's columns and
    the quarantined ones with their reasons and raw values, written as Parquet partitioned by month. One pass:
    both go into one partitioned write (`part=clean` and `part=quarantine`)."""
    import duckdb

    from custseg.sample import generate as G

    s = _ingest_settings()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=s["ingest.future_tolerance_minutes"])
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}; SET TimeZone = 'UTC'; SET preserve_insertion_order = false")
    files = sorted(str(f) for f in Path(raw).glob("*.parquet"))
    if not files:
        raise SystemExit(f"no Parquet files in {raw}: run the generate step first")
    src = f"read_parquet([{', '.join(_sql_text(f) for f in files)}], filename = true)"
    described = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall() if r[0] != "filename"]
    # the source columns as s0, s1, ...: DuckDB's names ignore case, and the log's `Quantity` would be custseg's
    # `quantity`
    cols = [f"s{i}" for i in range(len(described))]
    name = {n: f"s{i}" for i, (n, _) in enumerate(described)}
    types = {f"s{i}": t for i, (_, t) in enumerate(described)}
    placeholders = ", ".join(_sql_text(m.strip().lower()) for m in s["ingest.missing_id_values"])
    edge = r"'^[\s\p{Z}\x{FEFF}]+|[\s\p{Z}\x{FEFF}]+$'"

    def ident(col: str) -> str:  # parse_id: ASCII trimmed of its six space characters, other text as Unicode
        x = f"CAST({col} AS VARCHAR)"
        t = (f"(CASE WHEN strlen({x}) = length({x}) THEN trim({x}, ' \t\n' || chr(11) || chr(12) || chr(13)) "
             f"ELSE nfc_normalize(regexp_replace({x}, {edge}, '', 'g')) END)")
        return (f"CASE WHEN {t} = '' OR lower({t}) IN ({placeholders}) THEN NULL "
                rf"ELSE regexp_replace({t}, '^(\d+)\.0+$', '\1') END")

    def number(col: str) -> str:  # parse_number: a finite double or null
        v = (f"CAST({col} AS DOUBLE)" if types[col] != "VARCHAR"
             else f"TRY_CAST(nullif(trim({col}), '') AS DOUBLE)")
        return f"CASE WHEN isfinite({v}) THEN {v} END"

    def text(col: str) -> str:  # parse_text: Spark's trim (spaces), blank -> null
        return f"nullif(trim(CAST({col} AS VARCHAR)), '')"

    stamp, qty, price = name[G.G_TIMESTAMP], name[G.G_QUANTITY], name[G.G_UNIT_PRICE]
    ts = (f"CAST({stamp} AS TIMESTAMP)" if types[stamp].startswith("TIMESTAMP")
          else f"TRY_CAST({text(stamp)} AS TIMESTAMP)")
    checks = [
        (C.REASON_MISSING_CUSTOMER_ID, f"{C.CUSTOMER_ID} IS NULL"),
        (C.REASON_MISSING_TIMESTAMP, f"{text(stamp)} IS NULL"),
        (C.REASON_UNPARSABLE_TIMESTAMP, f"{text(stamp)} IS NOT NULL AND {C.TXN_TS} IS NULL"),
        (C.REASON_FUTURE_TIMESTAMP, f"{C.TXN_TS} > TIMESTAMP '{now.isoformat(sep=' ')}'"),
        (C.REASON_EARLY_TIMESTAMP, f"CAST({C.TXN_TS} AS DATE) < DATE '{s['ingest.earliest_date']}'"),
        (C.REASON_MISSING_AMOUNT, f"{text(qty)} IS NULL OR {text(price)} IS NULL"),
        (C.REASON_UNPARSABLE_QUANTITY, f"{text(qty)} IS NOT NULL AND {C.QUANTITY} IS NULL"),
        (C.REASON_UNPARSABLE_UNIT_PRICE, f"{text(price)} IS NOT NULL AND {C.UNIT_PRICE} IS NULL"),
        (C.REASON_UNPARSABLE_AMOUNT, f"abs({C.AMOUNT}) = 'inf'::DOUBLE"),
        (C.REASON_IMPLAUSIBLE_AMOUNT, f"abs({C.AMOUNT}) > {s['ingest.max_abs_amount']}"),
        (C.REASON_IMPLAUSIBLE_QUANTITY, f"abs({C.QUANTITY}) > {s['ingest.max_abs_quantity']}"),
        (C.REASON_IMPLAUSIBLE_UNIT_PRICE, f"abs({C.UNIT_PRICE}) > {s['ingest.max_abs_unit_price']}"),
    ]
    reasons = "list_filter([" + ", ".join(f"CASE WHEN {cond} THEN '{code}' END" for code, cond in checks) + \
        "], lambda x: x IS NOT NULL)"
    raw_map = "MAP {" + ", ".join(f"{_sql_text(n)}: CAST({name[n]} AS VARCHAR)" for n, _ in described) + "}"
    source = ", ".join(f'"{n}" AS {name[n]}' for n, _ in described)
    parsed = f"""
      SELECT *, {reasons}[1] AS {C.REASON}, {reasons} AS {C.REASONS}
      FROM (SELECT *, {C.QUANTITY} * {C.UNIT_PRICE} AS {C.AMOUNT}
            FROM (SELECT {", ".join(cols)}, filename,
                         {ident(name[G.G_CUSTOMER])} AS {C.CUSTOMER_ID},
                         {ident(name[G.G_INVOICE])} AS {C.TRANSACTION_ID}, {ts} AS {C.TXN_TS},
                         {number(qty)} AS {C.QUANTITY}, {number(price)} AS {C.UNIT_PRICE},
                         {text(name[G.G_CATEGORY])} AS {C.CATEGORY}, {text(name[G.G_CHANNEL])} AS {C.CHANNEL},
                         {text(name[G.G_COUNTRY])} AS {C.COUNTRY}
                  FROM (SELECT {source}, filename FROM {src})))"""
    # a repeat: a clean line with a transaction id whose whole source record an earlier line (file order) has
    kept = f"""
      SELECT * FROM ({parsed})
      QUALIFY {C.REASON} IS NOT NULL OR {C.TRANSACTION_ID} IS NULL
           OR row_number() OVER (PARTITION BY {C.REASON} IS NULL, {", ".join(cols)} ORDER BY filename) = 1"""
    day = f"CAST({C.TXN_TS} AS DATE)"
    sql = f"""
      SELECT CASE WHEN {C.REASON} IS NULL THEN 'clean' ELSE 'quarantine' END AS part,
             {C.CUSTOMER_ID}, {C.TRANSACTION_ID}, {C.TXN_TS}, {C.AMOUNT}, {C.QUANTITY}, {C.UNIT_PRICE},
             {C.AMOUNT} < 0 AS {C.IS_RETURN}, {C.CATEGORY}, {C.CHANNEL}, {C.COUNTRY}, filename AS {C.SOURCE_FILE},
             'duckdb' AS {C.INGEST_BATCH}, {day} AS {C.TXN_DATE},
             CASE WHEN {C.REASON} IS NULL THEN date_trunc('month', {day}) END AS {C.TXN_MONTH},
             {C.REASON}, {C.REASONS}, CASE WHEN {C.REASON} IS NOT NULL THEN {raw_map} END AS {C.RAW_RECORD}
      FROM ({kept})"""
    con.execute(f"COPY ({sql}) TO {_sql_text(out)} (FORMAT PARQUET, PARTITION_BY (part, {C.TXN_MONTH}), "
                "OVERWRITE_OR_IGNORE)")


def ingest_agreement(transactions: str, quarantine: str, duck: str, lines: int | None) -> dict[str, Any]:
    """custseg's transactions and quarantine tables (their live files) against DuckDB's ingest output: rows,
    reasons, and per-column sums and distinct counts of the clean rows."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'; SET enable_progress_bar = false")

    def read(files: list[str]) -> str:
        return f"read_parquet([{', '.join(_sql_text(f) for f in files)}], hive_partitioning = false)"

    facts = (f"count(*), count(DISTINCT {C.CUSTOMER_ID}), count(DISTINCT {C.TRANSACTION_ID}), sum({C.AMOUNT}), "
             f"sum({C.QUANTITY}), count({C.CATEGORY}), min({C.TXN_TS}), max({C.TXN_TS}), "
             f"count(DISTINCT {C.TXN_DATE}), count_if({C.IS_RETURN}), count(DISTINCT {C.SOURCE_FILE})")
    names = ["rows", "customers", "transactions", "amount", "quantity", "category", "first", "last", "days",
             "returns", "files"]
    ours_files = delta_live_files(transactions)
    q_files = delta_live_files(quarantine)
    theirs_clean = read([duck + "/part=clean/**/*.parquet"])
    ours = con.execute(f"SELECT {facts} FROM {read(ours_files)}").fetchone()
    theirs = con.execute(f"SELECT {facts} FROM {theirs_clean}").fetchone()
    reasons_q = f"SELECT {C.REASON}, count(*) FROM {{}} GROUP BY 1 ORDER BY 1"
    ours_reasons = con.execute(reasons_q.format(read(q_files))).fetchall() if q_files else []
    duck_q = list(Path(duck).glob("part=quarantine/**/*.parquet"))
    theirs_reasons = con.execute(reasons_q.format(read([str(f) for f in duck_q]))).fetchall() if duck_q else []
    assert ours is not None and theirs is not None
    problems = []
    for n, a, b in zip(names, ours, theirs, strict=True):
        if isinstance(a, float) and isinstance(b, float):
            if abs(a - b) > 1e-9 * max(abs(a), abs(b), 1.0):
                problems.append(f"{n}: {a!r} vs {b!r}")
        elif a != b:
            problems.append(f"{n}: {a!r} vs {b!r}")
    # the clean rows themselves, as multisets of their business columns
    business = ", ".join((C.CUSTOMER_ID, C.TRANSACTION_ID, C.TXN_TS, C.AMOUNT, C.QUANTITY, C.UNIT_PRICE, C.CATEGORY,
                          C.CHANNEL, C.COUNTRY, C.TXN_DATE))
    ours_rows = f"SELECT {business} FROM {read(ours_files)}"
    theirs_rows = f"SELECT {business} FROM {theirs_clean}"
    for label, a, b in (("only in custseg's", ours_rows, theirs_rows), ("only in DuckDB's", theirs_rows, ours_rows)):
        row = con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone()
        if row is not None and row[0]:
            problems.append(f"{row[0]} clean rows {label} output")
    if ours_reasons != theirs_reasons:
        problems.append(f"quarantine reasons: {ours_reasons} vs {theirs_reasons}")
    quarantined = sum(n for _, n in ours_reasons)
    return {"clean_rows": ours[0], "quarantined": quarantined,
            "duplicates": None if lines is None else lines - ours[0] - quarantined,
            "compared": names + ["quarantine reasons", "clean rows (multiset)"], "agree": not problems,
            "problems": problems}


# --- the scikit-learn reference ------------------------------------------------------------------

def sklearn_kmeans(matrix: str, k: int, iterations: int, seed: int, out: str) -> None:
    """Lloyd's KMeans on the exported scaled matrix, one start; fit time only (loading excluded)."""
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans

    col = pq.read_table(matrix).column("x").combine_chunks()
    x = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(col), -1)
    t0 = time.perf_counter()
    model = KMeans(n_clusters=k, init="random", n_init=1, max_iter=iterations, tol=0.0, algorithm="lloyd",
                   random_state=seed).fit(x)
    seconds = time.perf_counter() - t0
    Path(out).write_text(json.dumps({"fit_seconds": seconds, "iterations": int(model.n_iter_),
                                     "seconds_per_iteration": seconds / max(int(model.n_iter_), 1),
                                     "cost": float(model.inertia_), "rows": int(x.shape[0]), "dims": int(x.shape[1])}))


# --- steps that need Spark, run in their own process ----------------------------------------------

def _spark(driver_memory: str):  # type: ignore[no-untyped-def]
    from custseg.core import config
    from custseg.io import session

    extra = json.loads(os.environ.get(SETS_ENV, "[]"))
    cfg = config.load(REPO / "conf" / "local.toml",
                      ["spark.log_level=ERROR", f"spark.driver_memory={driver_memory}", *extra])
    return session.build_session(cfg, "bench")


def check_agreement(out_root: str, duck: str, as_of: str, result: str, driver_memory: str) -> None:
    """Row counts and per-column sums (and null counts) of custseg's features vs DuckDB's."""
    from pyspark.sql import functions as F

    spark = _spark(driver_memory)
    ours = spark.read.format("delta").load(f"{out_root}/customer_features").filter(F.col("as_of_date") == as_of)
    theirs = spark.read.parquet(duck)
    numeric = [f.name for f in theirs.schema.fields if f.dataType.typeName() in ("long", "integer", "double")
               and not f.name.startswith("share_")]
    shares = [f.name for f in theirs.schema.fields if f.name.startswith("share_")]

    def ours_col(name: str):  # type: ignore[no-untyped-def]
        if name.startswith("share_cat_"):
            return F.col("category_spend_share")[name.removeprefix("share_cat_")]
        if name.startswith("share_ch_"):
            return F.col("channel_spend_share")[name.removeprefix("share_ch_")]
        return F.col(name)

    def sums(df, col):  # type: ignore[no-untyped-def]
        return ([F.sum(col(n).cast("double")).alias(f"s_{n}") for n in numeric + shares]
                + [F.count_if(col(n).isNull()).alias(f"n_{n}") for n in numeric + shares]
                + [F.count(F.lit(1)).alias("rows")])

    a = ours.agg(*sums(ours, ours_col)).first().asDict()
    b = theirs.agg(*sums(theirs, F.col)).first().asDict()
    problems = []
    if a["rows"] != b["rows"]:
        problems.append(f"rows {a['rows']} vs {b['rows']}")
    for n in numeric + shares:
        x, y = a[f"s_{n}"] or 0.0, b[f"s_{n}"] or 0.0
        if abs(x - y) > 1e-6 * max(abs(x), abs(y), 1e-12):
            problems.append(f"sum {n}: {x!r} vs {y!r}")
        if a[f"n_{n}"] != b[f"n_{n}"]:
            problems.append(f"nulls {n}: {a[f'n_{n}']} vs {b[f'n_{n}']}")
    Path(result).write_text(json.dumps({"rows": a["rows"], "columns_compared": len(numeric + shares),
                                        "agree": not problems, "problems": problems}))


def mllib_kmeans(out_root: str, as_of: str, k: int, iterations: int, seed: int, matrix_out: str, result: str,
                 driver_memory: str) -> None:
    """Scale the default model inputs once, export the matrix for scikit-learn, then time MLlib on it."""
    from pyspark.ml.clustering import BisectingKMeans, KMeans
    from pyspark.ml.evaluation import ClusteringEvaluator
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from custseg.core import columns as C
    from custseg.stages.segment import preprocess

    spark = _spark(driver_memory)
    feats = spark.read.format("delta").load(f"{out_root}/customer_features").filter(F.col("as_of_date") == as_of)
    specs = preprocess.model_inputs(list(preprocess.DEFAULT_FEATURES), {})
    n = feats.count()
    parts = max(spark.sparkContext.defaultParallelism, n // 250_000)
    m = preprocess.preprocessing_pipeline(specs).fit(feats).transform(feats).select(C.SCALED_VECTOR) \
        .coalesce(parts).cache()
    m.count()
    m.select(vector_to_array(C.SCALED_VECTOR).alias("x")).write.mode("overwrite").parquet(matrix_out)
    res: dict[str, Any] = {"rows": n, "dims": len(specs), "partitions": parts}
    def kmeans(**kw: Any) -> Any:
        return KMeans(k=k, maxIter=iterations, tol=0.0, seed=seed, featuresCol=C.SCALED_VECTOR, **kw)

    for name, est in [
        ("kmeans_random_auto", kmeans(initMode="random")),
        ("kmeans_random_row", kmeans(initMode="random", solver="row")),
        ("kmeans_random_block", kmeans(initMode="random", solver="block")),
        ("kmeans_parallel_auto", kmeans()),  # MLlib's defaults: k-means|| initialisation, solver auto
        ("kmeans_parallel_block", kmeans(solver="block")),  # what custseg's segment stage runs
        # the same with one iteration: its fixed cost (conversion to blocks, k-means|| initialisation, count),
        # so that (fit - fixed) / (iterations - 1) is the cost of one more iteration
        ("kmeans_parallel_block_1it", KMeans(k=k, maxIter=1, tol=0.0, seed=seed, solver="block",
                                             featuresCol=C.SCALED_VECTOR)),
        ("bisecting_kmeans", BisectingKMeans(k=k, maxIter=iterations, seed=seed, featuresCol=C.SCALED_VECTOR)),
    ]:
        t0 = time.perf_counter()
        model = est.fit(m)
        secs = time.perf_counter() - t0
        its = int(getattr(model.summary, "numIter", iterations))
        res[name] = {"fit_seconds": round(secs, 3), "cost": float(model.summary.trainingCost), "iterations": its,
                     "seconds_per_iteration": round(secs / max(its, 1), 4)}
        print(f"  mllib {name}: {res[name]}", file=sys.stderr, flush=True)
    full, one = res["kmeans_parallel_block"], res["kmeans_parallel_block_1it"]
    if full["iterations"] > 1:
        res["block_fixed_seconds"] = one["fit_seconds"]
        res["block_seconds_per_extra_iteration"] = round(
            (full["fit_seconds"] - one["fit_seconds"]) / (full["iterations"] - 1), 4)
    t0 = time.perf_counter()
    pred = KMeans(k=k, maxIter=iterations, initMode="random", seed=seed,
                  featuresCol=C.SCALED_VECTOR).fit(m).transform(m)
    pred.cache().count()
    t0 = time.perf_counter()
    sil = ClusteringEvaluator(featuresCol=C.SCALED_VECTOR).evaluate(pred)
    res["silhouette_seconds"] = round(time.perf_counter() - t0, 3)
    res["silhouette"] = sil
    Path(result).write_text(json.dumps(res))


# --- the driver ------------------------------------------------------------------------------------

def _custseg(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "custseg"), *args]


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def v(p: str) -> str | None:
        try:
            return version(p)
        except PackageNotFoundError:
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "python": platform.python_version(),
            "java": java, "pyspark": v("pyspark"), "delta-spark": v("delta-spark"), "duckdb": v("duckdb"),
            "scikit-learn": v("scikit-learn"), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--customers", type=int, default=20_000, help="customers to generate (about 54 lines each)")
    p.add_argument("--activity", type=float, default=1.0,
                   help="generate.activity: 1 gives about 54 lines per customer, 0.37 about 20")
    p.add_argument("--categories", type=int, default=8, help="generate.categories (default %(default)s)")
    p.add_argument("--top-categories", type=int, default=10,
                   help="features.top_categories, in custseg and in the DuckDB reference (default %(default)s)")
    p.add_argument("--data-dir", default="data/bench", help="where data and results go (default %(default)s)")
    p.add_argument("--steps", default=",".join(STEPS),
                   help="comma-separated subset of: " + ", ".join(STEPS + EXTRA_STEPS))
    p.add_argument("--repeat", type=int, default=3, help="runs of each timed feature step (median reported)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="DuckDB threads (default: cores)")
    p.add_argument("--k", type=int, default=6)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--driver-memory", default="12g", help="Spark driver memory (local mode: the whole JVM)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a custseg setting for every Spark process the benchmark starts (custseg's and its own "
                   "Spark steps), after the benchmark's own; repeatable, e.g. --set spark.conf.spark.sql."
                   "adaptive.enabled=false")
    p.add_argument("--internal", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.internal:
        return _internal(a.internal)
    if bad_sets := [x for x in a.set if "=" not in x]:
        p.error(f"--set: expected KEY=VALUE, got {', '.join(bad_sets)}")
    steps = [s.strip() for s in a.steps.split(",") if s.strip()]
    if bad := [s for s in steps if s not in STEPS + EXTRA_STEPS]:
        p.error(f"--steps: unknown step(s) {', '.join(bad)}")
    data = (REPO / a.data_dir).resolve()
    # the data's name says what was generated; the default shape keeps its old names
    tag = f"{a.customers}c" + (f"_a{a.activity:g}" if a.activity != 1.0 else "") + (
        f"_{a.categories}cat" if a.categories != 8 else "")
    raw, out = data / f"raw_{tag}", data / f"out_{tag}"
    data.mkdir(parents=True, exist_ok=True)
    sets = [f"--set=input.path={raw}", "--set=input.format=parquet", f"--set=output.root={out}",
            f"--set=spark.driver_memory={a.driver_memory}",  # the log level as a user has it: its warnings are counted
            f"--set=generate.path={raw}", f"--set=generate.truth_path={data / f'truth_{tag}'}",
            "--set=generate.format=parquet", f"--set=generate.customers={a.customers}",
            f"--set=generate.activity={a.activity}", f"--set=generate.categories={a.categories}",
            f"--set=features.top_categories={a.top_categories}", "--set=generate.bad_row_fraction=0",
            *[f"--set={x}" for x in a.set]]
    os.environ[SETS_ENV] = json.dumps(a.set)  # the benchmark's own Spark steps, run as child processes
    results: dict[str, Any] = {"machine": machine(), "customers": a.customers, "activity": a.activity,
                               "categories": a.categories, "top_categories": a.top_categories, "as_of": AS_OF,
                               "sets": a.set, "steps": {}}
    me = [sys.executable, str(Path(__file__).resolve())]
    print(f"benchmark: {a.customers:,} customers in {data}", file=sys.stderr)
    if "generate" in steps and not raw.exists():
        r = measure(_custseg("generate", *sets), "generate")
        results["steps"]["generate"] = {k: v for k, v in r.items() if k != "output"}
    results["lines"] = _count_lines(raw)
    if "ingest" in steps:
        runs = []
        for i in range(a.repeat):
            if out.exists():
                shutil.rmtree(out)  # every run into a fresh output root, as the first ingest of a log
            runs.append(measure(_custseg("ingest", *sets), f"custseg ingest #{i + 1}"))
        results["steps"]["ingest"] = {**median_of(runs), "stage_seconds": [_stage_seconds(r["output"]).get("ingest")
                                                                           for r in runs]}
    if "duckdb_ingest" in steps:
        duck_in = data / f"duckdb_ingest_{tag}"
        runs = []
        for i in range(a.repeat):
            if duck_in.exists():
                shutil.rmtree(duck_in)
            runs.append(measure([*me, "--internal", "duckdb_ingest", str(raw), str(duck_in), str(a.threads)],
                                f"duckdb ingest #{i + 1}"))
        results["steps"]["duckdb_ingest"] = median_of(runs)
        results["ingest_agreement"] = ingest_agreement(str(out / C.TABLE_TRANSACTIONS), str(out / C.TABLE_QUARANTINE),
                                                       str(duck_in), results["lines"])
        if not results["ingest_agreement"]["agree"]:
            print(f"INGEST DISAGREEMENT: {results['ingest_agreement']['problems'][:10]}", file=sys.stderr)
    if "features" in steps:
        runs = [measure(_custseg("features", *sets, f"--as-of={AS_OF}"), f"custseg features #{i + 1}")
                for i in range(a.repeat)]
        results["steps"]["features"] = {**median_of(runs),
                                        "stage_seconds": [_stage_seconds(r["output"]).get("features") for r in runs]}
    duck = data / f"duckdb_features_{tag}.parquet"
    if "duckdb" in steps:
        runs = [measure([*me, "--internal", "duckdb", str(out / C.TABLE_TRANSACTIONS), str(duck), AS_OF, str(a.threads),
                         str(a.top_categories)],
                        f"duckdb features #{i + 1}") for i in range(a.repeat)]
        results["steps"]["duckdb_features"] = median_of(runs)
    if "check" in steps:
        res = data / "check.json"
        measure([*me, "--internal", "check", str(out), str(duck), AS_OF, str(res), a.driver_memory], "agreement check")
        results["agreement"] = json.loads(res.read_text())
        if not results["agreement"]["agree"]:
            print(f"DISAGREEMENT: {results['agreement']['problems'][:10]}", file=sys.stderr)
    if "kmeans" in steps:
        res, matrix, sk = data / "mllib.json", data / f"matrix_{tag}.parquet", data / "sklearn.json"
        r = measure([*me, "--internal", "mllib", str(out), AS_OF, str(a.k), str(a.iterations), str(a.seed),
                     str(matrix), str(res), a.driver_memory], "mllib kmeans")
        results["steps"]["mllib"] = {**json.loads(res.read_text()), "process_peak_rss_gib": r["peak_rss_gib"]}
        r = measure([*me, "--internal", "sklearn", str(matrix), str(a.k), str(a.iterations), str(a.seed), str(sk)],
                    "sklearn kmeans")
        results["steps"]["sklearn"] = {**json.loads(sk.read_text()), "process_peak_rss_gib": r["peak_rss_gib"]}
    if "segment" in steps:
        # segment.mode=fit: every repeat selects and fits (auto would score with the first repeat's model)
        runs = [measure(_custseg("segment", *sets, "--set", "segment.mode=fit", f"--as-of={AS_OF}"),
                        f"custseg segment #{i + 1}")
                for i in range(a.repeat)]
        results["steps"]["segment"] = {**median_of(runs), **_segment_facts(runs)}
    if "sample" in steps:
        results["steps"]["sample"] = sample_runs(me, data, a.repeat, a.set)
    if "e2e" in steps:
        r = measure(_custseg("run", *sets, f"--as-of={AS_OF}"), "custseg run (end to end)")
        results["steps"]["e2e"] = {"seconds": r["seconds"], "peak_rss_gib": r["peak_rss_gib"],
                                   "peak_rss_with_files_gib": r["peak_rss_with_files_gib"],
                                   "stage_seconds": _stage_seconds(r["output"])}
    _ratios(results)
    path = data / f"results-{tag}.json"
    path.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"results: {path}", file=sys.stderr)
    agree = all(results.get(k, {}).get("agree", True) for k in ("agreement", "ingest_agreement"))
    return 0 if agree else 1


def _segment_facts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """From each run's log: the stage time, the model selection's time, and the chosen model."""
    facts: dict[str, list[Any]] = {"segment_stage_seconds": [], "selection_seconds": [], "chosen": []}
    for r in runs:
        out = r["output"]
        facts["segment_stage_seconds"].append(_stage_seconds(out).get("segment"))
        sel = re.search(r"model selection: \d+ candidates on (\d+) customers in ([\d.]+) s", out)
        facts["selection_seconds"].append(float(sel.group(2)) if sel else None)
        facts["selection_customers"] = [int(sel.group(1))] if sel else []
        chosen = re.search(r"segment: (\w+) k=(\d+), silhouette ([\d.]+)", out)
        facts["chosen"].append(chosen.groups() if chosen else None)
    medians = {f"median_{k}": statistics.median(v) for k, v in facts.items()
               if k.endswith("seconds") and v and None not in v}
    return {**facts, **medians}


def sample_runs(me: list[str], data: Path, repeat: int, extra: list[str]) -> dict[str, Any]:
    """`custseg run` on the built-in sample, as README's first command runs it, into its own output root
    (`extra`: the benchmark's --set settings)."""
    out = data / "sample_out"
    sets = [f"--set=output.root={out}", *[f"--set={x}" for x in extra]]
    if not (REPO / "data" / "sample" / "transactions.csv").exists():  # set-up, not timed
        measure(_custseg("generate", "--conf", "conf/local.toml"), "generate the built-in sample")
    runs = []
    for i in range(repeat):
        if out.exists():
            shutil.rmtree(out)  # a developer's first run: nothing there before
        runs.append(measure(_custseg("run", "--conf", "conf/local.toml", "--generate-if-missing", *sets),
                            f"custseg run, built-in sample #{i + 1}"))
    stages = [_stage_seconds(r["output"]) for r in runs]
    res = data / "sample_quality.json"
    measure([*me, "--internal", "quality", str(out), "data/sample/truth", str(res)], "sample quality")
    return {**median_of(runs), "stage_seconds": stages, **_segment_facts(runs),
            "median_stage_seconds": {s: statistics.median(x[s] for x in stages) for s in stages[0]},
            "quality": json.loads(res.read_text())}


def sample_quality(out_root: str, truth: str, result: str) -> None:
    """The sample run's chosen model: its silhouette (from the runs table) and its adjusted Rand index
    against the generator's planted groups."""
    from custseg.stages.segment.validity import adjusted_rand_index

    spark = _spark("2g")
    runs = spark.read.format("delta").load(f"{out_root}/runs").orderBy("started_at").collect()[-1]
    cont = (spark.read.format("delta").load(f"{out_root}/segments").join(spark.read.parquet(truth), "customer_id")
            .groupBy("segment_id", "planted_group").count().collect())
    Path(result).write_text(json.dumps({
        "algorithm": runs["algorithm"], "k": runs["k"], "silhouette": runs["silhouette"],
        "adjusted_rand_index": adjusted_rand_index([(r[0], r[1], r[2]) for r in cont])}))


def _internal(args: list[str]) -> int:
    kind, rest = args[0], args[1:]
    if kind == "duckdb_ingest":
        duckdb_ingest(rest[0], rest[1], int(rest[2]))
    elif kind == "duckdb":
        duckdb_features(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]), 5)
    elif kind == "check":
        check_agreement(*rest)
    elif kind == "mllib":
        mllib_kmeans(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]), rest[5], rest[6], rest[7])
    elif kind == "quality":
        sample_quality(*rest)
    elif kind == "sklearn":
        sklearn_kmeans(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4])
    else:
        raise SystemExit(f"unknown internal step {kind}")
    return 0


def _count_lines(raw: Path) -> int | None:
    import pyarrow.parquet as pq

    files = sorted(raw.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files) if files else None


def _stage_seconds(output: str) -> dict[str, float]:
    """Every stage's seconds from the summary `custseg run` prints (a line `  <stage>  <seconds> s  <what>`)."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^  ([a-z_]+) +([\d.]+) s  ", output, re.M)}


def _ratios(r: dict[str, Any]) -> None:
    s = r["steps"]
    if "features" in s and "duckdb_features" in s:
        r["features_vs_duckdb"] = round(s["features"]["median_seconds"] / s["duckdb_features"]["median_seconds"], 2)
    if "ingest" in s and "duckdb_ingest" in s:
        r["ingest_vs_duckdb"] = round(s["ingest"]["median_seconds"] / s["duckdb_ingest"]["median_seconds"], 2)
    if "ingest" in s and "features" in s:
        r["ingest_vs_features"] = round(s["ingest"]["median_seconds"] / s["features"]["median_seconds"], 2)
    if "mllib" in s and "sklearn" in s:
        m, k = s["mllib"], s["sklearn"]
        r["mllib_vs_sklearn"] = {name: round(m[name]["fit_seconds"] / k["fit_seconds"], 1)
                                 for name in m if isinstance(m[name], dict) and "fit_seconds" in m[name]}
        # the iteration counts differ (each stops when its centres stop moving): compare per iteration too
        r["mllib_vs_sklearn_per_iteration"] = {
            name: round(m[name]["seconds_per_iteration"] / k["seconds_per_iteration"], 1)
            for name in m if isinstance(m[name], dict) and "seconds_per_iteration" in m[name]}

def markdown(r: dict[str, Any]) -> str:
    s = r["steps"]
    rows = [f"| {r['customers']:,} customers, {r.get('lines') or 0:,} lines | seconds | peak GiB |", "|---|---|---|"]
    for name, label in [("generate", "generate"), ("ingest", "custseg ingest (median)"),
                        ("duckdb_ingest", "DuckDB ingest (median)"),
                        ("features", "custseg features (median)"),
                        ("duckdb_features", "DuckDB features (median)"), ("e2e", "custseg run, end to end")]:
        if name in s:
            secs = s[name].get("median_seconds", s[name].get("seconds"))
            rows.append(f"| {label} | {secs} | {s[name]['peak_rss_gib']} |")
    if "segment" in s:
        seg = s["segment"]
        rows.append(f"| custseg segment (median; stage {seg.get('median_segment_stage_seconds')} s, model selection "
                    f"{seg.get('median_selection_seconds')} s on {seg.get('selection_customers')} customers; "
                    f"chosen {seg['chosen'][0]}) | {seg['median_seconds']} | {seg['peak_rss_gib']} |")
    if "sample" in s:
        sm = s["sample"]
        rows.append(f"| built-in sample, custseg run (median; stages {sm['median_stage_seconds']}; "
                    f"model selection {sm.get('median_selection_seconds')} s; {sm['quality']}) | "
                    f"{sm['median_seconds']} | {sm['peak_rss_gib']} |")
    if "mllib" in s:
        for name, v in s["mllib"].items():
            if isinstance(v, dict):
                rows.append(f"| MLlib {name} ({v['iterations']} it., {v['seconds_per_iteration']} s/it.) | "
                            f"{v['fit_seconds']} | |")
    if "sklearn" in s:
        rows.append(f"| scikit-learn Lloyd ({s['sklearn']['iterations']} it.) | "
                    f"{round(s['sklearn']['fit_seconds'], 3)} | {s['sklearn']['process_peak_rss_gib']} |")
    ratios = [f"{label}: {r[key]}x" for key, label in (
        ("ingest_vs_duckdb", "ingest / DuckDB ingest"), ("ingest_vs_features", "ingest / features"),
        ("features_vs_duckdb", "features / DuckDB")) if key in r]
    if ratios:
        rows.append("\n" + "; ".join(ratios))
    if "mllib_vs_sklearn" in r:
        rows.append(f"MLlib / scikit-learn: {r['mllib_vs_sklearn']}")
        rows.append(f"MLlib / scikit-learn per iteration: {r['mllib_vs_sklearn_per_iteration']}")
        if "block_seconds_per_extra_iteration" in s["mllib"]:
            rows.append(f"MLlib block solver: {s['mllib']['block_fixed_seconds']} s fixed per fit, "
                        f"{s['mllib']['block_seconds_per_extra_iteration']} s per further iteration")
    if "ingest_agreement" in r:
        ia = r["ingest_agreement"]
        rows.append(f"ingest agreement: {'yes' if ia['agree'] else 'NO'} ({ia['clean_rows']:,} clean rows, "
                    f"{ia['quarantined']:,} quarantined, {ia['duplicates']} duplicates; {len(ia['compared'])} facts)")
    if "agreement" in r:
        rows.append(f"agreement: {'yes' if r['agreement']['agree'] else 'NO'} ({r['agreement']['columns_compared']} "
                    f"columns, {r['agreement']['rows']:,} customers)")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
