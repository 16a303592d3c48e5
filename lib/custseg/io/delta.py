"""Delta Lake reads and writes. Every write is one Delta commit: it lands whole or not at all.

Tables are created from their catalog declaration (`custseg.core.catalog`) before the first write, and
every write is conformed to it, so a write whose columns do not match the declaration fails instead of
silently changing the table. Writes carry `mergeSchema`, which after `conform` can do one thing only: add
to a table written by an earlier custseg the columns the catalog has declared since (never overwriteSchema:
a column's type never changes). Reads take an
optional version: a stage reads its inputs at the versions their producer recorded (`lineage`).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from custseg.core import catalog
from custseg.core.errors import StageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def exists(spark: SparkSession, path: str) -> bool:
    """True when `path` holds a Delta table."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def read(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """The Delta table at `path`: its current version, or `version` (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def version(spark: SparkSession, path: str) -> int | None:
    """Latest committed version of the table, or None when there is no table.

    Asked of the table's Delta log directly (its snapshot brought up to date, as a read would): about 9 ms in a
    warm session, where `history(1)` plans and runs a Spark job (about 180 ms; stages ask this of every table they
    record). That call is Delta's internal Scala API, whose signature has changed between releases: when it
    fails, the public `history(1)` answers.
    """
    from delta.tables import DeltaTable

    if not exists(spark, path):
        return None
    try:
        return log_state(spark, path)[1]
    except Exception:  # another Delta release's signature: the public, slower way
        log.debug("DeltaLog.update() not callable as expected; table version from history(1)", exc_info=True)
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return int(row[0]) if row is not None else None


def log_state(spark: SparkSession, path: str) -> tuple[str, int]:
    """The table's id and latest version, from its Delta log: `DeltaLog.forTable(spark, path).update()` (delta-spark
    4.4: update(isAsync, catalogTable, lastCheckpoint), all optional in Scala, all given from Python). The id is
    new for a table made again at the same path. Raises when this Delta release's internal API differs."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    none = jvm.scala.Option.empty()
    snapshot = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path).update(False, none, none)
    return str(snapshot.metadata().id()), int(snapshot.version())


def ensure(spark: SparkSession, path: str, name: str) -> bool:
    """Create table `name` at `path` from its declaration when it does not exist yet; True when this call
    created it (with the declared partitioning).

    The table is created by committing an empty write of the declared schema and partitioning: Delta's
    `DeltaTable.createIfNotExists().location()` refuses a `file://` URI as two different locations.
    """
    spec = catalog.table(name)
    if spec.schema is None or exists(spark, path):
        return False
    empty = spark.createDataFrame([], spec.schema)
    try:
        empty.write.format("delta").mode("append").partitionBy(*spec.partition_by).save(path)
    except Exception as e:
        # another run created it at the same moment (Delta refuses the second first commit): it is there now
        # (a check right away can still see the cached, table-less state), so nothing is left to create
        if not is_concurrent_change(e):
            raise
        log.info("table %s was created by another run at the same moment", name)
        return False
    log.debug("created table %s at %s", name, path)
    return True


def conform(df: DataFrame, name: str) -> DataFrame:
    """`df` in table `name`'s column order and types; a missing or unexpected column is a StageError."""
    from pyspark.sql import functions as F

    spec = catalog.table(name)
    if spec.schema is None:
        return df
    want = spec.schema.names
    missing = [c for c in want if c not in df.columns]
    extra = [c for c in df.columns if c not in want]
    if missing or extra:
        raise StageError(f"{name}: the rows to write do not match the table's declared schema "
                         f"(missing: {', '.join(missing) or '-'}; unexpected: {', '.join(extra) or '-'})")
    return df.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in spec.schema.fields])


def _writer(df: DataFrame, run_id: str | None, mode: str, name: str) -> Any:
    w = df.write.format("delta").mode(mode)
    if catalog.table(name).schema is not None:  # conformed to its declaration: evolution only adds columns
        w = w.option("mergeSchema", "true")
    if run_id:
        w = w.option("userMetadata", f"custseg run {run_id}")
    return w


def _partition_by(name: str, df: DataFrame) -> list[str]:
    spec = catalog.table(name)
    return [c for c in spec.partition_by if c in df.columns]


