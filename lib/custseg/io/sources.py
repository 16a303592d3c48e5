"""Reading a raw transaction log (CSV, Parquet, JSON, Delta) as it is, with the file each row came from."""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from custseg.core import columns as C
from custseg.core.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from custseg.core.config import Config

log = logging.getLogger(__name__)


def is_local_path(path: str) -> bool:
    """True for a plain or file: path that can be checked before Spark starts."""
    scheme = urlparse(path).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def check_local_input(path: str) -> None:
    """Fail early, before Spark starts, when a local input path matches nothing."""
    if not is_local_path(path):
        return
    local = urlparse(path).path if path.startswith("file:") else path
    if not glob.glob(local):
        raise InputError(f"input.path: nothing found at {path}")


def read_raw(spark: SparkSession, cfg: Config, files: list[str] | None = None) -> DataFrame:
    """The log as stored, plus `source_file`. CSV is read as text throughout, so ids keep leading zeros.

    `files`, when given, restricts the read to those files (append mode's not-yet-ingested files).
    """
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    fmt = cfg["input.format"]
    target: str | list[str] = [as_read_path(f) for f in files] if files is not None else cfg["input.path"]
    try:
        if fmt == "csv":
            reader = (
                spark.read.option("header", cfg["input.csv.header"])
                .option("sep", cfg["input.csv.delimiter"])
                .option("encoding", cfg["input.csv.encoding"])
                .option("inferSchema", False)
                # headers are checked against the first file's: a file whose columns are in another
                # order fails loudly instead of being read by position under the wrong names
                .option("enforceSchema", False)
                .option("mode", "PERMISSIVE")
                .option("multiLine", False)
            )
            df = reader.csv(target)
        elif fmt == "parquet":
            df = spark.read.parquet(*([target] if isinstance(target, str) else target))
        elif fmt == "json":
            df = spark.read.json(target)
        else:
            df = spark.read.format("delta").load(cfg["input.path"])
    except AnalysisException as e:
        msg = str(e).splitlines()[0]
        if "PATH_NOT_FOUND" in msg or "does not exist" in msg.lower():
            raise InputError(f"input.path: nothing found at {cfg['input.path']}") from None
        if "UNABLE_TO_INFER_SCHEMA" in msg:
            raise InputError(f"input.path: no readable {fmt} data at {cfg['input.path']} (empty?)") from None
        raise InputError(f"input.path: cannot read {cfg['input.path']} as {fmt}: {msg}") from None
    if C.SOURCE_FILE in df.columns:
        raise InputError(f"input: the log already has a column named {C.SOURCE_FILE!r}, which custseg reserves")
    return df.withColumn(C.SOURCE_FILE, F.col("_metadata.file_path"))


def as_read_path(uri: str) -> str:
    """A file URI from `inputFiles()` (percent-encoded) as a path the readers take literally.

    Readers decode nothing and treat glob characters as patterns, so decode, then escape the globs.
    """
    return re.sub(r"([\[\]*?{}\\])", r"\\\1", unquote(uri))


def list_input_files(spark: SparkSession, cfg: Config) -> list[str]:
    """Every data file under input.path (their number, not the rows, is what the driver holds)."""
    if cfg["input.format"] == "delta":
        raise InputError("ingest.mode: append reads new files and needs a file input (csv, parquet, json); "
                         "ingest a Delta source with ingest.mode=overwrite")
    return sorted(read_raw(spark, cfg).inputFiles())


def check_mapped_columns(df: DataFrame, cfg: Config) -> None:
    """Every column named in input.columns must exist in the log; say which are missing and what exists."""
    present = set(df.columns)
    missing = [f"input.columns.{role}={col!r}" for role, col in cfg.column_map.items() if col not in present]
    if missing:
        shown = ", ".join(c for c in df.columns if c != C.SOURCE_FILE)
        raise InputError(f"input: mapped column not in the log: {'; '.join(missing)} (columns found: {shown})")
