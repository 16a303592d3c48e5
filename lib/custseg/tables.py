"""Delta Lake reads and writes. Every write is one Delta commit: it lands whole or not at all.

Schema enforcement stays on (no mergeSchema / overwriteSchema): a write whose columns do not match the
table fails instead of silently changing the table.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def exists(spark: SparkSession, path: str) -> bool:
    """True when `path` holds a Delta table."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def read(spark: SparkSession, path: str) -> DataFrame:
    """The current version of the Delta table at `path`."""
    return spark.read.format("delta").load(path)


def version(spark: SparkSession, path: str) -> int | None:
    """Latest committed version of the table, or None when there is no table."""
    from delta.tables import DeltaTable

    if not exists(spark, path):
        return None
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def _writer(df: DataFrame, run_id: str | None, mode: str):  # type: ignore[no-untyped-def]
    w = df.write.format("delta").mode(mode)
    if run_id:
        w = w.option("userMetadata", f"custseg run {run_id}")
    return w


def overwrite(df: DataFrame, path: str, partition_by: list[str], run_id: str | None = None) -> None:
    """Make the table exactly `df`, in one commit (readers see the old or the new table, never a mix)."""
    _writer(df, run_id, "overwrite").partitionBy(*partition_by).save(path)


def append(df: DataFrame, path: str, partition_by: list[str], run_id: str | None = None) -> None:
    """Add `df`'s rows to the table in one commit (creating the table if needed)."""
    _writer(df, run_id, "append").partitionBy(*partition_by).save(path)


def replace_partition(
    df: DataFrame, path: str, partition_col: str, value: dt.date | str, run_id: str | None = None
) -> None:
    """Replace one partition (`partition_col = value`) with `df`, atomically; other partitions stay.

    A re-run for the same date therefore replaces its rows instead of adding to them. Delta checks that
    every row written matches the predicate.
    """
    predicate = f"{partition_col} = '{value}'"
    if not exists(df.sparkSession, path):
        append(df, path, [partition_col], run_id)
        return
    _writer(df, run_id, "overwrite").option("replaceWhere", predicate).partitionBy(partition_col).save(path)


def delete_where(spark: SparkSession, path: str, condition: str) -> None:
    """Delete the rows matching a SQL condition, in one commit."""
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, path).delete(condition)
