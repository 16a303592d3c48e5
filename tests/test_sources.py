"""Reading raw logs (`custseg.io.sources`): Parquet nanosecond timestamps, multi-line CSV, one-line read errors.

pandas is not installed in the test environment: "pandas-written" files are written the way `df.to_parquet`
writes them by default, by pyarrow (format 2.6, timestamp[ns] without a time zone, INT64 columns).
"""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, TimestampNTZType, TimestampType

from custseg import runner
from custseg.core import columns as C
from custseg.core import config
from custseg.core.config import Config
from custseg.core.errors import InputError
from custseg.io import delta as tables
from custseg.io import sources


def cfg_for(path: Path, root: Path, *extra: str) -> Config:
    return config.load(None, [f"input.path={path}", f"output.root={root}", *extra])


# --- Parquet timestamps in nanoseconds --------------------------------------------------------------------

# 2024-06-01 10:00:00.123456789, one nanosecond before the epoch, 2024-03-31 01:30, and a null
NANOS = [1_717_236_000_123_456_789, -1, 1_711_848_600_000_000_000, None]
PER_UNIT = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def write_ts(path: Path, unit: str, tz: str | None, nanos: list[int | None] = NANOS) -> Path:
    """A Parquet file whose `ts` holds `nanos` cut to `unit` (floor), written by pyarrow in that unit."""
    values = [None if n is None else n // PER_UNIT[unit] for n in nanos]
    table = pa.table({"id": pa.array(range(len(values)), pa.int64()), "ts": pa.array(values, pa.timestamp(unit, tz))})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def seen(df: DataFrame) -> list[tuple]:
    """Each row's timestamp as the instant it means (micros) and as text, in the session's time zone."""
    ordered = df.orderBy("id").select(F.unix_micros(F.col("ts").cast("timestamp")), F.col("ts").cast("string"))
    return [tuple(r) for r in ordered.collect()]


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Berlin"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_parquet_timestamps_in_any_unit_read_like_the_microsecond_file(
        spark: SparkSession, tmp_path: Path, unit: str, tz: str | None) -> None:
    path = write_ts(tmp_path / "in" / f"{unit}.parquet", unit, tz)
    # the same instants (or wall-clock times) in microseconds: what Spark reads natively
    as_written = [None if n is None else (n // PER_UNIT[unit]) * PER_UNIT[unit] for n in NANOS]
    reference = spark.read.parquet(str(write_ts(tmp_path / "ref" / "us.parquet", "us", tz, as_written)))
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")  # wall-clock times are read in this zone
    got = sources.read_raw(spark, cfg_for(path, tmp_path / "out", "input.format=parquet"))
    assert got.schema["ts"].dataType == reference.schema["ts"].dataType
    assert got.schema["ts"].dataType == (TimestampNTZType() if tz is None else TimestampType())
    assert seen(got) == seen(reference)
    if unit == "ns" and tz is None:  # the sub-microsecond digits are dropped, toward the past
        assert [r[1] for r in seen(got)][:2] == ["2024-06-01 10:00:00.123456", "1969-12-31 23:59:59.999999"]
    elif unit == "ns":
        assert [r[0] for r in seen(got)][:2] == [1_717_236_000_123_456, -1]


def test_naive_nanoseconds_follow_spark_when_it_reads_naive_timestamps_as_instants(
        spark: SparkSession, tmp_path: Path) -> None:
    key = "spark.sql.parquet.inferTimestampNTZ.enabled"
    spark.conf.set(key, "false")
    try:
        path = write_ts(tmp_path / "in" / "ns.parquet", "ns", None)
        reference = spark.read.parquet(str(write_ts(tmp_path / "ref" / "us.parquet", "us", None,
                                                    [None if n is None else n // 1000 * 1000 for n in NANOS])))
        got = sources.read_raw(spark, cfg_for(path, tmp_path / "out", "input.format=parquet"))
        assert got.schema["ts"].dataType == reference.schema["ts"].dataType == TimestampType()
        assert seen(got) == seen(reference)
    finally:
        spark.conf.unset(key)


PANDAS_ROWS = {  # what a pandas frame of a basket export holds, column by column
    "CustomerID": ["00012", "00034", "00034"],
    "InvoiceNo": ["A1", "A2", "A3"],
    "InvoiceDate": [dt.datetime(2024, 6, 1, 23, 30), dt.datetime(2024, 6, 2, 9, 15), dt.datetime(2024, 6, 3, 12, 0)],
    "Quantity": [2, 1, 3],
    "UnitPrice": [5.0, 3.5, 1.25],
    "EventNanos": [1_717_236_000_123_456_789] * 3,  # a plain integer of a timestamp's size: stays a number
    "Shipped At": [dt.datetime(2024, 6, 5, 8, 0, 0, 250)] * 3,  # a second timestamp, its name with a space
}


def write_like_pandas(path: Path, rows: dict[str, list] = PANDAS_ROWS) -> Path:
    """A file as `pandas.DataFrame(rows).to_parquet(path)` writes it: datetime64[ns] -> TIMESTAMP(NANOS,false)."""
    table = pa.table({name: pa.array(values, pa.timestamp("ns") if isinstance(values[0], dt.datetime) else None)
                      for name, values in rows.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    assert "timeUnit=nanoseconds" in str(pq.read_metadata(path).schema.column(2).logical_type)
    return path


def test_a_pandas_written_file_reads_its_timestamps_and_keeps_its_integers(spark: SparkSession, tmp_path: Path) -> None:
    path = write_like_pandas(tmp_path / "log.parquet")
    got = sources.read_raw(spark, cfg_for(path, tmp_path / "out", "input.format=parquet"))
    assert got.schema["InvoiceDate"].dataType == got.schema["Shipped At"].dataType == TimestampNTZType()
    assert got.schema["EventNanos"].dataType == LongType()  # typed by the footer, never by magnitude
    assert got.schema["Quantity"].dataType == LongType()
    rows = got.orderBy("InvoiceNo").collect()
    assert [r["InvoiceDate"] for r in rows] == PANDAS_ROWS["InvoiceDate"]
    assert [r["EventNanos"] for r in rows] == PANDAS_ROWS["EventNanos"]
    assert [r["Shipped At"] for r in rows] == PANDAS_ROWS["Shipped At"]
    assert rows[0][C.SOURCE_FILE].endswith("/log.parquet")


def test_a_column_in_nanoseconds_in_one_file_and_integers_in_another_is_refused(
        spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_ts(folder / "a.parquet", "ns", None)
    plain = pa.table({"id": pa.array([9], pa.int64()), "ts": pa.array([1_717_236_000], pa.int64())})
    pq.write_table(plain, folder / "b.parquet")
    with pytest.raises(InputError) as e:
        sources.read_raw(spark, cfg_for(folder, tmp_path / "out", "input.format=parquet"))
    assert "column 'ts' is" in str(e.value)
    assert "TIMESTAMP(NANOS,false)" in str(e.value) and "INT64 in" in str(e.value)
    assert "a.parquet" in str(e.value) and "b.parquet" in str(e.value)


def test_ingest_of_a_pandas_written_file_in_overwrite_and_append(spark: SparkSession, tmp_path: Path) -> None:
    # wall-clock times in Berlin (UTC+2 in summer): 23:30 on 1 June is 21:30 UTC, and its date is 1 June
    extra = ("input.format=parquet", "input.timezone=Europe/Berlin")
    over = cfg_for(write_like_pandas(tmp_path / "one" / "log.parquet"), tmp_path / "out1", *extra)
    result = runner.run_stage(spark, over, "ingest")
    assert (result.input, result.clean, result.quarantined) == (3, 3, 0)
    tx = tables.read(spark, over.table_path(C.TABLE_TRANSACTIONS)).orderBy(C.TRANSACTION_ID).collect()
    assert [r[C.TXN_TS] for r in tx] == [dt.datetime(2024, 6, 1, 21, 30), dt.datetime(2024, 6, 2, 7, 15),
                                         dt.datetime(2024, 6, 3, 10, 0)]
    assert [r[C.TXN_DATE] for r in tx] == [dt.date(2024, 6, 1), dt.date(2024, 6, 2), dt.date(2024, 6, 3)]

    folder = tmp_path / "many"
    write_like_pandas(folder / "a.parquet")
    append = cfg_for(folder, tmp_path / "out2", *extra, "ingest.mode=append")
    first = runner.run_stage(spark, append, "ingest")
    assert (first.new_files, first.clean) == (1, 3)
    later = {**PANDAS_ROWS, "InvoiceNo": ["B1", "B2", "B3"],
             "InvoiceDate": [dt.datetime(2024, 7, 1, 0, 30, 0, 123456)] * 3}
    write_like_pandas(folder / "b.parquet", later)
    second = runner.run_stage(spark, append, "ingest")
    assert (second.new_files, second.input, second.clean) == (1, 3, 3)
    added = tables.read(spark, append.table_path(C.TABLE_TRANSACTIONS)).filter(F.col(C.TRANSACTION_ID) == "B1")
    row = added.first()
    assert row is not None
    assert (row[C.TXN_TS], row[C.TXN_DATE]) == (dt.datetime(2024, 6, 30, 22, 30, 0, 123456), dt.date(2024, 7, 1))


# --- CSV: quoted fields with line breaks, delimiters and doubled quotes ------------------------------------

@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_quoted_csv_fields_keep_line_breaks_delimiters_and_doubled_quotes(
        spark: SparkSession, tmp_path: Path, newline: str) -> None:
    lines = [
        "InvoiceNo,CustomerID,InvoiceDate,Amount,Description",
        'T1,c1,2024-06-01 10:00:00,5.00,"Mug, blue',  # a description over two lines, with the delimiter
        'holds 300 ml"',
        'T2,c2,2024-06-02 11:00:00,7.50,"The ""Classic"" tee"',  # RFC 4180: a quote inside quotes is doubled
        "T3,c3,2024-06-03 12:00:00,1.00,plain",
    ]
    path = tmp_path / "log.csv"
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    got = sources.read_raw(spark, cfg_for(path, tmp_path / "out"))
    rows = [r.asDict() for r in got.drop(C.SOURCE_FILE).orderBy("InvoiceNo").collect()]
    assert rows == [
        {"InvoiceNo": "T1", "CustomerID": "c1", "InvoiceDate": "2024-06-01 10:00:00", "Amount": "5.00",
         "Description": "Mug, blue\nholds 300 ml"},  # a line break within quotes is read as \n
        {"InvoiceNo": "T2", "CustomerID": "c2", "InvoiceDate": "2024-06-02 11:00:00", "Amount": "7.50",
         "Description": 'The "Classic" tee'},
        {"InvoiceNo": "T3", "CustomerID": "c3", "InvoiceDate": "2024-06-03 12:00:00", "Amount": "1.00",
         "Description": "plain"},
    ]


def test_csv_multiline_is_a_configuration_key_on_by_default(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("InvoiceNo,CustomerID\nT1,c1\nT2,c2\n", encoding="utf-8")
    assert cfg_for(path, tmp_path / "out")["input.csv.multiline"] is True
    off = cfg_for(path, tmp_path / "out", "input.csv.multiline=false")
    assert off["input.csv.multiline"] is False
    assert sources.read_raw(spark, off).count() == 2


# --- one-line errors for logs Spark cannot read -----------------------------------------------------------

def assert_one_clean_line(message: str) -> None:
    assert "\n" not in message
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs") for ch in message), repr(message)
    assert "Py4J" not in message and "SQLSTATE" not in message and "\tat " not in message


def ingest_error(spark: SparkSession, cfg: Config) -> str:
    with pytest.raises(InputError) as e:
        runner.run_stage(spark, cfg, "ingest")
    assert_one_clean_line(str(e.value))
    return str(e.value)


LOG_CSV = "CustomerID,InvoiceDate,Amount\nc1,2024-06-01 10:00:00,5.00\n"


def good_parquet(path: Path, amount: pa.Array | None = None, unit: str = "us") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    when = pa.array([dt.datetime(2024, 6, 1)], pa.timestamp(unit))
    pq.write_table(pa.table({"CustomerID": ["c1"], "InvoiceDate": when,
                             "Amount": amount if amount is not None else pa.array([5.0])}), path)
    return path


@pytest.mark.parametrize("mode", ["overwrite", "append"])
def test_parquet_format_on_a_csv_file(spark: SparkSession, tmp_path: Path, mode: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(LOG_CSV, encoding="utf-8")
    msg = ingest_error(spark, cfg_for(path, tmp_path / "out", "input.format=parquet", f"ingest.mode={mode}"))
    assert msg == (f"input.path: {path} is not a Parquet file (input.format=parquet): set input.format to the log's "
                   "format (csv, json, delta)")


@pytest.mark.parametrize("unit", ["us", "ns"])  # ns: found when the footers are read, before any job
def test_a_folder_mixing_formats(spark: SparkSession, tmp_path: Path, unit: str) -> None:
    folder = tmp_path / "in"
    good_parquet(folder / "a.parquet", unit=unit)
    (folder / "b.csv").write_text(LOG_CSV, encoding="utf-8")
    msg = ingest_error(spark, cfg_for(folder, tmp_path / "out", "input.format=parquet"))
    assert msg == (f"input.path: {folder / 'b.csv'} is not a Parquet file (input.format=parquet): set input.format "
                   f"to the log's format (csv, json, delta), or move the file out of {folder}")


def test_a_folder_of_parquet_files_that_disagree_on_a_column_type(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    good_parquet(folder / "a.parquet")
    good_parquet(folder / "b.parquet", pa.array(["5.0"]))  # amount as text in one export
    msg = ingest_error(spark, cfg_for(folder, tmp_path / "out", "input.format=parquet"))
    assert msg.startswith(f"input.path: the files at {folder} do not share one schema: column 'Amount' is ")
    assert any(f"is {a} in {folder / f} but {b} in" in msg
               for a, f, b in (("BINARY", "b.parquet", "double"), ("DOUBLE", "a.parquet", "string")))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_zero_byte_file(spark: SparkSession, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"log.{fmt}"
    path.write_bytes(b"")
    msg = ingest_error(spark, cfg_for(path, tmp_path / "out", f"input.format={fmt}"))
    assert msg.startswith(f"input.path: {path}: the file is empty")


def test_a_csv_file_read_as_json(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(LOG_CSV, encoding="utf-8")
    msg = ingest_error(spark, cfg_for(path, tmp_path / "out", "input.format=json"))
    assert msg == (f"input.path: {path} is not JSON (input.format=json): no line of it is a JSON object; set "
                   "input.format to the log's format (csv, parquet, delta)")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_bytes_give_a_clean_message_in_every_format(spark: SparkSession, tmp_path: Path, seed: int) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(random.Random(seed).randbytes(2000))
    msg = ingest_error(spark, cfg_for(path, tmp_path / "out"))
    assert msg.startswith(f"input.path: {path} does not start with a CSV header of text (it reads as '")
    assert "input.csv.encoding" in msg
    assert "not a Parquet file" in ingest_error(spark, cfg_for(path, tmp_path / "out", "input.format=parquet"))
    assert "is not JSON" in ingest_error(spark, cfg_for(path, tmp_path / "out", "input.format=json"))


def test_csv_files_with_different_headers_name_the_file(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.csv").write_text(LOG_CSV, encoding="utf-8")
    (folder / "b.csv").write_text("InvoiceDate,CustomerID,Amount\n2024-06-02 10:00:00,c2,1.00\n", encoding="utf-8")
    msg = ingest_error(spark, cfg_for(folder, tmp_path / "out"))
    assert "does not match the first file's (Expected: " in msg
    assert "/in/a.csv" in msg or "/in/b.csv" in msg


def test_explain_read_error_leaves_other_failures_alone(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path / "log.csv", tmp_path / "out")
    assert sources.explain_read_error(RuntimeError("disk full"), cfg) is None
    assert sources.explain_read_error(InputError("input.path: nothing found"), cfg) is None
