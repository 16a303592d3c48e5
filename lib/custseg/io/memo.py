"""What this process has already read, and can trust without reading it again.

- **Small bookkeeping tables** (lineage, models): read often (every stage asks which versions its inputs
  are at, and which bundle to load) and written a row at a time. Their rows are kept by table version: a
  question is answered from memory while the table is at the version the rows were read at (its version
  comes from the Delta log, about 9 ms; a filtered read is a Spark job, about 250 ms). This process's own
  one-commit appends extend the kept rows when they are the very next version, so a run's stages do not
  read back what it just wrote; a commit by anyone else moves the version and the table is read again.
  The rows are those of a table that grows with runs and dates, not with customers.
- **Saved model bundles**: a bundle's directory is written once, under its run's id, and not changed
  afterwards; it is kept while its metadata's modification time stays the same (a bundle saved again or
  removed is read again). Loading one reads about 10 small files in several Spark jobs (about 1 s);
  profile, explain, report and scoring each load the same bundle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from custseg.io import delta

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

T = TypeVar("T")

_lock = threading.Lock()
_rows: dict[str, tuple[tuple[str, int], list[Row]]] = {}  # path: ((table id, version), rows)
_bundles: dict[tuple[str, str], tuple[int, Any]] = {}  # (path, application): (modification time, bundle)


def rows(spark: SparkSession, path: str) -> list[Row] | None:
    """Every row of the small Delta table at `path` at its latest version (None: no table)."""
    if not delta.exists(spark, path):
        return None
    try:
        state = delta.log_state(spark, path)
    except Exception:  # another Delta release's internal API: nothing to key the rows on, read them
        return delta.read(spark, path).collect()
    with _lock:
        kept = _rows.get(path)
    if kept is not None and kept[0] == state:
        return kept[1]
    data = delta.read(spark, path, state[1]).collect()
    with _lock:
        _rows[path] = (state, data)
    return data


def appended(path: str, version: int, df: DataFrame) -> None:
    """This process committed `df` (rows made on the driver) to `path` as `version`, in one append."""
    with _lock:
        kept = _rows.get(path)
        if kept is None or kept[0][1] != version - 1:
            _rows.pop(path, None)
            return
    # a local relation: its rows come back without a Spark job, converted exactly as a read converts them
    new = df.collect()
    with _lock:
        if _rows.get(path) is kept:
            _rows[path] = ((kept[0][0], version), kept[1] + new)


def bundle(spark: SparkSession, path: str, marker: str, load: Callable[[], T]) -> T:
    """The bundle at `path`, loaded by `load` once for as long as its file or directory `marker` keeps its
    modification time (a bundle saved again, or removed, is read from storage again)."""
    # the loaded pipeline's stages are objects of this Spark application's JVM: another application (a session
    # stopped and started again in this process) loads its own
    key = (path, spark.sparkContext.applicationId)
    stamp = _modified(spark, marker)
    with _lock:
        kept = _bundles.get(key)
    if stamp is not None and kept is not None and kept[0] == stamp:
        return kept[1]  # type: ignore[no-any-return]
    loaded = load()
    with _lock:
        if stamp is None:
            _bundles.pop(key, None)
        else:
            _bundles[key] = (stamp, loaded)
    return loaded


def _modified(spark: SparkSession, path: str) -> int | None:
    """The modification time of `path` on its file system (None: not there, or not answered)."""
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        return int(fs.getFileStatus(hpath).getModificationTime())
    except Exception:
        return None


def clear() -> None:
    """Forget everything (tests that rewrite tables behind this process's back)."""
    with _lock:
        _rows.clear()
        _bundles.clear()
