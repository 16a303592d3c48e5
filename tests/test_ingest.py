"""Ingest's pure transforms on tiny in-memory logs of text columns (as a CSV read gives them)."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Callable
from decimal import Decimal

import pytest
from chispa import assert_df_equality
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import columns as C
from custseg.stages.ingest import transform as ingest

NOW = dt.datetime(2024, 7, 1, 0, 0, 0, tzinfo=dt.UTC)
TS = "2024-06-30 13:45:00"
TS_PARSED = dt.datetime(2024, 6, 30, 13, 45, 0)  # naive = UTC (the tests' process and session zone)

AMOUNT_MAP = {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "transaction_id": "tx", "category": "cat"}
AMOUNT_SCHEMA = "cust string, ts string, amt string, tx string, cat string, source_file string"

QP_MAP = {"customer_id": "cust", "timestamp": "ts", "quantity": "qty", "unit_price": "price", "transaction_id": "tx"}
QP_SCHEMA = "cust string, ts string, qty string, price string, tx string, source_file string"


def validated(df: DataFrame, column_map: dict[str, str], fmt: str = "") -> DataFrame:
    return df.transform(ingest.with_canonical_columns(column_map, fmt)).transform(
        ingest.with_quarantine_reasons(column_map, ingest.Checks(NOW))
    )


def dedupe(has_transaction_id: bool) -> Callable[[DataFrame], DataFrame]:
    def transform(df: DataFrame) -> DataFrame:
        return df.transform(ingest.mark_duplicate_lines(has_transaction_id)).transform(ingest.drop_marked_duplicates)
    return transform


def reason_counts(df: DataFrame) -> dict[str, int]:
    return df.agg(*ingest.reason_counts()).first().asDict()


# --- quarantine reasons: amount column mapped -------------------------------------------------------

# the transaction id column labels each row
AMOUNT_ROWS = [
    ("000123", TS, "10.5", "ok", "books"),
    ("  ", TS, "5", "blank_id", "books"),
    (None, TS, "5", "null_id", "books"),
    ("c4", None, "5", "null_ts", "books"),
    ("c5", "   ", "5", "blank_ts", "books"),
    ("c6", "30th of June", "5", "bad_ts", "books"),
    ("c7", "2024-07-01 00:00:01", "5", "future_ts", "books"),
    ("c8", "2024-07-01 00:00:00", "5", "now_ts", "books"),
    ("c9", TS, None, "null_amount", "books"),
    ("c10", TS, " ", "blank_amount", "books"),
    ("c11", TS, "abc", "bad_amount", "books"),
    ("c12", TS, "NaN", "nan_amount", "books"),
    ("c13", TS, "Infinity", "inf_amount", "books"),
    ("c14", TS, "-3.5", "return", "books"),
    (" ", "garbage", "abc", "many", "books"),
    ("c16", "2099-01-01", "", "future_and_missing", None),
]

AMOUNT_EXPECTED_REASONS = {
    "ok": [],
    "blank_id": ["missing_customer_id"],
    "null_id": ["missing_customer_id"],
    "null_ts": ["missing_timestamp"],
    "blank_ts": ["missing_timestamp"],
    "bad_ts": ["unparsable_timestamp"],
    "future_ts": ["future_timestamp"],
    "now_ts": [],
    "null_amount": ["missing_amount"],
    "blank_amount": ["missing_amount"],
    "bad_amount": ["unparsable_amount"],
    "nan_amount": ["unparsable_amount"],
    "inf_amount": ["unparsable_amount"],
    "return": [],
    "many": ["missing_customer_id", "unparsable_timestamp", "unparsable_amount"],
    "future_and_missing": ["future_timestamp", "missing_amount"],
}


@pytest.fixture(scope="module")
def amount_log(spark: SparkSession) -> DataFrame:
    rows = [(*r, "file:/in/log.csv") for r in AMOUNT_ROWS]
    return validated(spark.createDataFrame(rows, AMOUNT_SCHEMA), AMOUNT_MAP).cache()


def test_every_bad_row_gets_its_reasons(amount_log: DataFrame) -> None:
    got = {r[C.TRANSACTION_ID]: (r[C.REASON], r[C.REASONS]) for r in amount_log.collect()}
    assert set(got) == set(AMOUNT_EXPECTED_REASONS)
    for tx, reasons in AMOUNT_EXPECTED_REASONS.items():
        assert got[tx] == (reasons[0] if reasons else None, reasons), tx


def test_first_reason_counts(amount_log: DataFrame) -> None:
    assert reason_counts(amount_log) == {
        "input": 16,
        "valid": 3,
        "missing_customer_id": 3,
        "missing_timestamp": 2,
        "unparsable_timestamp": 1,
        "future_timestamp": 2,
        "missing_amount": 2,
        "unparsable_amount": 3,
        "unparsable_quantity": 0,
        "unparsable_unit_price": 0,
        "timestamp_before_earliest_date": 0,
        "implausible_amount": 0,
        "implausible_quantity": 0,
        "implausible_unit_price": 0,
    }


def test_filter_clean_and_quarantined_split_the_log(amount_log: DataFrame) -> None:
    clean = {r[C.TRANSACTION_ID] for r in amount_log.transform(ingest.filter_clean).collect()}
    bad = {r[C.TRANSACTION_ID] for r in amount_log.transform(ingest.filter_quarantined).collect()}
    assert clean == {"ok", "now_ts", "return"}
    assert bad == {
        "blank_id", "null_id", "null_ts", "blank_ts", "bad_ts", "future_ts", "null_amount", "blank_amount",
        "bad_amount", "nan_amount", "inf_amount", "many", "future_and_missing",
    }


def test_clean_rows_to_transactions(spark: SparkSession, amount_log: DataFrame) -> None:
    out = amount_log.transform(ingest.filter_clean).transform(ingest.to_transactions("batch-1"))
    assert out.schema.names == ingest.TRANSACTIONS_SCHEMA.names
    expected = spark.createDataFrame(
        [
            ("000123", "ok", TS_PARSED, 10.5, None, None, False, "books", None, None, "file:/in/log.csv",
             "batch-1", dt.date(2024, 6, 30), dt.date(2024, 6, 1)),
            ("c8", "now_ts", dt.datetime(2024, 7, 1, 0, 0, 0), 5.0, None, None, False, "books", None, None,
             "file:/in/log.csv", "batch-1", dt.date(2024, 7, 1), dt.date(2024, 7, 1)),
            ("c14", "return", TS_PARSED, -3.5, None, None, True, "books", None, None, "file:/in/log.csv",
             "batch-1", dt.date(2024, 6, 30), dt.date(2024, 6, 1)),
        ],
        ingest.TRANSACTIONS_SCHEMA,
    )
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_quarantine_rows_keep_raw_strings(amount_log: DataFrame) -> None:
    quarantined = amount_log.transform(ingest.filter_quarantined).transform(ingest.to_quarantine("batch-1", NOW))
    assert quarantined.columns == list(ingest.QUARANTINE_COLUMNS)
    rows = {r[C.RAW_RECORD]["tx"]: r for r in quarantined.collect()}
    many = rows["many"]
    assert many[C.RAW_RECORD] == {"cust": " ", "ts": "garbage", "amt": "abc", "tx": "many", "cat": "books"}
    assert many[C.REASON] == "missing_customer_id"
    assert many[C.SOURCE_FILE] == "file:/in/log.csv"
    assert many[C.INGEST_BATCH] == "batch-1"
    assert many[C.QUARANTINED_AT] == dt.datetime(2024, 7, 1, 0, 0, 0)
    assert many[C.QUARANTINE_DATE] == dt.date(2024, 7, 1)
    assert rows["blank_id"][C.RAW_RECORD]["cust"] == "  "
    assert rows["null_id"][C.RAW_RECORD]["cust"] is None
    assert rows["nan_amount"][C.RAW_RECORD]["amt"] == "NaN"


def test_future_tolerance_moves_the_cut(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("c1", "2024-07-01 00:04:59", "1", "in_tolerance", None, "f"),
         ("c2", "2024-07-01 00:05:01", "1", "beyond", None, "f")],
        AMOUNT_SCHEMA,
    )
    out = df.transform(ingest.with_canonical_columns(AMOUNT_MAP)).transform(
        ingest.with_quarantine_reasons(AMOUNT_MAP, ingest.Checks(NOW, dt.timedelta(minutes=5)))
    )
    assert {r[C.TRANSACTION_ID]: r[C.REASON] for r in out.collect()} == {
        "in_tolerance": None,
        "beyond": "future_timestamp",
    }


# --- quarantine reasons: quantity x unit price ------------------------------------------------------

QP_ROWS = [
    ("1", TS, "3", "2.50", "ok"),
    ("2", TS, "x", "2.50", "bad_qty"),
    ("3", TS, "2", "", "blank_price"),
    ("4", TS, "2", None, "null_price"),
    ("5", TS, "", "2.0", "blank_qty"),
    ("6", TS, "2", "abc", "bad_price"),
    ("7", TS, "-2", "1.25", "return"),
    ("8", TS, "1e200", "1e200", "overflow"),
    ("9", TS, "NaN", "1", "nan_qty"),
]


@pytest.fixture(scope="module")
def qp_log(spark: SparkSession) -> DataFrame:
    rows = [(*r, "file:/in/qp.csv") for r in QP_ROWS]
    return validated(spark.createDataFrame(rows, QP_SCHEMA), QP_MAP).cache()


def test_quantity_price_reasons(qp_log: DataFrame) -> None:
    got = {r[C.TRANSACTION_ID]: r[C.REASONS] for r in qp_log.collect()}
    assert got == {
        "ok": [],
        "bad_qty": ["unparsable_quantity"],
        "blank_price": ["missing_amount"],
        "null_price": ["missing_amount"],
        "blank_qty": ["missing_amount"],
        "bad_price": ["unparsable_unit_price"],
        "return": [],
        "overflow": ["unparsable_amount"],
        "nan_qty": ["unparsable_quantity"],
    }
    assert reason_counts(qp_log) == {
        "input": 9,
        "valid": 2,
        "missing_customer_id": 0,
        "missing_timestamp": 0,
        "unparsable_timestamp": 0,
        "future_timestamp": 0,
        "missing_amount": 3,
        "unparsable_amount": 1,
        "unparsable_quantity": 2,
        "unparsable_unit_price": 1,
        "timestamp_before_earliest_date": 0,
        "implausible_amount": 0,
        "implausible_quantity": 0,
        "implausible_unit_price": 0,
    }


def test_amount_is_quantity_times_unit_price(qp_log: DataFrame) -> None:
    clean = qp_log.transform(ingest.filter_clean).transform(ingest.to_transactions("b"))
    got = {r[C.TRANSACTION_ID]: (r[C.QUANTITY], r[C.UNIT_PRICE], r[C.AMOUNT], r[C.IS_RETURN]) for r in clean.collect()}
    assert got == {"ok": (3.0, 2.5, 7.5, False), "return": (-2.0, 1.25, -2.5, True)}


# --- identifiers ------------------------------------------------------------------------------------

def test_text_ids_keep_leading_zeros_and_lose_point_zero(spark: SparkSession) -> None:
    ids = ["000123", "17850.0", " 42 ", "00123.00", "17850.50", "A-17.0", "C536379"]
    df = spark.createDataFrame([(i, TS, "1", i, "f") for i in ids],
                               "cust string, ts string, amt string, tx string, source_file string")
    out = df.transform(ingest.with_canonical_columns({"customer_id": "cust", "timestamp": "ts", "amount": "amt",
                                                      "transaction_id": "tx"}))
    got = [(r[C.CUSTOMER_ID], r[C.TRANSACTION_ID]) for r in out.collect()]
    expected = ["000123", "17850", "42", "00123", "17850.50", "A-17.0", "C536379"]
    assert got == [(e, e) for e in expected]


def test_numeric_ids_are_written_without_point_zero(spark: SparkSession) -> None:
    schema = T.StructType([
        T.StructField("cust", T.DoubleType()),
        T.StructField("ts", T.StringType()),
        T.StructField("amt", T.StringType()),
        T.StructField("inv", T.LongType()),
        T.StructField("source_file", T.StringType()),
    ])
    rows = [(17850.0, TS, "1", 536365, "f"), (123.5, TS, "1", 7, "f"), (float("nan"), TS, "1", None, "f"),
            (None, TS, "1", 1, "f"), (1e15, TS, "1", 2, "f")]
    out = spark.createDataFrame(rows, schema).transform(
        ingest.with_canonical_columns(
            {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "transaction_id": "inv"}
        )
    )
    got = [(r[C.CUSTOMER_ID], r[C.TRANSACTION_ID]) for r in out.collect()]
    assert got == [("17850", "536365"), ("123.5", "7"), (None, None), (None, "1"), ("1000000000000000", "2")]


# --- timestamps -------------------------------------------------------------------------------------

TIMESTAMP_CASES = [
    ("2024-06-30 13:45:00", dt.datetime(2024, 6, 30, 13, 45)),
    ("2024-06-30T13:45:00Z", dt.datetime(2024, 6, 30, 13, 45)),
    ("2024-06-30T15:45:00+02:00", dt.datetime(2024, 6, 30, 13, 45)),
    ("2024-06-30", dt.datetime(2024, 6, 30, 0, 0)),
    ("6/30/2024 13:45", dt.datetime(2024, 6, 30, 13, 45)),
    ("12/1/2010 8:26", dt.datetime(2010, 12, 1, 8, 26)),
    ("6/30/2024 1:45 PM", dt.datetime(2024, 6, 30, 13, 45)),
    ("6/30/2024", dt.datetime(2024, 6, 30, 0, 0)),
    ("2024/6/30 13:45", dt.datetime(2024, 6, 30, 13, 45)),
    ("30.06.2024 13:45", dt.datetime(2024, 6, 30, 13, 45)),
    ("20240630", dt.datetime(2024, 6, 30, 0, 0)),
    ("30-Jun-2024", dt.datetime(2024, 6, 30, 0, 0)),
    ("1719755100", dt.datetime(2024, 6, 30, 13, 45)),  # epoch seconds
    ("1719755100000", dt.datetime(2024, 6, 30, 13, 45)),  # epoch milliseconds
    ("not a date", None),
    ("13/30/2024 10:00", None),  # month first: there is no month 13
]


@pytest.fixture(scope="module")
def parsed_timestamps(spark: SparkSession) -> dict[str, dt.datetime | None]:
    """Every case parsed in one job (one row each, labelled by its text)."""
    df = spark.createDataFrame([("c1", text, "1", text, "f") for text, _ in TIMESTAMP_CASES],
                               "cust string, ts string, amt string, tx string, source_file string")
    out = df.transform(ingest.with_canonical_columns({"customer_id": "cust", "timestamp": "ts", "amount": "amt",
                                                      "transaction_id": "tx"}))
    return {r[C.TRANSACTION_ID]: r[C.TXN_TS] for r in out.collect()}


@pytest.mark.parametrize(("text", "expected"), TIMESTAMP_CASES, ids=[t for t, _ in TIMESTAMP_CASES])
def test_timestamp_formats_recognised_without_a_format(
    parsed_timestamps: dict[str, dt.datetime | None], text: str, expected: dt.datetime | None
) -> None:
    assert parsed_timestamps[text] == expected


def test_explicit_timestamp_format(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("c1", "30/6/2024 13:45", "1", "a", "f"), ("c2", "2024-06-30 13:45:00", "1", "b", "f")],
        "cust string, ts string, amt string, tx string, source_file string",
    )
    cols = {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "transaction_id": "tx"}
    out = validated(df, cols, "d/M/yyyy H:mm")
    got = {r[C.TRANSACTION_ID]: (r[C.TXN_TS], r[C.REASON]) for r in out.collect()}
    # with a format given, only that format is read
    assert got == {"a": (dt.datetime(2024, 6, 30, 13, 45), None), "b": (None, "unparsable_timestamp")}


def test_session_time_zone_reads_wall_clock_times_and_dates(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("c1", "2024-06-30 23:30:00", "1", "late", "f"), ("c2", "2024-07-01 00:30:00", "1", "after_midnight", "f"),
         ("c3", "2024-06-30T23:30:00Z", "1", "utc", "f")],
        "cust string, ts string, amt string, tx string, source_file string",
    )
    cols = {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "transaction_id": "tx"}
    spark.conf.set("spark.sql.session.timeZone", "Europe/Berlin")  # UTC+2 in summer
    try:
        out = validated(df, cols).transform(ingest.to_transactions("b"))
        got = {r[C.TRANSACTION_ID]: (r[C.TXN_TS], r[C.TXN_DATE]) for r in out.collect()}
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert got == {
        "late": (dt.datetime(2024, 6, 30, 21, 30), dt.date(2024, 6, 30)),
        "after_midnight": (dt.datetime(2024, 6, 30, 22, 30), dt.date(2024, 7, 1)),
        "utc": (dt.datetime(2024, 6, 30, 23, 30), dt.date(2024, 7, 1)),
    }


# --- duplicates -------------------------------------------------------------------------------------

DUP_ROWS = [
    ("c1", TS, "2.5", "T1", "books", "file:/in/a.csv"),
    ("c1", TS, "2.5", "T1", "books", "file:/in/b.csv"),  # the same line, in another file
    ("c1", TS, "2.5", "T2", "books", "file:/in/a.csv"),  # same values, another transaction
]


def test_duplicate_lines_dropped_when_transaction_id_mapped(spark: SparkSession) -> None:
    df = spark.createDataFrame(DUP_ROWS, AMOUNT_SCHEMA)
    out = validated(df, AMOUNT_MAP).transform(ingest.filter_clean).transform(dedupe(True))
    assert sorted(r[C.TRANSACTION_ID] for r in out.collect()) == ["T1", "T2"]


def test_duplicate_line_kept_is_the_one_from_the_first_file_in_path_order(spark: SparkSession) -> None:
    rows = [DUP_ROWS[1], DUP_ROWS[0]]  # b.csv's copy first
    for parts in (1, 2):  # in one partition, and with the copies in different input partitions
        df = spark.createDataFrame(rows, AMOUNT_SCHEMA).repartition(parts)
        out = (validated(df, AMOUNT_MAP).transform(ingest.filter_clean).transform(ingest.clustered_by_day)
               .transform(dedupe(True)))
        assert [(r[C.TRANSACTION_ID], r[C.SOURCE_FILE]) for r in out.collect()] == [("T1", "file:/in/a.csv")]


def test_duplicate_lines_kept_without_transaction_id(spark: SparkSession) -> None:
    df = spark.createDataFrame(DUP_ROWS, AMOUNT_SCHEMA)
    cols = {k: v for k, v in AMOUNT_MAP.items() if k != "transaction_id"}
    out = validated(df, cols).transform(ingest.filter_clean).transform(dedupe(False))
    assert out.count() == 3
    assert {r[C.TRANSACTION_ID] for r in out.collect()} == {None}


def test_equal_lines_with_blank_transaction_id_are_kept(spark: SparkSession) -> None:
    rows = [("c1", TS, "2.5", "", "books", "file:/in/a.csv"), ("c1", TS, "2.5", "", "books", "file:/in/a.csv")]
    df = spark.createDataFrame(rows, AMOUNT_SCHEMA)
    out = validated(df, AMOUNT_MAP).transform(ingest.filter_clean).transform(dedupe(True))
    assert out.count() == 2


# --- a duplicate is a repeat of the whole source record -------------------------------------------

BASKET_MAP = {"customer_id": "cust", "timestamp": "ts", "amount": "amt", "transaction_id": "tx", "category": "cat"}
BASKET_SCHEMA = "cust string, ts string, amt string, tx string, cat string, product string, source_file string"


def test_different_products_in_one_basket_are_not_duplicates(spark: SparkSession) -> None:
    # equal on every mapped role, different in a column custseg does not map (the product)
    rows = [("c1", TS, "2.5", "B1", "dairy", "milk", "file:/in/a.csv"),
            ("c1", TS, "2.5", "B1", "dairy", "butter", "file:/in/a.csv"),
            ("c1", TS, "2.5", "B1", "dairy", "milk", "file:/in/a.csv")]  # an exact repeat of the first line
    out = validated(spark.createDataFrame(rows, BASKET_SCHEMA), BASKET_MAP).transform(ingest.filter_clean) \
        .transform(ingest.clustered_by_day).transform(dedupe(True))
    assert sorted(r[C.RAW_RECORD]["product"] for r in out.collect()) == ["butter", "milk"]


def test_a_repeated_record_across_two_files_is_kept_once_from_the_first_file(spark: SparkSession) -> None:
    rows = [("c1", TS, "2.5", "B1", "dairy", "milk", "file:/in/b.csv"),
            ("c1", TS, "2.5", "B1", "dairy", "milk", "file:/in/a.csv"),
            ("c1", TS, "2.5", "B1", "dairy", "milk", "file:/in/c.csv")]
    marked = validated(spark.createDataFrame(rows, BASKET_SCHEMA).repartition(3), BASKET_MAP) \
        .transform(ingest.filter_clean).transform(ingest.clustered_by_day) \
        .transform(ingest.mark_duplicate_lines(True))
    seen = marked.agg(*ingest.duplicate_observations()).first()
    assert seen["duplicates"] == 2
    assert (seen["first"]["id"], seen["first"]["file"], seen["last"]["file"]) == ("B1", "file:/in/b.csv",
                                                                                 "file:/in/c.csv")
    kept = marked.transform(ingest.drop_marked_duplicates).collect()
    assert [r[C.SOURCE_FILE] for r in kept] == ["file:/in/a.csv"]


def test_records_that_share_a_hash_are_not_duplicates(spark: SparkSession) -> None:
    # force every record onto one hash: the full-record comparison must still tell them apart
    rows = [("c1", TS, "2.5", "B1", "dairy", p, "file:/in/a.csv") for p in ("milk", "butter", "milk", "cheese")]
    df = validated(spark.createDataFrame(rows, BASKET_SCHEMA), BASKET_MAP).transform(ingest.filter_clean)
    df = df.withColumn("__record_hash", F.lit(7).cast("long"))
    out = df.transform(dedupe(True)).collect()
    assert sorted(r[C.RAW_RECORD]["product"] for r in out) == ["butter", "cheese", "milk"]


TYPED_MAP = {"customer_id": "cust", "timestamp": "ts", "quantity": "qty", "unit_price": "price",
             "transaction_id": "tx"}
TYPED_SCHEMA = ("cust string, ts timestamp, qty int, price decimal(12,2), weight double, day date, gift boolean, "
                "tx string, source_file string")


def test_typed_records_are_compared_as_values(spark: SparkSession) -> None:
    # a typed log (Parquet): 01:30 on 2023-10-29 in London is two instants (summer time, then winter time), which
    # the same local text names; -0.0 and 0.0 are two values a person would tell apart in the file
    summer, winter = (dt.datetime(2023, 10, 29, h, 30, tzinfo=dt.UTC) for h in (0, 1))
    day = dt.date(2023, 10, 29)
    line = ("c1", summer, 2, Decimal("1.50"), 0.0, day, True, "B1")
    rows = [(*line, "file:/in/b.parquet"),
            (*line, "file:/in/a.parquet"),  # the same record in a file that comes first: this copy is kept
            ("c1", winter, 2, Decimal("1.50"), 0.0, day, True, "B1", "file:/in/a.parquet"),
            ("c1", summer, 2, Decimal("1.50"), -0.0, day, True, "B1", "file:/in/a.parquet"),
            ("c1", summer, 2, Decimal("1.5"), 0.0, day, True, "B1", "file:/in/c.parquet")]  # the same decimal
    spark.conf.set("spark.sql.session.timeZone", "Europe/London")
    try:
        kept = validated(spark.createDataFrame(rows, TYPED_SCHEMA).repartition(2), TYPED_MAP) \
            .transform(ingest.filter_clean).transform(ingest.clustered_by_day).transform(dedupe(True)) \
            .select(F.date_format(C.TXN_TS, "HH:mm z").alias("t"), F.col(C.RAW_RECORD)["weight"].alias("w"),
                    C.SOURCE_FILE).collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    assert sorted(tuple(r) for r in kept) == [("01:30 BST", "-0.0", "file:/in/a.parquet"),
                                              ("01:30 BST", "0.0", "file:/in/a.parquet"),
                                              ("01:30 GMT", "0.0", "file:/in/a.parquet")]


def test_without_a_transaction_id_equal_records_are_all_kept(spark: SparkSession) -> None:
    rows = [("c1", TS, "2.5", "B1", "dairy", "milk", "file:/in/a.csv")] * 2
    cols = {k: v for k, v in BASKET_MAP.items() if k != "transaction_id"}
    marked = validated(spark.createDataFrame(rows, BASKET_SCHEMA), cols).transform(ingest.filter_clean) \
        .transform(ingest.mark_duplicate_lines(False))
    assert marked.agg(*ingest.duplicate_observations()).first()["duplicates"] == 0
    assert marked.transform(ingest.drop_marked_duplicates).count() == 2


# --- ids: placeholders, whitespace, Unicode forms ---------------------------------------------------

def test_placeholder_ids_are_missing_and_unicode_ids_are_normalised(spark: SparkSession) -> None:
    nfd, nfc = unicodedata.normalize("NFD", "Zoë"), unicodedata.normalize("NFC", "Zoë")
    ids = ["NULL", "n/a", " NaN ", "-", "\t", "\u00a0", "\u00a0c7\t", nfd, nfc, "00012", "NULLIFIED"]
    rows = [(c, TS, "1", f"t{i}", None, "f") for i, c in enumerate(ids)]
    out = spark.createDataFrame(rows, AMOUNT_SCHEMA).transform(
        ingest.with_canonical_columns(AMOUNT_MAP, "", ["null", "N/A", "nan", "-"])).transform(
        ingest.with_quarantine_reasons(AMOUNT_MAP, ingest.Checks(NOW)))
    got = {r[C.TRANSACTION_ID]: (r[C.CUSTOMER_ID], r[C.REASON]) for r in out.collect()}
    missing = (None, "missing_customer_id")
    assert [got[f"t{i}"] for i in range(6)] == [missing] * 6
    assert got["t6"] == ("c7", None)
    assert got["t7"] == got["t8"] == (nfc, None)  # one customer, whichever form the log used
    assert got["t9"] == ("00012", None)
    assert got["t10"] == ("NULLIFIED", None)  # only whole placeholders


def test_ascii_ids_take_a_trim_that_gives_what_the_regular_expressions_give(spark: SparkSession) -> None:
    """ASCII ids skip the regular expressions (`parse_id`'s fast path): the same ids, edge by edge."""
    from custseg.core.records import EDGE_SPACE, parse_id

    def by_expressions(c: Column) -> Column:  # parse_id before the fast path: every id through the expressions
        t = F.regexp_replace(c, EDGE_SPACE, "")
        t = F.when(t.rlike("[^\\x00-\\x7F]"), F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"),
                                                           F.lit("compose"), t, F.lit(False))).otherwise(t)
        placeholder = F.lower(t).isin(["null", "-"])
        return F.when((t == "") | placeholder, None).otherwise(F.regexp_replace(t, r"^(\d+)\.0+$", "$1"))

    ids = [" \t\n\x0b\x0c\r007\r\x0c\x0b\n\t ", "a b", "\x1c7\x1f", "\x007", "17850.0", " 17850.00\t", "1.50",
           ".0", "7.", "1.0.0", "NULL", " - ", "--", "", " ", "\u3000c9\ufeff", "\u2028c9\u2029", "\u0085c9",
           "\u00a0Zoe\u0308 ", "c\u00a09", "17850.0\u00a0", None]
    df = spark.createDataFrame([(i, v) for i, v in enumerate(ids)], "i int, v string")
    got = df.select("i", parse_id(F.col("v"), T.StringType(), ["NULL", "-"]).alias("fast"),
                    by_expressions(F.col("v")).alias("expressions")).orderBy("i").collect()
    assert [r["fast"] for r in got] == [r["expressions"] for r in got]
    assert [r["fast"] for r in got][:8] == ["007", "a b", "\x1c7\x1f", "\x007", "17850", "17850", "1.50", ".0"]
    assert [r["fast"] for r in got][10:] == [None, None, "--", None, None, "c9", "c9", "\u0085c9", "Zoë", "c\u00a09",
                                              "17850", None]


