"""Segment, undo: put back what a failing run had already written for its date; the writes that register
with it and run together."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.stage import StageContext
from custseg.io import delta
from custseg.stages.segment import select as SEL

log = logging.getLogger(__name__)

Write = tuple[str | None, Callable[[], int | None]]  # (table name or None, the write: its version)


class Undo:
    """Puts back what a failing fit had already written for its date, newest first.

    A table's partition gets the rows it had before the run (read at the version before the run's
    write; removed when there was none); a bundle directory the run created is deleted. Each step is
    best effort: a failure to undo is logged, and the original error is what the run reports.
    """

    def __init__(self, spark: SparkSession, as_of: dt.date) -> None:
        self.spark = spark
        self.as_of = as_of
        self.steps: list[tuple[str, Callable[[], object]]] = []

    def partition(self, path: str, name: str) -> None:
        """Call before writing table `name`'s partition for the date."""
        before = delta.version(self.spark, path)

        def restore() -> None:
            if delta.version(self.spark, path) == before:  # the write did not commit
                return
            if before is None:
                delta.delete_where(self.spark, path, f"{C.AS_OF_DATE} = '{self.as_of}'")
                return
            # the date's rows at the version before (none: the replacement just removes the run's rows)
            old = delta.read(self.spark, path, before).filter(F.col(C.AS_OF_DATE) == F.lit(self.as_of))
            delta.replace_partition(old, path, name, self.as_of)

        self.steps.append((f"{name} as of {self.as_of}", restore))

    def table(self, path: str, name: str) -> None:
        """Call before rewriting the whole (unpartitioned) table `name`: it gets its rows before the run back."""
        before = delta.version(self.spark, path)

        def restore() -> None:
            if delta.version(self.spark, path) == before:
                return
            if before is None:
                delta.delete_where(self.spark, path, "true")
                return
            delta.overwrite(delta.read(self.spark, path, before), path, name)

        self.steps.append((name, restore))

    def directory(self, path: str) -> None:
        """Call before saving a bundle at `path`: it is deleted on undo unless it was there before."""
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        if fs.exists(hpath):
            return
        self.steps.append((f"model bundle {path}", lambda: fs.delete(hpath, True)))

    def run(self) -> None:
        for what, step in reversed(self.steps):
            try:
                step()
                log.warning("segment: the run failed: put back %s as it was", what)
            except Exception:
                log.error("segment: the run failed and %s could not be put back", what, exc_info=True)
        self.steps.clear()


def dated_writes(cfg: Config, undo: Undo, ctx: StageContext,
                 tables: tuple[tuple[str, DataFrame | None], ...]) -> list[Write]:
    """The replacements of the date's partitions of `tables` (a None DataFrame: no write), each table registered
    with `undo` first."""
    out: list[Write] = []
    for name, df in tables:
        if df is None:
            continue
        path = cfg.table_path(name)
        undo.partition(path, name)
        out.append((name, partial(delta.replace_partition, df, path, name, ctx.date, ctx.run_id)))
    return out


def write_together(spark: SparkSession, todo: list[Write]) -> dict[str, int]:
    """Make `todo`'s writes at once, each to its own table or directory and registered with the run's `Undo`
    (a small commit waits on Delta and the file system more than on the CPU). The first failure is raised once
    every write has ended, so that the undo sees all of them. Returns the version each named table got."""
    versions: dict[str, int] = {}

    def one(name: str | None, write: Callable[[], int | None]) -> None:
        version = write()
        if name is not None and version is not None:
            versions[name] = version

    SEL.parallel(spark, [partial(one, name, write) for name, write in todo], 4, "writes")
    return versions
