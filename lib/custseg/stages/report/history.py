"""The report's optional panels: customer attributes by segment, and the segments over time (migration since the
previous date, drift against the model's training, KPI trends). Each reads a small table; a table that does not
exist (yet), or has nothing for the date, gives an `Omitted` with the one line that says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.stages.report.data import Core, Omitted, Tables

TREND_DATES = 36  # the KPI trends show at most this many dates, the latest


@dataclass
class Attributes:
    """segment_attribute_profiles rows of the run, by attribute: categorical values and numeric summaries."""

    categorical: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    numeric: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def attributes(tables: Tables, core: Core) -> Attributes | Omitted:
    """Customer attributes by segment (segments x values, bounded by attributes.max_values)."""
    title = "Customer attributes by segment"
    df = tables.dated(C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, "explain")
    if df is None:
        return Omitted("attributes", title, "no customer attributes: the segment_attribute_profiles table does not "
                                            "exist (set attributes.path and run attributes and explain)")
    rows = [r.asDict() for r in df.filter(F.col(C.RUN_ID) == core.segments_run_id).collect()]
    if not rows:
        return Omitted("attributes", title, f"no customer attributes profiled as of {core.as_of} for this run "
                                            "(attributes.path is not set, or explain ran without attributes)")
    out = Attributes()
    for r in sorted(rows, key=lambda r: (r[C.ATTRIBUTE], r[C.SEGMENT_ID], -(r["customers"] or 0))):
        kind = out.numeric if r[C.ATTRIBUTE_KIND] == C.KIND_NUMERIC else out.categorical
        kind.setdefault(str(r[C.ATTRIBUTE]), []).append(r)
    return out


@dataclass
class OverTime:
    """The over-time panels that have data, and the ones left out with their reason."""

    earlier: list[Any]
    migration: list[dict[str, Any]] | None = None
    previous_as_of: Any = None
    drift: list[dict[str, Any]] | None = None
    kpis: list[dict[str, Any]] | None = None
    omitted: list[Omitted] = field(default_factory=list)


def over_time(tables: Tables, core: Core, earlier: list[Any]) -> OverTime:
    """Migration, drift and KPI trends for the date, each when its table exists and has the date's rows."""
    out = OverTime(earlier)
    d = core.as_of
    migration = tables.dated(C.TABLE_SEGMENT_MIGRATION, "monitor")
    if migration is None:
        out.omitted.append(Omitted("migration", "Migration between segments", "the segment_migration table does not "
                                   "exist yet (the monitor stage writes it)"))
    elif not (rows := [r.asDict() for r in migration.collect()]):  # at most (k + 1) x (k + 1) rows
        out.omitted.append(Omitted("migration", "Migration between segments",
                                   f"segment_migration has no rows as of {d}: run `custseg monitor --as-of {d}`"))
    else:
        out.migration, out.previous_as_of = rows, rows[0][C.PREVIOUS_AS_OF_DATE]
    drift = tables.dated(C.TABLE_SEGMENT_DRIFT, "segment")
    if drift is None:
        out.omitted.append(Omitted("drift", "Drift against the model's training", "the segment_drift table does not "
                                   "exist yet (the segment stage writes it)"))
    elif not (rows := [r.asDict() for r in drift.collect()]):  # inputs + k + 1 rows
        out.omitted.append(Omitted("drift", "Drift against the model's training",
                                   f"segment_drift has no rows as of {d} (the segment stage records drift when "
                                   "it runs for the date)"))
    else:
        out.drift = rows
    kpis = tables.read(C.TABLE_SEGMENT_KPIS, "monitor")
    if kpis is None:
        out.omitted.append(Omitted("kpis", "KPI trends", "the segment_kpis table does not exist yet (the monitor "
                                   "stage writes it)"))
        return out
    dates = [r[0] for r in kpis.filter(F.col(C.AS_OF_DATE) <= F.lit(d)).select(C.AS_OF_DATE).distinct()
             .orderBy(F.desc(C.AS_OF_DATE)).limit(TREND_DATES).collect()]
    if d not in dates:
        out.omitted.append(Omitted("kpis", "KPI trends", f"segment_kpis has no rows as of {d}: run "
                                   f"`custseg monitor --as-of {d}`"))
        return out
    out.kpis = [r.asDict() for r in kpis.filter(F.col(C.AS_OF_DATE).isin(dates)).collect()]  # dates x (k+1) x KPIs
    return out
