"""`custseg export`: the customers of chosen segments as of a date, with their segment's name and recommended
action, written as CSV or Parquet files a marketing tool can load.

Reads `segments` and `segment_descriptions` at the versions the segment and explain stages recorded for the
date (the latest versions without a record), and refuses descriptions of another model run than the segments'.
The files are written in parallel (at most `export.max_records_per_file` rows each) into a hidden sibling of the
target and renamed to it only once complete, through Hadoop's FileSystem, so the same code serves local paths,
HDFS and object stores: a reader sees the previous files or the new ones, and a failed export leaves no partial
target behind.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import ConfigError, StageError
from custseg.core.keys import EXPORT_FORMATS
from custseg.core.stage import StageResult
from custseg.io import delta, lineage
from custseg.stages.export import transform as T

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportRequest:
    """What to export, from the command line: validated before Spark starts (see `request`)."""

    segments: tuple[str, ...]  # ids or names, as given
    to: str
    fmt: str = "csv"
    overwrite: bool = False


def request(segments: Sequence[str] | None, to: str | None, fmt: str = "csv", overwrite: bool = False) -> ExportRequest:
    """The export the arguments ask for; a missing or blank value is a one-line ConfigError."""
    if to is None or not to.strip():
        raise ConfigError("--to: required, and must not be empty or blank: the folder or URI to write the files to")
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format: must be one of {', '.join(EXPORT_FORMATS)} (got {fmt!r})")
    if not segments:
        raise ConfigError("--segment: required: the id or name of a segment to export (repeatable, or "
                          "comma-separated)")
    return ExportRequest(T.parse_selectors(segments), to.strip(), fmt, overwrite)


@dataclass
class ExportResult(StageResult):
    as_of: dt.date
    path: str
    fmt: str
    files: int
    segments: list[tuple[int, str, int]] = field(default_factory=list)  # (id, name, customers), in request order

    @property
    def customers(self) -> int:
        return sum(n for _, _, n in self.segments)

    def counts(self) -> dict[str, int]:
        return {"exported_customers": self.customers, "exported_files": self.files}

    def describe(self) -> str:
        rows = [f"    segment {i:>2}  {name:<32} {n:>10,} customers" for i, name, n in self.segments]
        head = (f"{self.customers:,} customers of {len(self.segments)} segment(s) as of {self.as_of} -> {self.path} "
                f"({self.files} {self.fmt} file{'s' if self.files != 1 else ''})")
        return "\n".join([head, *rows])


def run(spark: SparkSession, cfg: Config, req: ExportRequest, as_of: dt.date | None = None) -> ExportResult:
    """Export the members of `req.segments` as of `as_of` (default: the latest date in segments) to `req.to`."""
    fs = _FileSystem(spark, req.to)
    target = fs.qualified(req.to)
    _check_target(fs, target, cfg, req.overwrite)
    as_of = as_of or _latest_segments_date(spark, cfg)
    segments_df, model_run = _read_segments(spark, cfg, as_of)
    descriptions_df, available = _read_descriptions(spark, cfg, as_of, model_run)
    chosen = T.resolve_segments(req.segments, available, as_of)
    log.info("export: segments %s as of %s (model run %s) -> %s", ", ".join(map(str, chosen)), as_of, model_run,
             target)

    obs = Observation("exported")
    rows = T.export_rows(segments_df, descriptions_df, chosen).observe(
        obs, *[F.count_if(F.col(C.SEGMENT_ID) == F.lit(i)).alias(f"segment_{i}") for i in chosen])
    t0 = time.perf_counter()
    files = _write_atomically(fs, rows, target, req, cfg["export.max_records_per_file"])
    counts = obs.get
    result = ExportResult(as_of, target, req.fmt, files,
                          [(i, available[i], int(counts.get(f"segment_{i}") or 0)) for i in chosen])
    log.info("export: %d customers in %d file(s) in %.1f s", result.customers, files, time.perf_counter() - t0)
    return result


def _latest_segments_date(spark: SparkSession, cfg: Config) -> dt.date:
    path = cfg.table_path(C.TABLE_SEGMENTS)
    if not delta.exists(spark, path):
        raise StageError(f"no segments table at {path}: run `custseg segment` first")
    row = delta.read(spark, path).agg(F.max(C.AS_OF_DATE)).first()
    if row is None or row[0] is None:
        raise StageError(f"the segments table at {path} is empty: run `custseg segment` first")
    log.info("as-of date not given: using the latest date in segments, %s", row[0])
    return row[0]  # type: ignore[no-any-return]


def _read_segments(spark: SparkSession, cfg: Config, as_of: dt.date) -> tuple[DataFrame, str]:
    """The date's segments at the version the segment stage recorded, and the model run that assigned them."""
    producer = catalog.table(C.TABLE_SEGMENTS).producer
    version = lineage.input_version(spark, cfg, C.TABLE_SEGMENTS, producer, as_of)
    if version is None:
        raise StageError(f"no segments table at {cfg.table_path(C.TABLE_SEGMENTS)}: run `custseg segment --as-of "
                         f"{as_of}` first")
    df = delta.read(spark, cfg.table_path(C.TABLE_SEGMENTS), version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    first = df.select(C.MODEL_RUN_ID).first()
    if first is None:
        raise StageError(f"no segments as of {as_of}: run `custseg segment --as-of {as_of}` first")
    log.info("export: segments version %d", version)
    return df, str(first[0])


def _read_descriptions(spark: SparkSession, cfg: Config, as_of: dt.date,
                       model_run: str) -> tuple[DataFrame, dict[int, str]]:
    """The date's descriptions at the version the explain stage recorded, and their segment id -> name.

    They must describe the segments' model run: descriptions of an earlier run are stale."""
    name = C.TABLE_SEGMENT_DESCRIPTIONS
    explain = f"run `custseg explain --as-of {as_of}` first"
    version = lineage.input_version(spark, cfg, name, catalog.table(name).producer, as_of)
    if version is None:
        raise StageError(f"no segment descriptions as of {as_of} (no {name} table): {explain}")
    df = delta.read(spark, cfg.table_path(name), version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    rows = df.select(C.SEGMENT_ID, C.SEGMENT_NAME, C.MODEL_RUN_ID).collect()  # one row per segment
    if not rows:
        raise StageError(f"no segment descriptions as of {as_of}: {explain}")
    described = sorted({str(r[C.MODEL_RUN_ID]) for r in rows})
    if described != [model_run]:
        raise StageError(f"the segment descriptions as of {as_of} describe model run {', '.join(described)}, but the "
                         f"segments as of {as_of} were assigned by model run {model_run}: run `custseg explain "
                         f"--as-of {as_of}` to describe the current segments")
    log.info("export: %s version %d, %d segments", name, version, len(rows))
    return df, {int(r[C.SEGMENT_ID]): str(r[C.SEGMENT_NAME]) for r in rows}


class _FileSystem:
    """Hadoop's FileSystem for a path, through the JVM gateway: any URI the cluster understands."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        jvm: Any = spark._jvm
        self._path_class = jvm.org.apache.hadoop.fs.Path
        self._conf = spark._jsc.hadoopConfiguration()
        self.fs = self._path_class(path).getFileSystem(self._conf)

    def path(self, path: str) -> Any:
        return self._path_class(path)

    def qualified(self, path: str) -> str:
        """The path as an absolute URI (a relative local path: from the working folder, as Spark resolves it);
        `path` may be on another file system than this one's."""
        p = self.path(path)
        return str(p.getFileSystem(self._conf).makeQualified(p).toString())

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self.path(path)))

    def sibling(self, path: str, kind: str) -> str:
        """A hidden, unique folder next to `path` (a name starting with '.': readers of the parent skip it)."""
        p = self.path(path)
        parent = p.getParent()
        if parent is None:
            raise StageError(f"--to {path}: cannot export to the root of a file system")
        return str(self._path_class(parent, f".{p.getName()}.{kind}-{uuid.uuid4().hex[:12]}").toString())

    def rename(self, src: str, dst: str) -> bool:
        return bool(self.fs.rename(self.path(src), self.path(dst)))

    def delete(self, path: str) -> None:
        self.fs.delete(self.path(path), True)

    def data_files(self, folder: str) -> int:
        return sum(1 for s in self.fs.listStatus(self.path(folder)) if str(s.getPath().getName()).startswith("part-"))


