"""The report's core data: the segments of one profile run, the run that made them, and its model selection.

Everything here is a small table (k + 1 profile rows, k descriptions, the candidates, a few runs and lineage rows)
or an aggregate of a few rows; nothing that grows with the customers reaches the driver. Inputs are read the way
the other stages read them: at the versions their producers recorded for the date (`Tables`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import StageError
from custseg.io import delta, lineage

POPULATION = C.POPULATION_SEGMENT_ID
INGEST_KEYS = ("ingest.input", "ingest.clean", "ingest.quarantined", "ingest.duplicates")


@dataclass(frozen=True)
class Omitted:
    """A panel left out of the report, and the one line that says why."""

    panel: str
    title: str
    reason: str


class Tables:
    """Reads custseg's tables for one date at the versions their producers recorded, noting each version read."""

    def __init__(self, spark: SparkSession, cfg: Config, as_of: dt.date) -> None:
        self.spark, self.cfg, self.as_of = spark, cfg, as_of
        self.reads: dict[str, int] = {}

    def read(self, name: str, producer: str | None = None, version: int | None = None) -> DataFrame | None:
        """Table `name` at `version`, else at the version `producer` recorded for the date, else its latest
        (None: no such table)."""
        if version is None:
            version = (lineage.input_version(self.spark, self.cfg, name, producer, self.as_of) if producer
                       else delta.version(self.spark, self.cfg.table_path(name)))
        if version is None:
            return None
        self.reads[name] = version
        return delta.read(self.spark, self.cfg.table_path(name), version)

    def dated(self, name: str, producer: str | None = None, version: int | None = None) -> DataFrame | None:
        """The date's rows of `read(...)`."""
        df = self.read(name, producer, version)
        return None if df is None else df.filter(F.col(C.AS_OF_DATE) == F.lit(self.as_of))


@dataclass
class Segment:
    """One segment as the report shows it: its profile row and, when explain described this run, its description."""

    segment_id: int
    customers: int
    share: float
    revenue_share: float | None
    profile: dict[str, Any]
    description: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return str(self.description[C.SEGMENT_NAME]) if self.description else f"segment {self.segment_id}"


@dataclass
class Core:
    """The segments of the date's latest profile run, and where they came from."""

    as_of: dt.date
    segments_run_id: str
    model_run_id: str
    segments_version: int
    features_version: int
    population: dict[str, Any]
    segments: list[Segment]
    assignment: str = ""
    notes: list[Omitted] = field(default_factory=list)

    @property
    def customers(self) -> int:
        return int(self.population["customers"])

    @property
    def ids(self) -> list[int]:
        return [s.segment_id for s in self.segments]


def load_core(tables: Tables) -> Core:
    """The date's profiles (required: the report describes them), with the segments' descriptions when the explain
    stage described the same run."""
    as_of = tables.as_of
    entry = lineage.latest(tables.spark, tables.cfg, "profile", as_of)
    prof_version = entry.writes.get(C.TABLE_SEGMENT_PROFILES) if entry else None
    profiles = tables.dated(C.TABLE_SEGMENT_PROFILES, "profile", prof_version)
    rows = [r.asDict(recursive=True) for r in profiles.collect()] if profiles is not None else []  # k + 1 rows
    pop = [r for r in rows if r[C.SEGMENT_ID] == POPULATION]
    if not pop:
        raise StageError(f"no segment profiles as of {as_of}: run `custseg profile --as-of {as_of}` first")
    population = pop[0]
    seg_run, model_run = str(population[C.RUN_ID]), str(population[C.MODEL_RUN_ID])
    seg_version = entry.reads.get(C.TABLE_SEGMENTS) if entry else None
    feat_version = entry.reads.get(C.TABLE_CUSTOMER_FEATURES) if entry else None
    for name, producer, v in ((C.TABLE_SEGMENTS, "segment", seg_version),
                              (C.TABLE_CUSTOMER_FEATURES, "features", feat_version)):
        if tables.read(name, producer, v) is None:
            raise StageError(f"no {name} table: run the pipeline up to profile for {as_of} first")
    segments = [Segment(int(r[C.SEGMENT_ID]), int(r["customers"]), float(r["customer_share"]), r["revenue_share"], r)
                for r in sorted(rows, key=lambda r: int(r[C.SEGMENT_ID])) if r[C.SEGMENT_ID] != POPULATION]
    core = Core(as_of, seg_run, model_run, tables.reads[C.TABLE_SEGMENTS], tables.reads[C.TABLE_CUSTOMER_FEATURES],
                population, segments)
    first = (segments_of(tables, core).groupBy(C.ASSIGNMENT).count().orderBy(F.desc("count")).first())
    core.assignment = str(first[0]) if first is not None else ""
    _describe(tables, core)
    return core


