"""Lineage: which table versions each stage read and wrote, per as-of date.

After a stage's step succeeds, the runner appends one row (as-of date, stage, run id, the versions it
read, the versions it wrote). A later stage reads its inputs at the versions recorded there, so that,
for example, profile describes exactly the features and segments of one segment run even when the
features were computed again since. A stage that died half-way records nothing: its partial outputs
are never what a later stage reads.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from custseg.core import catalog
from custseg.core import columns as C
from custseg.io import delta, memo

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from custseg.core.config import Config


@dataclass(frozen=True)
class Entry:
    """What one stage of one run read and wrote for one as-of date (None: an undated stage, ingest)."""

    stage: str
    run_id: str
    as_of: dt.date | None
    reads: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)


def record(spark: SparkSession, cfg: Config, entry: Entry) -> None:
    """Append `entry` to the lineage table."""
    row = (entry.as_of, entry.stage, entry.run_id, entry.reads, entry.writes, dt.datetime.now(dt.UTC))
    df = spark.createDataFrame([row], catalog.LINEAGE_SCHEMA)
    path = cfg.table_path(C.TABLE_LINEAGE)
    memo.appended(path, delta.append(df, path, C.TABLE_LINEAGE, entry.run_id), df)


def latest(spark: SparkSession, cfg: Config, stage: str, as_of: dt.date | None) -> Entry | None:
    """The newest record of `stage` for `as_of`, or None when the stage has not run for it."""
    rows = memo.rows(spark, cfg.table_path(C.TABLE_LINEAGE))
    match = [r for r in rows or () if r[C.STAGE] == stage and r[C.AS_OF_DATE] == as_of]
    if not match:
        return None
    row = max(match, key=lambda r: (r[C.RECORDED_AT], r[C.RUN_ID]))
    return Entry(stage, row[C.RUN_ID], as_of, dict(row[C.READS] or {}), dict(row[C.WRITES] or {}))


def input_version(spark: SparkSession, cfg: Config, table: str, producer: str, as_of: dt.date) -> int | None:
    """The version of `table` that stage `producer` recorded writing for `as_of`.

    Without a record (a table written before lineage existed, or by another tool) the table's current
    version; None when there is no table.
    """
    entry = latest(spark, cfg, producer, as_of)
    if entry is not None and table in entry.writes:
        return entry.writes[table]
    return delta.version(spark, cfg.table_path(table))