def _check_target(fs: _FileSystem, target: str, cfg: Config, overwrite: bool) -> None:
    """Refuse an existing target without --overwrite, and one whose replacement would delete custseg's tables."""
    root = fs.qualified(str(cfg["output.root"])).rstrip("/")
    if f"{root}/".startswith(f"{target.rstrip('/')}/"):
        raise StageError(f"--to {target}: is output.root or a folder holding it; choose another folder")
    if not fs.exists(target):
        return
    if not overwrite:
        raise StageError(f"--to {target}: already exists; pass --overwrite to replace it")
    if fs.exists(f"{target.rstrip('/')}/_delta_log"):
        raise StageError(f"--to {target}: is a Delta table, not an export; choose another folder")


def _write_atomically(fs: _FileSystem, rows: DataFrame, target: str, req: ExportRequest, max_records: int) -> int:
    """Write `rows` into a hidden sibling of `target`, then rename it to `target`; return the number of files.

    An existing target (--overwrite) is moved aside before the rename and deleted after it: it is replaced only
    once the new files are complete, and put back if the rename fails. On any failure the sibling is removed."""
    tmp = fs.sibling(target, "export")
    writer = rows.write.mode("errorifexists").option("maxRecordsPerFile", max_records)
    try:
        if req.fmt == "csv":  # RFC 4180 quoting (a quote in a message is doubled), which spreadsheets expect
            writer.option("header", True).option("escape", '"').csv(tmp)
        else:
            writer.parquet(tmp)
        files = fs.data_files(tmp)
        _publish(fs, tmp, target, req.overwrite)
    except BaseException:
        if fs.exists(tmp):
            try:
                fs.delete(tmp)
            except Exception:  # the original failure matters more
                log.warning("could not remove the temporary folder %s", tmp, exc_info=True)
        raise
    return files


def _publish(fs: _FileSystem, tmp: str, target: str, overwrite: bool) -> None:
    """Rename the complete `tmp` to `target` (FileSystem.rename moves a folder *into* an existing one: the target
    must be gone first)."""
    old = None
    if fs.exists(target):
        if not overwrite:
            raise StageError(f"--to {target}: already exists; pass --overwrite to replace it")
        old = fs.sibling(target, "replaced")
        if not fs.rename(target, old):
            raise StageError(f"--to {target}: could not move the existing files aside to replace them")
    if not fs.rename(tmp, target):
        if old is not None and not fs.exists(target):
            fs.rename(old, target)
        raise StageError(f"--to {target}: could not rename the written files from {tmp}")
    if old is not None:
        fs.delete(old)
