"""Parquet timestamps in nanoseconds (pandas' and pyarrow's default) read as Spark timestamps.

Spark 4.2 cannot read an INT64 TIMESTAMP(NANOS) column: the read stops with PARQUET_TYPE_ILLEGAL. With
`spark.sql.legacy.parquet.nanosAsLong` such a column is read as a LongType of nanoseconds since the epoch,
which then looks like any other integer column. Which columns they are is read from the files' footers (the
type the writer declared; values are never looked at), and each becomes exactly the type Spark gives the
same column written in microseconds: TimestampType for an instant (isAdjustedToUTC=true), and for a
wall-clock time (isAdjustedToUTC=false) TimestampNTZType, or TimestampType when
`spark.sql.parquet.inferTimestampNTZ.enabled` is off, as Spark does for microsecond files.

The footers are read through the JVM (Parquet's own reader, with the session's Hadoop configuration), so
any file system Spark reads works; their number, not the rows, is the cost, and only when the log has an
integer column at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from custseg.core.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
INFER_NTZ = "spark.sql.parquet.inferTimestampNTZ.enabled"
NANOS_UTC = "INT64 (TIMESTAMP(NANOS,true))"
NANOS_LOCAL = "INT64 (TIMESTAMP(NANOS,false))"
_FOOTER_THREADS = 8


def enable(spark: SparkSession) -> None:
    """Let Spark read TIMESTAMP(NANOS) columns (as LongType) instead of refusing the file.

    Left on for the session: the reader of the write job plans with it again, and a setting switched back
    and forth would race with another thread's read. It changes nothing else (any other file with such a
    column fails without it).
    """
    spark.conf.set(NANOS_AS_LONG, "true")


def display(uri: str) -> str:
    """A file URI as a person reads it: a local file's path, else the URI, percent-decoded."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else unquote(uri)


def _footer_reader(spark: SparkSession) -> Callable[[str, Sequence[str]], dict[str, str]]:
    """A function giving, from one file's footer, the declared type of each of `names` the file has.

    Types as Parquet declares them, e.g. 'INT64 (TIMESTAMP(NANOS,true))'. A handful of calls into the JVM per
    file plus two per name, as there may be thousands of files.
    """
    jvm: Any = spark._jvm
    session: Any = spark._jsparkSession
    conf = session.sessionState().newHadoopConf()
    skip_row_groups = jvm.org.apache.parquet.format.converter.ParquetMetadataConverter.SKIP_ROW_GROUPS
    options = jvm.org.apache.parquet.HadoopReadOptions.builder(conf).withMetadataFilter(skip_row_groups).build()
    case_sensitive = spark.conf.get("spark.sql.caseSensitive", "false") == "true"

    def read(uri: str, names: Sequence[str]) -> dict[str, str]:
        path = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))
        reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(
            jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(path, conf), options)
        try:
            schema = reader.getFileMetaData().getSchema()
        finally:
            reader.close()
        out: dict[str, str] = {}
        for name in names:
            stored: str | None = name
            if not schema.containsField(name):  # Spark matches names ignoring case unless told otherwise
                stored = None if case_sensitive else next(
                    (n for f in schema.getFields() if (n := str(f.getName())).lower() == name.lower()), None)
            if stored is not None:
                out[name] = declared(str(schema.getType(stored).toString()), stored)
        return out

    return read


def declared(text: str, name: str) -> str:
    """Parquet's text of field `name` ('optional int64 ts (TIMESTAMP(NANOS,true)) = 3;') as its type alone."""
    _, physical, rest = text.split(" ", 2)
    annotation = rest[len(name):].split("{", 1)[0].strip().rstrip(";").split(" = ")[0].strip()
    return f"{physical.upper()} {annotation}".strip()


def nanos_columns(spark: SparkSession, files: Sequence[str], names: Sequence[str]) -> dict[str, str]:
    """Of `names` (the log's LongType columns), those stored as TIMESTAMP(NANOS) in every file that has them.

    Returns column -> NANOS_UTC or NANOS_LOCAL. A column that is nanoseconds in one file and anything else
    (plain integers, another unit, the other time-zone flag) in another is an InputError: read together,
    Spark would mix nanoseconds with other numbers in one column without a word.
    """
    if not names or not files:
        return {}
    read = _footer_reader(spark)
    with ThreadPoolExecutor(max_workers=min(_FOOTER_THREADS, len(files))) as pool:
        footers = list(pool.map(lambda f: read(f, names), files))
    found: dict[str, str] = {}
    for name in names:
        seen: dict[str, str] = {}  # type -> first file with it
        for uri, types in zip(files, footers, strict=True):
            if name in types:
                seen.setdefault(types[name], uri)
        if not any(k in seen for k in (NANOS_UTC, NANOS_LOCAL)):
            continue
        if len(seen) > 1:
            (t1, f1), (t2, f2) = sorted(seen.items(), key=lambda kv: files.index(kv[1]))[:2]
            raise InputError(
                f"input.path: column {name!r} is {t1} in {display(f1)} but {t2} in {display(f2)}; the files "
                "read together must give a column one type (Spark would read the nanoseconds as plain numbers "
                "next to the others): write them with one type, or ingest them from separate folders")
        found[name] = next(iter(seen))
    return found


def _micros(name: str) -> Column:
    """Nanoseconds since the epoch as whole microseconds, in exact integer arithmetic.

    Spark's timestamps hold microseconds: the last three digits are dropped, rounding toward the past
    (as a timestamp truncated to the microsecond), so -1 ns is -1 us, not 0.
    """
    from pyspark.sql import functions as F

    quoted = "`" + name.replace("`", "``") + "`"
    whole = F.expr(f"{quoted} div 1000")
    return F.when(F.expr(f"{quoted} % 1000") < 0, whole - 1).otherwise(whole)


def as_timestamps(spark: SparkSession, df: DataFrame, files: Sequence[str]) -> DataFrame:
    """`df` (read with `enable`) with its nanosecond columns as the timestamps a microsecond file gives."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    longs = [f.name for f in df.schema.fields if isinstance(f.dataType, LongType)]
    nanos = nanos_columns(spark, files, longs)
    if not nanos:
        return df
    wall_clock_as_ntz = spark.conf.get(INFER_NTZ, "true") == "true"
    epoch_ntz = F.expr("TIMESTAMP_NTZ '1970-01-01 00:00:00'")

    def converted(name: str) -> Column:
        micros = _micros(name)
        if nanos[name] == NANOS_LOCAL and wall_clock_as_ntz:
            # a wall-clock time: micros after a wall-clock epoch, no time zone involved
            return F.timestamp_add("MICROSECOND", micros, epoch_ntz).alias(name)
        # an instant, or (inferTimestampNTZ off) a wall-clock time Spark reads as if it were UTC
        return F.timestamp_micros(micros).alias(name)

    return df.select(*[converted(c) if c in nanos else F.col("`" + c.replace("`", "``") + "`") for c in df.columns])
