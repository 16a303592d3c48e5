"""Segment, undo: put back what a failing run had already written for its date."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.io import delta

log = logging.getLogger(__name__)


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
