"""The segment registry: every segment id ever issued, one row each, kept by the segment stage (ids, dates,
centres) and the explain stage (names).

The table is small (one row per id ever issued), so it is read whole to the driver, changed in Python and
written back in one commit (`delta.overwrite`): readers see the registry before or after a run, never half
of it. Ids are issued above the highest id ever issued, so a retired id is never reused.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import SparkSession

from custseg.core import catalog
from custseg.core import columns as C
from custseg.io import delta
from custseg.io.models import BundleMeta

Rows = dict[int, dict[str, Any]]  # segment id -> the registry row (column -> value)


def read(spark: SparkSession, path: str) -> Rows:
    """The registry's rows by segment id (none when the table does not exist yet)."""
    if not delta.exists(spark, path):
        return {}
    return {int(r[C.SEGMENT_ID]): r.asDict(recursive=True) for r in delta.read(spark, path).collect()}


def issued_max(rows: Rows) -> int:
    """The highest segment id ever issued (-1: none)."""
    return max(rows, default=-1)


def _touch(row: dict[str, Any], as_of: dt.date) -> None:
    row["first_as_of"] = min(row["first_as_of"], as_of) if row.get("first_as_of") else as_of
    row["last_as_of"] = max(row["last_as_of"], as_of) if row.get("last_as_of") else as_of


def after_fit(rows: Rows, meta: BundleMeta, as_of: dt.date, run_id: str, distances: Mapping[int, float | None]) -> Rows:
    """The registry after a fit: the model's ids active (new ones created) with this date's centre; every other
    active id retired as of this date. `distances`: segment id -> distance to the previous centre it matched
    (None: a new id)."""
    out = {s: dict(r) for s, r in rows.items()}
    now = dt.datetime.now(dt.UTC)
    for s, centre in zip(meta.segment_ids, meta.centroids_original, strict=True):
        row = out.get(s) or {C.SEGMENT_ID: s, "created_as_of": as_of, "created_run_id": run_id,
                             "centre_history": [], "name_history": []}
        _touch(row, as_of)
        row.update({"status": C.REGISTRY_ACTIVE, "retired_as_of": None, C.MODEL_RUN_ID: run_id, "updated_at": now})
        row["centre_history"] = [*(row.get("centre_history") or []), {
            C.AS_OF_DATE: as_of, C.RUN_ID: run_id, C.MODEL_RUN_ID: run_id,
            "centre": {k: float(v) for k, v in centre.items()}, "match_distance": distances.get(s)}]
        out[s] = row
    for s, row in out.items():
        if s not in meta.segment_ids and row["status"] == C.REGISTRY_ACTIVE:
            row.update({"status": C.REGISTRY_RETIRED, "retired_as_of": as_of, "updated_at": now})
    return out


def after_score(rows: Rows, meta: BundleMeta, as_of: dt.date) -> Rows:
    """The registry after scoring with a saved model: its ids were in use on this date."""
    out = {s: dict(r) for s, r in rows.items()}
    now = dt.datetime.now(dt.UTC)
    for s, centre in zip(meta.segment_ids, meta.centroids_original, strict=True):
        row = out.get(s)
        if row is None:  # a model older than the registry: its ids enter it now
            row = {C.SEGMENT_ID: s, "status": C.REGISTRY_ACTIVE, "created_as_of": dt.date.fromisoformat(
                meta.as_of_date), "created_run_id": meta.run_id, "retired_as_of": None,
                   "centre_history": [{C.AS_OF_DATE: dt.date.fromisoformat(meta.as_of_date), C.RUN_ID: meta.run_id,
                                       C.MODEL_RUN_ID: meta.run_id, "centre": dict(centre), "match_distance": None}],
                   "name_history": []}
        _touch(row, as_of)
        row.update({C.MODEL_RUN_ID: meta.run_id, "updated_at": now})
        out[s] = row
    return out


def with_names(rows: Rows, as_of: dt.date, run_id: str, names: Mapping[int, str]) -> Rows:
    """The registry with each named segment's name for `as_of` (replacing an earlier name of the same date)."""
    out = {s: dict(r) for s, r in rows.items()}
    for s, name in names.items():
        row = out.get(s)
        if row is None:  # a segment the registry does not know (segments written by an older custseg)
            continue
        kept = [h for h in (row.get("name_history") or []) if h[C.AS_OF_DATE] != as_of]
        row["name_history"] = sorted([*kept, {C.AS_OF_DATE: as_of, C.RUN_ID: run_id, C.SEGMENT_NAME: name}],
                                     key=lambda h: h[C.AS_OF_DATE])
    return out


def previous_names(rows: Rows, as_of: dt.date) -> dict[int, str]:
    """Each segment's latest name from a date before `as_of`."""
    out: dict[int, str] = {}
    for s, row in rows.items():
        earlier = [h for h in (row.get("name_history") or []) if h[C.AS_OF_DATE] < as_of]
        if earlier:
            out[s] = max(earlier, key=lambda h: h[C.AS_OF_DATE])[C.SEGMENT_NAME]
    return out


def write(spark: SparkSession, path: str, rows: Rows, run_id: str) -> int:
    """Replace the registry with `rows`, in one commit; returns the version written."""
    ordered: Sequence[dict[str, Any]] = [rows[s] for s in sorted(rows)]
    schema = catalog.SEGMENT_REGISTRY_SCHEMA
    data = [tuple(r.get(f.name) for f in schema.fields) for r in ordered]
    return delta.overwrite(spark.createDataFrame(data, schema), path, C.TABLE_SEGMENT_REGISTRY, run_id)
