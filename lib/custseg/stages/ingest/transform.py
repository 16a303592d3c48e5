"""Ingest: parse a raw log into the canonical transaction schema and sort every row into clean or quarantine.

Pure DataFrame -> DataFrame functions. Parsing never raises on a bad value (Spark 4 runs with ANSI on,
so everything goes through try_cast / try_to_timestamp): a value that does not parse becomes null and
the row gets a reason code instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import catalog
from custseg.core import columns as C

# Tried in order when input.timestamp_format is empty. The first entry (no pattern) is Spark's own
# ISO-8601 reading: "2024-06-30", "2024-06-30 13:45:00", "2024-06-30T13:45:00.123+02:00", "...Z".
# Slash dates are read month first (US style, as in the UCI Online Retail logs); a day-first log
# must say so with input.timestamp_format, e.g. "d/M/yyyy H:mm".
DEFAULT_TIMESTAMP_FORMATS: tuple[str | None, ...] = (
    None,
    "M/d/yyyy H:mm[:ss]",
    "M/d/yyyy h:mm[:ss] a",
    "M/d/yyyy",
    "yyyy/M/d[ H:mm[:ss]]",
    "d.M.yyyy[ H:mm[:ss]]",
    "yyyyMMdd[ HHmmss]",
    "d-MMM-yyyy[ H:mm[:ss]]",
    "d MMM yyyy[ H:mm[:ss]]",
)

TRANSACTIONS_SCHEMA = catalog.TRANSACTIONS_SCHEMA  # canonical transactions schema, in table order

QUARANTINE_COLUMNS = tuple(catalog.QUARANTINE_SCHEMA.names)

# Canonical columns that identify an exact duplicate (source_file aside: the same line in two files is
# the same line).
DUPLICATE_KEY = (C.CUSTOMER_ID, C.TRANSACTION_ID, C.TXN_TS, C.AMOUNT, C.QUANTITY, C.UNIT_PRICE, C.CATEGORY,
                 C.CHANNEL, C.COUNTRY)

# raw (as-read) helper columns, dropped before writing
_RAW = "__raw_"
_UNIQUE = "__line_key"
_RANK = "__line_rank"


def _blank_to_null(c: Column) -> Column:
    t = F.trim(c)
    return F.when(t == "", None).otherwise(t)


def parse_text(c: Column) -> Column:
    """A trimmed string; blank -> null."""
    return _blank_to_null(c.cast("string"))


def parse_id(c: Column, dtype: T.DataType) -> Column:
    """An identifier as text. Leading zeros are kept; an integral float id (17850.0, the usual artefact
    of a log that passed through pandas with missing ids) is written without its '.0'."""
    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        whole = F.when(c == F.floor(c), c.cast("decimal(38,0)").cast("string"))
        return F.when(F.isnan(c.cast("double")), None).otherwise(F.coalesce(whole, c.cast("string")))
    return F.regexp_replace(parse_text(c), r"^(\d+)\.0+$", "$1")


def parse_number(c: Column, dtype: T.DataType) -> Column:
    """A finite double, or null when the value is blank, not a number, NaN or infinite."""
    v = c.cast("double") if isinstance(dtype, T.NumericType) else parse_text(c).try_cast("double")
    return F.when(F.isnan(v) | (F.abs(v) == float("inf")), None).otherwise(v)


def parse_timestamp(c: Column, dtype: T.DataType, fmt: str = "") -> Column:
    """A timestamp from a timestamp, date, epoch number or text column; null when it does not parse.

    Text without an offset is read in the session time zone (custseg sets it to input.timezone).
    Epoch numbers above 1e11 are taken as milliseconds, below as seconds.
    """
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return c.cast("timestamp")
    if isinstance(dtype, T.NumericType):
        return _epoch(c.cast("double"))
    s = _blank_to_null(c.cast("string"))
    if fmt:
        return F.try_to_timestamp(s, F.lit(fmt))
    digits = s.rlike(r"^\d{9,13}$")
    tries = [F.try_to_timestamp(s) if f is None else F.try_to_timestamp(s, F.lit(f)) for f in DEFAULT_TIMESTAMP_FORMATS]
    return F.when(digits, _epoch(s.try_cast("double"))).otherwise(F.coalesce(*tries))


def _epoch(v: Column) -> Column:
    seconds = F.when(F.abs(v) >= 1e11, v / 1000.0).otherwise(v)
    return F.when(F.abs(seconds) < 1e11, F.timestamp_seconds(seconds))


def _raw(role: str) -> str:
    return f"{_RAW}{role}"


def with_canonical_columns(
    column_map: Mapping[str, str], timestamp_format: str = ""
) -> Callable[[DataFrame], DataFrame]:
    """Parse the mapped source columns into canonical, typed columns.

    Keeps every original value, as text, in the `raw_record` map (for the quarantine), and the trimmed
    raw text of the parsed roles in helper columns that tell a missing value from an unparsable one.
    `amount` is the mapped amount, or quantity x unit price when no amount column is mapped.
    """

    def transform(df: DataFrame) -> DataFrame:
        dtypes = {f.name: f.dataType for f in df.schema.fields}
        source_cols = [c for c in df.columns if c != C.SOURCE_FILE]

        def src(role: str) -> Column:
            return F.col(f"`{column_map[role]}`")

        def text_or_null(role: str) -> Column:
            return parse_text(src(role)) if role in column_map else F.lit(None).cast("string")

        def number_or_null(role: str) -> Column:
            if role not in column_map:
                return F.lit(None).cast("double")
            return parse_number(src(role), dtypes[column_map[role]])

        quantity = number_or_null(C.ROLE_QUANTITY)
        unit_price = number_or_null(C.ROLE_UNIT_PRICE)
        amount = number_or_null(C.ROLE_AMOUNT) if C.ROLE_AMOUNT in column_map else quantity * unit_price
        raw_record = F.create_map(*[x for c in source_cols for x in (F.lit(c), F.col(f"`{c}`").cast("string"))])
        tx_id = (parse_id(src(C.ROLE_TRANSACTION_ID), dtypes[column_map[C.ROLE_TRANSACTION_ID]])
                 if C.ROLE_TRANSACTION_ID in column_map else F.lit(None).cast("string"))
        return df.select(
            raw_record.alias(C.RAW_RECORD),
            F.col(C.SOURCE_FILE),
            parse_id(src(C.ROLE_CUSTOMER_ID), dtypes[column_map[C.ROLE_CUSTOMER_ID]]).alias(C.CUSTOMER_ID),
            tx_id.alias(C.TRANSACTION_ID),
            parse_timestamp(src(C.ROLE_TIMESTAMP), dtypes[column_map[C.ROLE_TIMESTAMP]], timestamp_format)
            .alias(C.TXN_TS),
            amount.alias(C.AMOUNT),
            quantity.alias(C.QUANTITY),
            unit_price.alias(C.UNIT_PRICE),
            text_or_null(C.ROLE_CATEGORY).alias(C.CATEGORY),
            text_or_null(C.ROLE_CHANNEL).alias(C.CHANNEL),
            text_or_null(C.ROLE_COUNTRY).alias(C.COUNTRY),
            *[text_or_null(r).alias(_raw(r))
              for r in (C.ROLE_TIMESTAMP, C.ROLE_AMOUNT, C.ROLE_QUANTITY, C.ROLE_UNIT_PRICE)],
        )

    return transform


def with_quarantine_reasons(
    column_map: Mapping[str, str], now: dt.datetime, future_tolerance: dt.timedelta = dt.timedelta(0)
) -> Callable[[DataFrame], DataFrame]:
    """Add `reasons` (every check a row fails, in check order) and `reason` (the first; null when clean).

    Expects the output of `with_canonical_columns`. `now` is the job's start: a timestamp after
    now + future_tolerance is clock skew or a mis-read format, not a purchase.
    """
    uses_amount = C.ROLE_AMOUNT in column_map

    def unparsable(role: str, parsed: str) -> Column:
        return F.col(_raw(role)).isNotNull() & F.col(parsed).isNull()

    def transform(df: DataFrame) -> DataFrame:
        missing_amount = (F.col(_raw(C.ROLE_AMOUNT)).isNull() if uses_amount
                          else F.col(_raw(C.ROLE_QUANTITY)).isNull() | F.col(_raw(C.ROLE_UNIT_PRICE)).isNull())
        checks: list[tuple[str, Column]] = [
            (C.REASON_MISSING_CUSTOMER_ID, F.col(C.CUSTOMER_ID).isNull()),
            (C.REASON_MISSING_TIMESTAMP, F.col(_raw(C.ROLE_TIMESTAMP)).isNull()),
            (C.REASON_UNPARSABLE_TIMESTAMP, unparsable(C.ROLE_TIMESTAMP, C.TXN_TS)),
            (C.REASON_FUTURE_TIMESTAMP, F.col(C.TXN_TS) > F.lit(now + future_tolerance)),
            (C.REASON_MISSING_AMOUNT, missing_amount),
        ]
        if uses_amount:
            checks.append((C.REASON_UNPARSABLE_AMOUNT, unparsable(C.ROLE_AMOUNT, C.AMOUNT)))
        if C.ROLE_QUANTITY in column_map:
            checks.append((C.REASON_UNPARSABLE_QUANTITY, unparsable(C.ROLE_QUANTITY, C.QUANTITY)))
        if C.ROLE_UNIT_PRICE in column_map:
            checks.append((C.REASON_UNPARSABLE_UNIT_PRICE, unparsable(C.ROLE_UNIT_PRICE, C.UNIT_PRICE)))
        if not uses_amount:
            # quantity x price can overflow to infinity even when both parse
            checks.append((C.REASON_UNPARSABLE_AMOUNT, ~missing_amount & F.col(C.QUANTITY).isNotNull()
                           & F.col(C.UNIT_PRICE).isNotNull() & (F.abs(F.col(C.AMOUNT)) == float("inf"))))
        reasons = F.filter(F.array(*[F.when(cond, F.lit(code)) for code, cond in checks]), lambda x: x.isNotNull())
        # the first failing check, as a CASE chain: the clean path and the counts need only this, so the
        # `reasons` array (a higher-order function, which Spark does not compile) is built for bad rows only
        first = F.when(checks[0][1], F.lit(checks[0][0]))
        for code, cond in checks[1:]:
            first = first.when(cond, F.lit(code))
        return df.withColumn(C.REASONS, reasons).withColumn(C.REASON, first)

    return transform


def filter_clean(df: DataFrame) -> DataFrame:
    """Rows that passed every check."""
    return df.filter(F.col(C.REASON).isNull())


def filter_quarantined(df: DataFrame) -> DataFrame:
    """Rows that failed at least one check."""
    return df.filter(F.col(C.REASON).isNotNull())


def drop_duplicate_lines(has_transaction_id: bool) -> Callable[[DataFrame], DataFrame]:
    """Keep one of each set of exactly equal lines that carry a transaction id: the one from the first
    source file in path order, so that a re-run keeps the same line.

    Lines without an id (the role unmapped, or blank on that line) are all kept: two equal lines can be
    two real purchases of the same item in the same second.

    A `row_number` window rather than `dropDuplicates`: the latter keeps the source file with `first()`, a
    string aggregate that Spark runs as two sort-based aggregates (partial and final, sorted twice); the
    window sorts once, and with `txn_date` leading its keys that sort also serves the writer, which
    needs each task's rows ordered by the partition column.
    """

    def transform(df: DataFrame) -> DataFrame:
        if not has_transaction_id:
            return df
        # a line without an id gets a key of its own, so it never matches another line
        own_key = F.when(F.col(C.TRANSACTION_ID).isNull(), F.monotonically_increasing_id())
        # txn_date (a function of txn_ts) changes nothing about which lines are equal; with it in the key, rows
        # already clustered by day (`clustered_by_day`) are deduplicated without another shuffle
        day = [C.TXN_DATE] if C.TXN_DATE in df.columns else []
        lines = Window.partitionBy(*day, *DUPLICATE_KEY, _UNIQUE).orderBy(C.SOURCE_FILE)
        return (df.withColumn(_UNIQUE, own_key).withColumn(_RANK, F.row_number().over(lines))
                .filter(F.col(_RANK) == 1).drop(_UNIQUE, _RANK))

    return transform


def clustered_by_day(df: DataFrame) -> DataFrame:
    """Valid rows with their `txn_date` (the date in the session time zone), hash-partitioned by it.

    The one shuffle of ingest: the duplicate check runs within these partitions, and each writing task
    holds whole days, so a write makes one file per day rather than one per day per input split.
    """
    return df.withColumn(C.TXN_DATE, F.to_date(F.col(C.TXN_TS))).repartition(C.TXN_DATE)


def to_transactions(batch_id: str) -> Callable[[DataFrame], DataFrame]:
    """Clean rows in the transactions table's schema; `txn_date` is the date in the session time zone."""

    def transform(df: DataFrame) -> DataFrame:
        out = df.withColumn(C.IS_RETURN, F.col(C.AMOUNT) < 0).withColumn(C.INGEST_BATCH, F.lit(batch_id)) \
            .withColumn(C.TXN_DATE, F.to_date(F.col(C.TXN_TS)))
        return out.select(*[F.col(f.name).cast(f.dataType) for f in TRANSACTIONS_SCHEMA.fields])

    return transform


def to_quarantine(batch_id: str, now: dt.datetime) -> Callable[[DataFrame], DataFrame]:
    """Quarantined rows as stored: reason codes, original values, where they came from, when."""

    def transform(df: DataFrame) -> DataFrame:
        return df.select(
            F.col(C.REASON), F.col(C.REASONS), F.col(C.RAW_RECORD), F.col(C.SOURCE_FILE),
            F.lit(batch_id).alias(C.INGEST_BATCH), F.lit(now).alias(C.QUARANTINED_AT),
            F.to_date(F.lit(now)).alias(C.QUARANTINE_DATE),
        )

    return transform


def reason_counts() -> list[Column]:
    """Aggregates (for `DataFrame.observe`): all rows, rows passing every check, rows per first reason."""
    return [F.count(F.lit(1)).alias("input"), F.count_if(F.col(C.REASON).isNull()).alias("valid")] + [
        F.count_if(F.col(C.REASON) == code).alias(code) for code in C.REASON_CODES
    ]