def segments_of(tables: Tables, core: Core) -> DataFrame:
    """The segments rows of the profiled run (customer_id, segment_id, distance, assignment)."""
    df = tables.read(C.TABLE_SEGMENTS, version=core.segments_version)
    assert df is not None
    return df.filter((F.col(C.AS_OF_DATE) == F.lit(core.as_of)) & (F.col(C.RUN_ID) == F.lit(core.segments_run_id)))


def features_of(tables: Tables, core: Core) -> DataFrame:
    """The customer features the profile read."""
    df = tables.read(C.TABLE_CUSTOMER_FEATURES, version=core.features_version)
    assert df is not None
    return df.filter(F.col(C.AS_OF_DATE) == F.lit(core.as_of))


def _describe(tables: Tables, core: Core) -> None:
    df = tables.dated(C.TABLE_SEGMENT_DESCRIPTIONS, "explain")
    why = "run `custseg explain --as-of {d}` to name the segments and give their rules and actions"
    if df is None:
        core.notes.append(Omitted("descriptions", "Segment names, rules and actions",
                                  "the segment_descriptions table does not exist yet: " + why.format(d=core.as_of)))
        return
    rows = [r.asDict(recursive=True) for r in df.collect()]  # k rows
    mine = {int(r[C.SEGMENT_ID]): r for r in rows if r[C.RUN_ID] == core.segments_run_id
            and r[C.MODEL_RUN_ID] == core.model_run_id}
    if not mine:
        reason = (f"segment_descriptions has no rows as of {core.as_of}" if not rows else
                  f"the descriptions as of {core.as_of} are of another segment run than the profiles'")
        core.notes.append(Omitted("descriptions", "Segment names, rules and actions",
                                  f"{reason}: " + why.format(d=core.as_of)))
    for s in core.segments:
        s.description = mine.get(s.segment_id)


@dataclass
class RunInfo:
    """The run's facts: ingest counts, quarantine by reason, stage times, and where each came from."""

    report_run_id: str
    config_hash: str
    ingest: dict[str, int | None] = field(default_factory=dict)
    ingest_source: str = ""
    quarantine: list[tuple[str, int]] = field(default_factory=list)
    quarantine_source: str = ""
    stage_seconds: list[tuple[str, float]] = field(default_factory=list)
    stage_source: str = ""


def run_info(tables: Tables, core: Core, run_id: str, started: dt.datetime) -> RunInfo:
    """Ingest counts, quarantine by reason and stage times (a handful of rows each)."""
    spark, cfg = tables.spark, tables.cfg
    info = RunInfo(run_id, cfg.digest())
    runs = tables.read(C.TABLE_RUNS)
    ingest = lineage.latest(spark, cfg, "ingest", None)
    if ingest is not None:
        row = None if runs is None else runs.filter(F.col(C.RUN_ID) == ingest.run_id).first()
        if row is not None and row["counts"]:
            info.ingest = {k: row["counts"].get(k) for k in INGEST_KEYS}
            info.ingest_source = f"the runs table's counts of run {ingest.run_id}, which ingested the data"
        else:  # this invocation's ingest: its runs row is written once every stage has finished
            info.ingest = {"ingest.input": None, "ingest.clean": _rows_written(tables, C.TABLE_TRANSACTIONS, ingest),
                           "ingest.quarantined": _rows_written(tables, C.TABLE_QUARANTINE, ingest),
                           "ingest.duplicates": None}
            info.ingest_source = (f"the Delta commits of run {ingest.run_id}'s ingest (input rows and duplicates "
                                  "are in the runs table once that run finishes)")
        quarantine = tables.read(C.TABLE_QUARANTINE, version=ingest.writes.get(C.TABLE_QUARANTINE))
        if quarantine is not None:  # a groupBy to at most one row per reason code
            info.quarantine = sorted(((str(r[0]), int(r[1])) for r in quarantine.groupBy(C.REASON).count().collect()),
                                     key=lambda t: (-t[1], t[0]))
            info.quarantine_source = f"the quarantine table, version {tables.reads[C.TABLE_QUARANTINE]}"
    _stage_times(tables, core, info, runs, started)
    return info


def _rows_written(tables: Tables, name: str, entry: lineage.Entry) -> int | None:
    """numOutputRows of the commit `entry` recorded for table `name` (Delta's own metrics: no data is read)."""
    from delta.tables import DeltaTable

    version = entry.writes.get(name)
    if version is None:
        return None
    hist = DeltaTable.forPath(tables.spark, tables.cfg.table_path(name)).history()
    row = hist.filter(F.col("version") == version).select("operationMetrics").first()
    value = (row[0] or {}).get("numOutputRows") if row is not None else None
    return int(value) if value is not None else None


