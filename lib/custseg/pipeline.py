"""Each stage end to end: read its input tables, call the pure stage, write its output tables, report.

Stages meet only through Delta tables. Each returns a small dict of what it did (row counts, table
versions) for the run summary and the runs table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg import columns as C
from custseg import features, generate, ingest, sources, tables
from custseg.config import Config

log = logging.getLogger(__name__)

STAGES = ("ingest", "features")


class StageError(RuntimeError):
    """A stage cannot run as asked (its input table is missing, no customers as of the date, ...)."""


@dataclass
class RunContext:
    """What one invocation shares across its stages."""

    cfg: Config
    run_id: str = field(default_factory=lambda: new_run_id())
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def new_run_id() -> str:
    """Sortable, unique: UTC start time plus a random suffix."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@contextmanager
def timed(ctx: RunContext, stage: str) -> Iterator[None]:
    """Log a stage's start and end with its wall time, and keep the time for the summary."""
    log.info("%s: started", stage)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        ctx.timings[stage] = round(time.perf_counter() - t0, 2)
        log.info("%s: finished in %.1f s", stage, ctx.timings[stage])


# --- generate -----------------------------------------------------------------------------------

def run_generate(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Write the synthetic log and its truth file (overwriting both)."""
    cfg = ctx.cfg
    with timed(ctx, "generate"):
        log_df, truth_df = generate.generate(
            spark,
            n_customers=cfg["generate.customers"],
            seed=cfg["generate.seed"],
            start_date=dt.date.fromisoformat(cfg["generate.start_date"]),
            end_date=dt.date.fromisoformat(cfg["generate.end_date"]),
            bad_row_fraction=cfg["generate.bad_row_fraction"],
            partitions=cfg["generate.partitions"],
        )
        obs = Observation("generated")
        log_df = log_df.observe(obs, F.count(F.lit(1)).alias("rows"))
        writer = log_df.write.mode("overwrite")
        if cfg["generate.format"] == "csv":
            writer.option("header", True).csv(cfg["generate.path"])
        else:
            writer.parquet(cfg["generate.path"])
        truth_df.write.mode("overwrite").parquet(cfg["generate.truth_path"])
        result = {"rows": int(obs.get["rows"]), "customers": cfg["generate.customers"],
                  "path": cfg["generate.path"], "truth_path": cfg["generate.truth_path"]}
    log.info("generate: %d lines for %d customers -> %s", result["rows"], result["customers"], result["path"])
    ctx.results["generate"] = result
    return result


# --- ingest -------------------------------------------------------------------------------------

def _ingested_files(spark: SparkSession, cfg: Config) -> set[str]:
    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    if not tables.exists(spark, path):
        return set()
    # bounded by the number of input files, not rows
    return {r[0] for r in tables.read(spark, path).select(C.FILE_PATH).distinct().collect()}


def recover_unfinished_batches(spark: SparkSession, cfg: Config) -> None:
    """Delete rows of ingest batches that never reached the manifest (a run that died mid-way).

    An append writes transactions, then quarantine, then the `ingested_files` manifest; only the
    manifest's commit makes a batch count. Rows of a batch without it are removed here so that its
    files, still unrecorded, are ingested again once and only once.
    """
    manifest = cfg.table_path(C.TABLE_INGESTED_FILES)
    committed = []
    if tables.exists(spark, manifest):
        committed = [r[0] for r in tables.read(spark, manifest).select(C.INGEST_BATCH).distinct().collect()]
    in_list = ", ".join("'" + b.replace("'", "''") + "'" for b in committed)
    condition = f"{C.INGEST_BATCH} NOT IN ({in_list})" if committed else "true"
    for table in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE):
        path = cfg.table_path(table)
        if tables.exists(spark, path):
            tables.delete_where(spark, path, condition)


def run_ingest(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Validate the input, write clean rows to transactions and bad ones to quarantine, record the files."""
    cfg = ctx.cfg
    mode = cfg["ingest.mode"]
    batch = ctx.run_id
    # timestamps without an offset are wall-clock times in input.timezone; dates are taken there too
    spark.conf.set("spark.sql.session.timeZone", cfg["input.timezone"])
    with timed(ctx, "ingest"):
        files: list[str] | None = None
        if mode == "append":
            recover_unfinished_batches(spark, cfg)
            done = _ingested_files(spark, cfg)
            every = sources.list_input_files(spark, cfg)
            files = [f for f in every if f not in done]
            log.info("ingest: %d input files, %d already ingested, %d new", len(every), len(every) - len(files),
                     len(files))
            if not files:
                result = {"mode": mode, "new_files": 0, "input": 0, "clean": 0, "quarantined": 0, "duplicates": 0}
                ctx.results["ingest"] = result
                return result
        raw = sources.read_raw(spark, cfg, files)
        sources.check_mapped_columns(raw, cfg)
        if raw.isEmpty():
            raise sources.InputError(f"input.path: no rows in {cfg['input.path']}; nothing was written")
        input_files = files if files is not None else sorted(raw.inputFiles())
        _check_timestamp_format(spark, cfg)

        cols = cfg.column_map
        validated = raw.transform(ingest.with_canonical_columns(cols, cfg["input.timestamp_format"])).transform(
            ingest.with_quarantine_reasons(cols, ctx.started, dt.timedelta(minutes=cfg["ingest.future_tolerance_minutes"]))
        )
        checked = Observation("checked")
        validated = validated.observe(checked, *ingest.reason_counts())
        kept = Observation("kept")
        clean = (
            validated.transform(ingest.filter_clean)
            .transform(ingest.drop_duplicate_lines(C.ROLE_TRANSACTION_ID in cols))
            .transform(ingest.to_transactions(batch))
            .observe(kept, F.count(F.lit(1)).alias("rows"))
            .repartition(C.TXN_DATE)  # one file per day per write, not one per day per input split
        )
        quarantined = validated.transform(ingest.filter_quarantined).transform(ingest.to_quarantine(batch, ctx.started))
        manifest = spark.createDataFrame(
            [(f, batch, ctx.run_id, ctx.started) for f in input_files],
            f"{C.FILE_PATH} string, {C.INGEST_BATCH} string, {C.RUN_ID} string, {C.INGESTED_AT} timestamp",
        )
        write = tables.overwrite if mode == "overwrite" else tables.append
        write(clean, cfg.table_path(C.TABLE_TRANSACTIONS), [C.TXN_DATE], ctx.run_id)
        write(quarantined, cfg.table_path(C.TABLE_QUARANTINE), [C.QUARANTINE_DATE], ctx.run_id)
        write(manifest, cfg.table_path(C.TABLE_INGESTED_FILES), [], ctx.run_id)

        counts = checked.get
        n_input, n_valid, n_clean = int(counts["input"]), int(counts["valid"]), int(kept.get["rows"])
        by_reason = {code: int(counts[code]) for code in C.REASON_CODES if counts[code]}
        result = {
            "mode": mode,
            "new_files": len(input_files),
            "input": n_input,
            "clean": n_clean,
            "quarantined": n_input - n_valid,
            "duplicates": n_valid - n_clean,
            "quarantine_reasons": by_reason,
            "transactions_version": tables.version(spark, cfg.table_path(C.TABLE_TRANSACTIONS)),
        }
    log.info("ingest: %d input rows = %d clean + %d quarantined + %d duplicates dropped", n_input, n_clean,
             result["quarantined"], result["duplicates"])
    for code, n in by_reason.items():
        log.info("ingest: quarantined %d rows: %s", n, code)
    ctx.results["ingest"] = result
    return result


def _check_timestamp_format(spark: SparkSession, cfg: Config) -> None:
    """A malformed input.timestamp_format fails here, with its key, rather than deep inside a job."""
    from pyspark.errors import PySparkException

    fmt = cfg["input.timestamp_format"]
    if not fmt:
        return
    try:
        spark.range(1).select(F.try_to_timestamp(F.lit("2024-01-01"), F.lit(fmt))).collect()
    except PySparkException as e:
        raise sources.InputError(f"input.timestamp_format: not a valid Spark datetime pattern {fmt!r}: "
                                 f"{str(e).splitlines()[0]}") from None


# --- features -----------------------------------------------------------------------------------

def read_transactions(spark: SparkSession, cfg: Config) -> DataFrame:
    """The transactions table, or a clear error when ingest has not run."""
    path = cfg.table_path(C.TABLE_TRANSACTIONS)
    if not tables.exists(spark, path):
        raise StageError(f"no transactions table at {path}: run `custseg ingest` first")
    return tables.read(spark, path)


def default_as_of(spark: SparkSession, cfg: Config) -> dt.date:
    """The latest transaction date, for runs that do not name one."""
    latest = read_transactions(spark, cfg).agg(F.max(C.TXN_DATE)).first()[0]
    if latest is None:
        raise StageError("the transactions table is empty")
    log.info("as-of date not given: using the latest transaction date, %s", latest)
    return latest


def run_features(spark: SparkSession, ctx: RunContext, as_of: dt.date) -> dict[str, Any]:
    """Compute customer features as of `as_of` and replace that date's partition."""
    cfg = ctx.cfg
    with timed(ctx, "features"):
        tx = read_transactions(spark, cfg).transform(features.filter_as_of(as_of))
        if tx.isEmpty():
            raise StageError(f"no transactions on or before {as_of}: nothing to compute")
        top_categories = features.top_values(tx, C.CATEGORY, cfg["features.top_categories"])
        top_channels = features.top_values(tx, C.CHANNEL, cfg["features.top_channels"])
        log.info("features: as of %s; top categories %s; channels %s", as_of, top_categories or "(none)",
                 top_channels or "(none)")
        obs = Observation("features")
        feats = tx.transform(
            features.customer_features(as_of, top_categories, top_channels, cfg["features.windows_days"])
        ).observe(obs, F.count(F.lit(1)).alias("rows"))
        path = cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
        tables.replace_partition(feats, path, C.AS_OF_DATE, as_of, ctx.run_id)
        result = {"as_of": str(as_of), "customers": int(obs.get["rows"]), "top_categories": top_categories,
                  "top_channels": top_channels, "customer_features_version": tables.version(spark, path)}
    log.info("features: %d customers as of %s", result["customers"], as_of)
    ctx.results["features"] = result
    return result


# --- the run ------------------------------------------------------------------------------------

def table_rows(spark: SparkSession, cfg: Config) -> dict[str, dict[str, Any]]:
    """Row count and version of each custseg table that exists (Delta answers counts from its stats)."""
    out: dict[str, dict[str, Any]] = {}
    for name in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE, C.TABLE_INGESTED_FILES, C.TABLE_CUSTOMER_FEATURES,
                 C.TABLE_SEGMENTS, C.TABLE_SEGMENT_PROFILES, C.TABLE_MODEL_SELECTION, C.TABLE_RUNS):
        path = cfg.table_path(name)
        if tables.exists(spark, path):
            out[name] = {"rows": tables.read(spark, path).count(), "version": tables.version(spark, path)}
    return out


def run_stages(spark: SparkSession, ctx: RunContext, stages: list[str], as_of: dt.date | None) -> dict[str, Any]:
    """Run the named stages in pipeline order and return the run's summary."""
    if "ingest" in stages:
        run_ingest(spark, ctx)
    if as_of is None and any(s != "ingest" for s in stages):
        as_of = default_as_of(spark, ctx.cfg)
    if "features" in stages:
        assert as_of is not None
        run_features(spark, ctx, as_of)
    return {
        "run_id": ctx.run_id,
        "as_of": str(as_of) if as_of else None,
        "stages": stages,
        "timings": ctx.timings,
        "results": ctx.results,
        "output_root": ctx.cfg["output.root"],
        "tables": table_rows(spark, ctx.cfg),
    }
