"""Monitor step: customers' movements between segments since the previous date -> segment_migration, and each
segment's KPIs with their change since then -> segment_kpis.

The previous date P is the latest date before D in the segments table; both dates' segments come from the one
version the segment stage recorded for D, and the features from the version the features stage recorded for D.
The previous KPI values are the monitor's own rows for P. A first date (no P) replaces the date's migration with
nothing and writes KPIs without previous values. The customer-sized work is one join and one aggregation; the
k*k + 2k flows it yields are collected, and both tables are computed from them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import ConfigError, StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, lineage
from custseg.stages.monitor import transform as T

log = logging.getLogger(__name__)

MOVEMENTS = (C.MOVEMENT_STAYED, C.MOVEMENT_MOVED, C.MOVEMENT_ENTERED, C.MOVEMENT_LEFT)


def check(cfg: Config) -> None:
    """Every monitor.windows_days entry is one of features.windows_days (before Spark starts)."""
    features, monitor = list(cfg["features.windows_days"]), list(cfg["monitor.windows_days"])
    missing = [w for w in monitor if w not in features]
    if missing:
        raise ConfigError(f"monitor.windows_days: {', '.join(map(str, missing))} not in features.windows_days "
                          f"(monitor.windows_days = {monitor}, features.windows_days = {features}): the KPIs "
                          f"use the features' spend_<N>d columns")


def _windows(cfg: Config) -> list[int]:
    return list(dict.fromkeys(int(w) for w in cfg["monitor.windows_days"]))  # in order, once each


@dataclass
class MonitorResult(StageResult):
    segments_run_id: str
    model_run_id: str
    previous_as_of: dt.date | None
    movements: dict[str, int] = field(default_factory=dict)  # movement -> customers
    migration_rows: int = 0
    kpi_rows: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)  # per segment: customers now, before, retained

    def counts(self) -> dict[str, int]:
        return {"monitor.migration_rows": self.migration_rows, "monitor.kpi_rows": self.kpi_rows,
                **{f"monitor.{m}": n for m, n in self.movements.items()}}

    def details(self) -> dict[str, str]:
        return {"monitor.previous_as_of_date": str(self.previous_as_of) if self.previous_as_of else "none"}

    def describe(self) -> str:
        k = sum(1 for s in self.segments if s[C.SEGMENT_ID] != C.POPULATION_SEGMENT_ID)
        if self.previous_as_of is None:
            return f"first date: no migration; {self.kpi_rows} KPI rows for {k} segments and the population"
        moves = ", ".join(f"{self.movements.get(m, 0):,} {m}" for m in MOVEMENTS)
        lines = [f"since {self.previous_as_of}: customers {moves}; {self.kpi_rows} KPI rows"]
        for s in self.segments:
            name = "population" if s[C.SEGMENT_ID] == C.POPULATION_SEGMENT_ID else f"segment {s[C.SEGMENT_ID]:>2}"
            before = "-" if s["previous"] is None else f"{s['previous']:,.0f}"
            retained = "-" if s["retained"] is None else f"{s['retained']:.1%}"
            lines.append(f"    {name}: {s['customers']:>10,.0f} customers (was {before}), retained {retained}")
        return "\n".join(lines)


def run(spark: SparkSession, ctx: StageContext) -> MonitorResult:
    """Migration since the previous date into segment_migration, the date's KPIs into segment_kpis."""
    cfg, as_of = ctx.cfg, ctx.date
    windows = _windows(cfg)
    seg_path, feat_path = cfg.table_path(C.TABLE_SEGMENTS), cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
    seg_version = lineage.input_version(spark, cfg, C.TABLE_SEGMENTS, "segment", as_of)
    if seg_version is None:
        raise StageError(f"no segments table at {seg_path}: run `custseg segment --as-of {as_of}` first")
    segs = delta.read(spark, seg_path, seg_version)
    current = segs.filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    first = current.select(C.RUN_ID, C.MODEL_RUN_ID).first()
    if first is None:
        raise StageError(f"no segments as of {as_of}: run `custseg segment --as-of {as_of}` first")
    seg_run, model_run = first[0], first[1]
    before = segs.filter(F.col(C.AS_OF_DATE) < F.lit(as_of)).agg(F.max(C.AS_OF_DATE)).first()
    previous_as_of: dt.date | None = before[0] if before is not None else None
    previous = segs.filter(F.col(C.AS_OF_DATE) == F.lit(previous_as_of)) if previous_as_of is not None \
        else segs.filter(F.lit(False))
    feat_version = lineage.input_version(spark, cfg, C.TABLE_CUSTOMER_FEATURES, "features", as_of)
    if feat_version is None:
        raise StageError(f"no customer_features table at {feat_path}: run `custseg features --as-of {as_of}` first")
    feats = delta.read(spark, feat_path, feat_version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    if missing := [c for c in T.required_feature_columns(windows) if c not in feats.columns]:
        raise StageError(f"customer_features has no {', '.join(missing)}: the features were computed with other "
                         f"features.windows_days than monitor.windows_days {windows} needs; run `custseg features "
                         f"--as-of {as_of}` again")
    log.info("monitor: segments of run %s (model %s) at version %d, previous date %s, features version %d",
             seg_run, model_run, seg_version, previous_as_of or "none", feat_version)

    # the one customer-sized step: join and group into the (from, to) flows, at most k*k + 2k rows
    flows_df = T.segment_flows(previous, current, feats.transform(T.kpi_measures(windows)), windows)
    flows = spark.createDataFrame(flows_df.collect(), flows_df.schema)

    reads = {C.TABLE_SEGMENTS: seg_version, C.TABLE_CUSTOMER_FEATURES: feat_version}
    migration = _dated(T.segment_migration(flows), as_of, previous_as_of, seg_run, None,
                       C.TABLE_SEGMENT_MIGRATION)
    migration_rows = migration.collect() if previous_as_of is not None else []
    previous_kpis = _previous_kpis(spark, cfg, previous_as_of, reads)
    kpis = _dated(T.segment_kpis(flows, windows).transform(T.with_previous(previous_kpis)), as_of, previous_as_of,
                  seg_run, model_run, C.TABLE_SEGMENT_KPIS)
    kpi_rows = kpis.collect()  # (k + 1) x KPIs

    # both computed before either is written: only the writes themselves can fail between them
    writes = {
        C.TABLE_SEGMENT_MIGRATION: delta.replace_partition(
            spark.createDataFrame(migration_rows, migration.schema), cfg.table_path(C.TABLE_SEGMENT_MIGRATION),
            C.TABLE_SEGMENT_MIGRATION, as_of, ctx.run_id),
        C.TABLE_SEGMENT_KPIS: delta.replace_partition(
            spark.createDataFrame(kpi_rows, kpis.schema), cfg.table_path(C.TABLE_SEGMENT_KPIS),
            C.TABLE_SEGMENT_KPIS, as_of, ctx.run_id),
    }
    movements = {m: 0 for m in MOVEMENTS} if previous_as_of is not None else {}
    for r in migration_rows:
        movements[r[C.MOVEMENT]] += int(r[T.CUSTOMERS])
    by_kpi = {(r[C.SEGMENT_ID], r[C.KPI]): r for r in kpi_rows}
    segments = [{C.SEGMENT_ID: sid, "customers": by_kpi[(sid, T.KPI_CUSTOMERS)][T.VALUE],
                 "previous": by_kpi[(sid, T.KPI_CUSTOMERS)][T.PREVIOUS_VALUE],
                 "retained": by_kpi[(sid, T.KPI_RETAINED_SHARE)][T.VALUE]}
                for sid in sorted({sid for sid, _ in by_kpi}, key=lambda s: (s == C.POPULATION_SEGMENT_ID, s))]
    log.info("monitor: %d migration rows, %d KPI rows; movements %s", len(migration_rows), len(kpi_rows),
             movements or "none (first date)")
    return MonitorResult(seg_run, model_run, previous_as_of, movements, len(migration_rows), len(kpi_rows), segments,
                         reads=reads, writes=writes)


def _previous_kpis(spark: SparkSession, cfg: Config, previous_as_of: dt.date | None,
                   reads: dict[str, int]) -> DataFrame:
    """The monitor's own KPI rows for the previous date (segment_id, kpi, value); none without them."""
    path = cfg.table_path(C.TABLE_SEGMENT_KPIS)
    version = delta.version(spark, path) if previous_as_of is not None else None
    if version is None:
        schema = catalog.SEGMENT_KPIS_SCHEMA
        return spark.createDataFrame([], schema).select(C.SEGMENT_ID, C.KPI, T.VALUE)
    reads[C.TABLE_SEGMENT_KPIS] = version
    return delta.read(spark, path, version).filter(F.col(C.AS_OF_DATE) == F.lit(previous_as_of)) \
        .select(C.SEGMENT_ID, C.KPI, T.VALUE)


def _dated(df: DataFrame, as_of: dt.date, previous_as_of: dt.date | None, seg_run: str, model_run: str | None,
           table: str) -> DataFrame:
    """`df` with the date, the previous date and the runs, in `table`'s declared columns."""
    extra = {C.AS_OF_DATE: F.lit(as_of), C.PREVIOUS_AS_OF_DATE: F.lit(previous_as_of).cast("date"),
             C.RUN_ID: F.lit(seg_run), C.MODEL_RUN_ID: F.lit(model_run).cast("string")}
    schema = catalog.table(table).schema
    assert schema is not None  # both monitor tables are declared with their schema
    return delta.conform(df.select("*", *[v.alias(k) for k, v in extra.items() if k in schema.names]), table)
