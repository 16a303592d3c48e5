"""Reading a raw transaction log (CSV, Parquet, JSON, Delta) as it is, with the file each row came from.

A log that cannot be read (a file of another format, an empty file, files that disagree on a column's type)
stops with a one-line `InputError` naming the file and what to do; some of these only show when the rows are
read, inside a write job: the ingest step passes every exception of the stage through `explain_read_error`,
which turns Spark's into that line.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import unicodedata
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from custseg.core import columns as C
from custseg.core.errors import CustsegError, InputError
from custseg.io import parquet_nanos
from custseg.io.parquet_nanos import display

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


def printable(text: str, limit: int = 200) -> str:
    """File-derived text fit for a one-line message: control, unprintable and undecodable characters as '?'."""
    clean = "".join(ch if ch.isprintable() and ch != "\ufffd" else "?" for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def read_raw(spark: SparkSession, cfg: Config, files: list[str] | None = None) -> DataFrame:
    """The log as stored, plus `source_file`. CSV is read as text throughout, so ids keep leading zeros.

    `files`, when given, restricts the read to those files (append mode's not-yet-ingested files).
    Parquet timestamps in nanoseconds become Spark timestamps (`parquet_nanos`).
    """
    from pyspark.sql import functions as F

    fmt = cfg["input.format"]
    df = _load(spark, cfg, files)
    if not df.columns:  # a CSV or JSON input with nothing in it
        raise InputError(_empty(df.inputFiles(), cfg))
    if fmt == "json" and df.columns == [spark.conf.get("spark.sql.columnNameOfCorruptRecord", "_corrupt_record")]:
        raise InputError(f"input.path: {_path(cfg)} is not JSON (input.format=json): no line of it is a JSON "
                         "object; set input.format to the log's format (csv, parquet, delta)")
    if fmt == "csv" and cfg["input.csv.header"]:
        _check_header(df.columns, cfg)
    if C.SOURCE_FILE in df.columns:
        raise InputError(f"input: the log already has a column named {C.SOURCE_FILE!r}, which custseg reserves")
    df = df.withColumn(C.SOURCE_FILE, F.col("_metadata.file_path"))
    if fmt == "parquet":
        df = parquet_nanos.as_timestamps(spark, df, files if files is not None else df.inputFiles())
    return df


def _load(spark: SparkSession, cfg: Config, files: list[str] | None) -> DataFrame:
    """The reader for input.format on input.path (or `files`), its read-time failures as InputError."""
    from pyspark.errors import AnalysisException

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
                # a quoted field may hold line breaks (product descriptions): read line by line, it would
                # become two broken rows. Off, a large file is split across tasks instead of read by one.
                .option("multiLine", cfg["input.csv.multiline"])
                # RFC 4180: a quote inside a quoted field is written twice ("say ""hi"""), not as \"
                .option("quote", '"')
                .option("escape", '"')
            )
            return reader.csv(target)
        if fmt == "parquet":
            parquet_nanos.enable(spark)
            return spark.read.parquet(*([target] if isinstance(target, str) else target))
        if fmt == "json":
            return spark.read.json(target)
        return spark.read.format("delta").load(cfg["input.path"])
    except AnalysisException as e:
        msg = str(e).splitlines()[0]
        if "PATH_NOT_FOUND" in msg or "does not exist" in msg.lower():
            raise InputError(f"input.path: nothing found at {cfg['input.path']}") from None
        if "UNABLE_TO_INFER_SCHEMA" in msg:
            raise InputError(f"input.path: no readable {fmt} data at {cfg['input.path']} (empty?)") from None
        if (err := explain_read_error(e, cfg)) is not None:
            raise err from None
        raise InputError(f"input.path: cannot read {cfg['input.path']} as {fmt}: {printable(msg)}") from None


def _path(cfg: Config) -> str:
    return printable(str(cfg["input.path"]), 300)


def _empty(files: list[str], cfg: Config) -> str:
    if len(files) == 1:
        return f"input.path: {printable(display(files[0]), 300)}: the file is empty (nothing to read)"
    return f"input.path: the {len(files)} files at {_path(cfg)} are empty (nothing to read)"


def _check_header(names: list[str], cfg: Config) -> None:
    """A header with control or undecodable characters is no CSV header: binary data, or another encoding."""
    def garbled(name: str) -> bool:
        return any(ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch != "\t") for ch in name)

    if any(garbled(n) for n in names):
        shown = printable(", ".join(names), 60)
        raise InputError(
            f"input.path: {_path(cfg)} does not start with a CSV header of text (it reads as '{shown}': control "
            f"or undecodable characters): a binary or compressed file, another format, or not "
            f"{cfg['input.csv.encoding']} text? Set input.format, or input.csv.encoding")


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
    return sorted(_load(spark, cfg, None).inputFiles())