def partition_columns(spark: SparkSession, path: str) -> list[str]:
    """The partition columns of the Delta table at `path`."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).detail().select("partitionColumns").first()
    return list(row[0]) if row is not None else []


def overwrite(df: DataFrame, path: str, name: str, run_id: str | None = None) -> int:
    """Make table `name` exactly `df`, in one commit (readers see the old or the new table, never a mix).

    A table whose schema its producer defines (None in the catalog) takes `df`'s columns, whatever it had.

    A table partitioned otherwise than declared (written by an earlier custseg: `transactions` was
    partitioned by day) is re-partitioned as declared in the same commit. The first write creates the table,
    with the declared partitioning. Returns the version written."""
    spark = df.sparkSession
    existed = exists(spark, path)
    df = conform(df, name)
    writer = _writer(df, run_id, "overwrite", name)
    declared = _partition_by(name, df)
    if existed and catalog.table(name).schema is None:
        # a table whose columns its producer defines (customer_attributes follows the configured attributes):
        # the new snapshot's columns replace the old ones in the same commit
        writer = writer.option("overwriteSchema", "true")
    elif existed and declared and (before := partition_columns(spark, path)) != declared:
        log.info("table %s: partitioned by %s from this write on (was: %s)", name, ", ".join(declared),
                 ", ".join(before) or "none")
        writer = writer.option("overwriteSchema", "true")
    writer.partitionBy(*declared).save(path)
    return _written(spark, path)


def append(df: DataFrame, path: str, name: str, run_id: str | None = None) -> int:
    """Add `df`'s rows to table `name` in one commit. Returns the version written.

    The rows go into the table's own partitioning (Delta's, when no partitioning is given): the declared one,
    or an earlier custseg's until an overwrite re-partitions the table. The first write creates the table with
    the declared partitioning; when another run creates it at the same moment, the rows are appended to
    that table."""
    df = conform(df, name)
    return _create_or(df, path, name, run_id, lambda: _writer(df, run_id, "append", name).save(path))


def replace_partition(df: DataFrame, path: str, name: str, value: dt.date | str, run_id: str | None = None) -> int:
    """Replace one partition of table `name` (its partition column = `value`) with `df`, atomically.

    A re-run for the same date therefore replaces its rows instead of adding to them; other partitions
    stay. Every row written must match the partition: Delta checks it against an existing table, and the
    write that creates the table checks it itself (a row of another value fails the write, which then commits
    nothing). Returns the version written.
    """
    from pyspark.sql import functions as F

    spec = catalog.table(name)
    if len(spec.partition_by) != 1:
        raise ValueError(f"{name} is not partitioned by one column")
    column = spec.partition_by[0]
    df = conform(df, name)
    if column not in df.columns:
        raise StageError(f"{name}: the rows to write have no {column} column to replace a partition of")
    mismatch = F.raise_error(F.lit(f"{name}: a row to write for {column} = {value} has another {column}"))
    checked = df.withColumn(column, F.when(F.col(column) == F.lit(value), F.col(column)).otherwise(mismatch))

    def replace() -> None:
        _writer(df, run_id, "overwrite", name).option("replaceWhere", f"{column} = '{value}'") \
            .partitionBy(column).save(path)

    return _create_or(checked, path, name, run_id, replace)


def _create_or(df: DataFrame, path: str, name: str, run_id: str | None, write: Callable[[], None]) -> int:
    """`write` to the existing table at `path`; when there is none, create it with `df` (appended, in the
    declared partitioning), falling back to `write` when another run created it first. Returns the version."""
    spark = df.sparkSession
    if exists(spark, path):
        write()
        return _written(spark, path)
    try:
        _writer(df, run_id, "append", name).partitionBy(*_partition_by(name, df)).save(path)
    except Exception as e:
        if not is_concurrent_change(e) or not exists(spark, path):
            raise
        log.info("table %s was created by another run at the same moment: writing to it", name)
        write()
    return _written(spark, path)


def _written(spark: SparkSession, path: str) -> int:
    v = version(spark, path)
    assert v is not None  # a write just committed
    return v


def is_concurrent_change(e: BaseException) -> bool:
    """True for Delta's write conflicts: another run committed to the same table after this one read it."""
    from delta import exceptions as X

    kinds = (X.ConcurrentAppendException, X.ConcurrentDeleteReadException, X.ConcurrentDeleteDeleteException,
             X.ConcurrentTransactionException, X.ConcurrentWriteException, X.MetadataChangedException,
             X.ProtocolChangedException, X.DeltaConcurrentModificationException)
    return isinstance(e, kinds) or "DELTA_CONCURRENT" in str(e)


CONCURRENT_HINT = ("another custseg run wrote the same Delta table at the same time, and Delta refused this "
                   "run's commit (nothing of it was written): run it again once the other run has finished")


def delete_where(spark: SparkSession, path: str, condition: str) -> None:
    """Delete the rows matching a SQL condition, in one commit."""
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, path).delete(condition)
