"""Runs stages: resolves the as-of date once, runs the steps in registry order, times them, records lineage
and the run (also a failed one), and returns a typed summary.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custseg import __version__, pipeline
from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config, redact_text
from custseg.core.errors import StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, lineage

log = logging.getLogger(__name__)


def new_run_id() -> str:
    """Sortable, unique: UTC start time plus a random suffix."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass
class RunSummary:
    """What one invocation did: per stage its time and result, then the tables it wrote."""

    run_id: str
    started: dt.datetime
    output_root: str
    stages: list[str] = field(default_factory=list)
    as_of: dt.date | None = None
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    tables: dict[str, dict[str, int | None]] = field(default_factory=dict)  # filled by the CLI: `table_rows`


def default_as_of(spark: SparkSession, cfg: Config) -> dt.date:
    """The latest transaction date, for runs that do not name one."""
    path = cfg.table_path(C.TABLE_TRANSACTIONS)
    if not delta.exists(spark, path):
        raise StageError(f"no transactions table at {path}: run `custseg ingest` first")
    row = delta.read(spark, path).agg(F.max(C.TXN_DATE)).first()
    if row is None or row[0] is None:
        raise StageError("the transactions table is empty")
    log.info("as-of date not given: using the latest transaction date, %s", row[0])
    return row[0]  # type: ignore[no-any-return]


def run(spark: SparkSession, cfg: Config, stages: list[str] | tuple[str, ...], as_of: dt.date | None,
        run_id: str | None = None) -> RunSummary:
    """Run the named stages in pipeline order; record the run (succeeded or failed); return its summary.

    The as-of date is decided once, before the first dated stage: the one given, or the latest
    transaction date (after this run's ingest, when it has one).
    """
    summary = RunSummary(run_id or new_run_id(), dt.datetime.now(dt.UTC), str(cfg["output.root"]))
    summary.stages = [s.name for s in pipeline.in_order(stages)]
    log.info("run id %s: %s", summary.run_id, ", ".join(summary.stages))
    try:
        for stage in pipeline.in_order(stages):
            if stage.dated and as_of is None:
                as_of = default_as_of(spark, cfg)
            summary.as_of = as_of
            ctx = StageContext(cfg, summary.run_id, summary.started, as_of if stage.dated else None)
            log.info("%s: started", stage.name)
            t0 = time.perf_counter()
            try:
                result = stage.step(spark, ctx)
            finally:
                summary.timings[stage.name] = round(time.perf_counter() - t0, 2)
            log.info("%s: finished in %.1f s", stage.name, summary.timings[stage.name])
            summary.results[stage.name] = result
            if result.writes:
                lineage.record(spark, cfg, lineage.Entry(stage.name, summary.run_id, ctx.as_of, result.reads,
                                                         result.writes))
    except Exception as e:
        try:
            record_run(spark, cfg, summary, e)
        except Exception:  # the original failure matters more than its record
            log.warning("could not record the failed run", exc_info=True)
        raise
    record_run(spark, cfg, summary, None)
    return summary


def record_run(spark: SparkSession, cfg: Config, summary: RunSummary, error: BaseException | None) -> None:
    """Append one row describing this run (also for failed runs) to the runs table."""
    versions = {name: v for name in (C.TABLE_TRANSACTIONS, C.TABLE_CUSTOMER_FEATURES, C.TABLE_SEGMENTS,
                                     C.TABLE_SEGMENT_PROFILES)
                if (v := delta.version(spark, cfg.table_path(name))) is not None}
    counts: dict[str, int] = {}
    fields: dict[str, Any] = {}
    details: dict[str, str] = {}
    for result in summary.results.values():
        counts.update(result.counts())
        fields.update(result.run_fields())
        details.update(result.details())
    # the error's first line, without secrets, URI credentials or raw control characters (see redact_text)
    message = (redact_text(str(error), cfg).splitlines() or [""])[0][:1000] if error else None
    row = (summary.run_id, summary.as_of, summary.started, dt.datetime.now(dt.UTC),
           "failed" if error else "succeeded", message,
           summary.stages, json.dumps(cfg.masked(), default=str), cfg.digest(), cfg["run.seed"], versions, counts,
           fields.get("algorithm"), fields.get("k"), fields.get("silhouette"), fields.get("cost"),
           {k: float(v) for k, v in summary.timings.items()}, fields.get("model_path"), __version__, details)
    df = spark.createDataFrame([row], catalog.RUNS_SCHEMA)
    delta.append(df, cfg.table_path(C.TABLE_RUNS), C.TABLE_RUNS, summary.run_id)


def table_rows(spark: SparkSession, cfg: Config, stages: list[str]) -> dict[str, dict[str, int | None]]:
    """Row count and version of each table `stages` write, and of runs.

    Delta answers the counts from its statistics; each table still costs a log read and a small Spark job,
    latency rather than work, so up to four tables are counted at once. A one-stage run reports only its own
    tables.
    """
    names = [t for s in pipeline.in_order(stages) for t in s.writes] + [C.TABLE_RUNS]

    def rows(name: str) -> dict[str, int | None] | None:
        path = cfg.table_path(name)
        if not delta.exists(spark, path):
            return None
        version = delta.version(spark, path)
        return {"rows": delta.read(spark, path, version).count(), "version": version}

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="custseg-counts") as pool:
        counted = list(pool.map(rows, names))
    return {name: r for name, r in zip(names, counted, strict=True) if r is not None}


def run_stage(spark: SparkSession, cfg: Config, name: str, as_of: dt.date | None = None,
              run_id: str | None = None) -> StageResult:
    """Run one stage as its own invocation (recorded like one) and return its result."""
    return run(spark, cfg, [name], as_of, run_id).results[name]