# --- bounds: implausible magnitudes and timestamps before the earliest date -------------------------

def test_implausible_magnitudes_and_early_timestamps_are_quarantined(spark: SparkSession) -> None:
    checks = ingest.Checks(NOW, earliest=dt.date(1970, 1, 1), max_abs_amount=1e9, max_abs_quantity=1e6,
                           max_abs_unit_price=1e8)
    rows = [("c1", TS, "1e308", "huge_amount", None, "f"),
            ("c1", TS, "-2e9", "huge_refund", None, "f"),
            ("c1", TS, "999999999", "just_below", None, "f"),
            ("c1", "0001-01-01 00:00:00", "5", "year_one", None, "f"),
            ("c1", "1969-12-31 23:59:59", "5", "before_1970", None, "f"),
            ("c1", "1970-01-01 00:00:00", "5", "first_day", None, "f")]
    out = spark.createDataFrame(rows, AMOUNT_SCHEMA).transform(ingest.with_canonical_columns(AMOUNT_MAP)) \
        .transform(ingest.with_quarantine_reasons(AMOUNT_MAP, checks))
    # (year 1 is not a Python datetime a collect could return: only the ids and reasons come back)
    assert {r[C.TRANSACTION_ID]: r[C.REASON] for r in out.select(C.TRANSACTION_ID, C.REASON).collect()} == {
        "huge_amount": "implausible_amount", "huge_refund": "implausible_amount", "just_below": None,
        "year_one": "timestamp_before_earliest_date", "before_1970": "timestamp_before_earliest_date",
        "first_day": None,
    }
    qp = [("c1", TS, "1e18", "1e6", "q_and_p", "f"), ("c1", TS, "2e6", "1", "quantity", "f"),
          ("c1", TS, "1", "2e8", "price", "f"), ("c1", TS, "1e5", "1e5", "product", "f"),
          ("c1", TS, "1e3", "1e5", "fine", "f")]
    out = spark.createDataFrame(qp, QP_SCHEMA).transform(ingest.with_canonical_columns(QP_MAP)) \
        .transform(ingest.with_quarantine_reasons(QP_MAP, checks))
    assert {r[C.TRANSACTION_ID]: r[C.REASON] for r in out.collect()} == {
        "q_and_p": "implausible_amount", "quantity": "implausible_quantity", "price": "implausible_unit_price",
        "product": "implausible_amount", "fine": None,
    }


def test_raw_record_leaves_out_denied_columns(spark: SparkSession) -> None:
    rows = [(None, TS, "1", "t1", "x", "alice@example.com", "f")]
    df = spark.createDataFrame(rows, "cust string, ts string, amt string, tx string, cat string, email string, "
                                     "source_file string")
    out = df.transform(ingest.with_canonical_columns(AMOUNT_MAP, raw_record_exclude=["email"])).first()
    assert sorted(out[C.RAW_RECORD]) == ["amt", "cat", "cust", "ts", "tx"]