def _stage_times(tables: Tables, core: Core, info: RunInfo, runs: DataFrame | None, started: dt.datetime) -> None:
    spark, cfg = tables.spark, tables.cfg
    lineage_df = tables.read(C.TABLE_LINEAGE)
    mine = [] if lineage_df is None else (
        lineage_df.filter(F.col(C.RUN_ID) == info.report_run_id)
        .select(C.STAGE, F.unix_micros(F.col(C.RECORDED_AT)).alias("at")).orderBy("at").collect())
    if mine:  # the running invocation: the runs row is written after its last stage, so its lineage times
        previous = started.timestamp() * 1e6
        for r in mine:
            info.stage_seconds.append((str(r[C.STAGE]), round((r["at"] - previous) / 1e6, 1)))
            previous = r["at"]
        info.stage_source = (f"this run ({info.report_run_id}), from the lineage table's record times (a stage that "
                             "wrote no table is counted in the next one; the report's own time is not included)")
        return
    if runs is None:
        return
    entry = lineage.latest(spark, cfg, "profile", core.as_of)
    wanted = entry.run_id if entry is not None else core.segments_run_id
    done = runs.filter((F.col("outcome") == "succeeded") & (F.size("stage_seconds") > 0))
    row = (done.filter(F.col(C.RUN_ID) == wanted).first()
           or done.filter((F.col(C.AS_OF_DATE) == F.lit(core.as_of)) & F.array_contains("stages", "profile"))
           .orderBy(F.desc("started_at")).first())
    if row is not None:
        order = list(row["stages"] or [])
        info.stage_seconds = sorted(((str(k), float(v)) for k, v in row["stage_seconds"].items()),
                                    key=lambda t: order.index(t[0]) if t[0] in order else len(order))
        info.stage_source = f"run {row[C.RUN_ID]}, completed (the runs table's stage_seconds)"


@dataclass
class Selection:
    """The model selection of the model that assigned the segments, and why its choice was made."""

    candidates: list[dict[str, Any]]
    chosen: dict[str, Any] | None
    metric: str
    why: str


def selection(tables: Tables, core: Core) -> Selection | Omitted:
    """Every candidate of the fit that made the segments' model (scored dates show the model's own fit)."""
    title = "Model selection"
    df = tables.read(C.TABLE_MODEL_SELECTION, "segment")
    if df is None:
        return Omitted("selection", title, "the model_selection table does not exist yet: run `custseg segment`")
    rows = sorted((r.asDict(recursive=True) for r in df.filter(F.col(C.RUN_ID) == core.model_run_id).collect()),
                  key=lambda r: (r["algorithm"], r["k"]))
    if not rows:
        return Omitted("selection", title, f"model_selection has no candidates of model run {core.model_run_id} "
                                           "(a later fit of its date replaced them, or k and the algorithm were fixed)")
    fit_cfg = _run_config(tables, core.model_run_id)
    metric = str(fit_cfg.get("segment.selection_metric") or tables.cfg["segment.selection_metric"])
    min_share = fit_cfg.get("segment.min_segment_share", tables.cfg["segment.min_segment_share"])
    chosen = next((r for r in rows if r["chosen"]), None)
    eligible = [r for r in rows if r["eligible"]]
    if chosen is None:
        why = "no candidate is marked as chosen"
    elif len(rows) == 1:
        why = f"{chosen['algorithm']} with k = {chosen['k']} was the only candidate (fixed by the configuration)"
    else:
        best = "lowest" if metric == "davies_bouldin" else "highest"
        value = chosen.get(metric)
        shown = f" ({value:.3f})" if isinstance(value, float) else ""
        pool = (f"the {len(eligible)} eligible candidates (smallest segment at least {float(min_share):.1%} of the "
                f"customers)" if chosen["eligible"] else "all candidates: none was eligible")
        why = (f"{chosen['algorithm']} with k = {chosen['k']} has the {best} {metric.replace('_', '-')}{shown} "
               f"among {pool}; {len(rows)} candidates scored")
    if core.assignment == C.ASSIGNMENT_SCORED:
        why += (f". The segments as of {core.as_of} were assigned with this saved model ({core.model_run_id}) "
                "without refitting")
    return Selection(rows, chosen, metric, why)


def _run_config(tables: Tables, run_id: str) -> dict[str, Any]:
    """The (masked) configuration a run recorded in the runs table; empty when it has no row."""
    runs = tables.read(C.TABLE_RUNS)
    row = None if runs is None else runs.filter(F.col(C.RUN_ID) == run_id).select("config_json").first()
    try:
        return dict(json.loads(row[0])) if row is not None and row[0] else {}
    except ValueError:
        return {}