# --- Spark's read failures as one line --------------------------------------------------------------------

def _causes(exc: BaseException) -> list[tuple[str, str]]:
    """(error condition, message) of `exc` and each of its causes, the JVM's when there is one."""
    out: list[tuple[str, str]] = []
    java: Any = getattr(exc, "java_exception", None) or getattr(exc, "_origin", None)
    while java is not None and len(out) < 16:
        try:
            condition = str(java.getCondition() or "")
        except Exception:  # not a SparkThrowable
            condition = ""
        out.append((condition, str(java.getMessage() or "")))
        java = java.getCause()
    err: BaseException | None = exc
    while not out and err is not None:
        get = getattr(err, "getCondition", None)
        out.append((str(get() or "") if callable(get) else "", str(err)))
        err = err.__cause__
    return out


def _first(pattern: str, texts: list[str]) -> re.Match[str] | None:
    return next((m for t in texts if (m := re.search(pattern, t)) is not None), None)


def explain_read_error(exc: BaseException, cfg: Config) -> InputError | None:
    """The one-line InputError for a Spark failure to read the input, or None when `exc` is something else.

    Recognises files of another format, empty files, files that disagree on a column's type or on the CSV
    header, column types Spark cannot read, and any other failure Spark reports on reading an input file.
    Text taken from the file or the exception is cleaned of control characters.
    """
    if isinstance(exc, CustsegError):
        return None
    try:
        causes = _causes(exc)
    except Exception:  # the JVM is gone: nothing to explain with
        return None
    texts = [m for _, m in causes]
    conditions = {c for c, _ in causes if c}
    if any(c.startswith("DELTA_") for c in conditions):
        return None  # Delta's own failures (a commit conflict, a table's schema) are not about reading the input
    found = _first(r"reading file (.+?)\.(?:\s|$)", texts) or _first(r"^(.+?) is not a Parquet file", texts)
    if found is not None and _is_under(found.group(1), cfg["output.root"]):
        return None  # one of custseg's own tables, not the input
    where = printable(display(found.group(1)), 300) if found is not None else _path(cfg)
    fmt, path = cfg["input.format"], _path(cfg)

    def error(text: str) -> InputError:
        return InputError(text.replace("\n", " "))

    if _first(r"is not a Parquet file \(length is too low: 0\)", texts):
        return error(f"input.path: {where}: the file is empty (0 bytes): write it again, or remove it")
    if _first(r"is not a Parquet file", texts) or "FAILED_READ_FILE.CANNOT_READ_FILE_FOOTER" in conditions:
        one_file = found is None or display(found.group(1)).rstrip("/") == display(str(cfg["input.path"])).rstrip("/")
        elsewhere = "" if one_file else f", or move the file out of {path}"
        return error(f"input.path: {where} is not a Parquet file (input.format={fmt}): set input.format to the "
                     f"log's format (csv, json, delta){elsewhere}")
    if m := _first(r"Parquet column \[(.*?)\]\. Expected Spark type (\S+), actual Parquet type ([^.\s]+)", texts):
        return error(f"input.path: the files at {path} do not share one schema: column "
                     f"{printable(m.group(1), 60)!r} is {m.group(3)} in {where} but {m.group(2)} in the file Spark "
                     "took the schema from; files read together must give each column one type: write them "
                     "with one type, or ingest them from separate folders")
    if m := _first(r"CSV header does not conform to the schema\.[\s\S]*?(Expected: [\s\S]*? but found: [^\n]*)",
                   texts):
        return error(f"input.path: the CSV header of {where} does not match the first file's "
                     f"({printable(m.group(1), 120)}); files whose columns differ in names or order cannot be "
                     "read together: give them one header, or ingest them separately")
    if fmt != "delta" and (m := _first(r'incompatible data types "([^"]+)" and "([^"]+)"', texts)):
        return error(f"input.path: the files at {path} do not share one schema: a column is {m.group(1)} in "
                     f"some and {m.group(2)} in others: write them with one type, or ingest them from separate "
                     "folders")
    if m := _first(r"Illegal Parquet type: ([^\n]+?)\.?(?: SQLSTATE|$)", texts):
        return error(f"input.path: {path} has a column of a Parquet type Spark cannot read "
                     f"({printable(m.group(1), 80)}): write that column as another type, or leave it out")
    if any(c.startswith("FAILED_READ_FILE") for c in conditions):
        root = next((t for t in reversed(texts) if t.strip()), "")
        return error(f"input.path: cannot read {where} as {fmt}: {printable(root.strip().splitlines()[0], 200)}")
    return None


def _is_under(uri: str, root: str) -> bool:
    base = display(root).rstrip("/")
    return bool(base) and display(uri).startswith(base + "/")
