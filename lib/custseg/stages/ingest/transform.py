"""Ingest: parse a raw log into the canonical transaction schema and sort every row into clean or quarantine.

Pure DataFrame -> DataFrame functions. Parsing never raises on a bad value (Spark 4 runs with ANSI on,
so everything goes through try_cast / try_to_timestamp): a value that does not parse becomes null and
the row gets a reason code instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.records import parse_id
from custseg.core.records import to_quarantine as to_quarantine  # the step and tests use it from here

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

# raw (as-read) helper columns, dropped before writing
_RAW = "__raw_"
_RECORD = "__record"  # every source column (`record_value`): what makes two lines the same line
_RECORD_HASH = "__record_hash"
_UNIQUE = "__line_key"
_DUPLICATE = "__duplicate"

# source types whose values compare equal exactly when they are the same value: they go into the record as they
# are. Floating-point values go in as text (Spark takes -0.0 and 0.0 as equal, in comparisons and in the hash), and
# so do arrays, maps and structs (a map cannot be compared).
_EXACT_TYPES = (T.StringType, T.IntegralType, T.DecimalType, T.BooleanType, T.DateType, T.TimestampType,
                T.TimestampNTZType, T.BinaryType)


def record_value(name: str, dtype: T.DataType) -> Column:
    """A source column as it goes into the record that tells two lines apart: the typed value where equal values
    are the same value, else its text. Typed values skip rendering every timestamp and number as text, and two
    instants that one local time names (a daylight-saving change) stay two values."""
    c = F.col(f"`{name}`")
    return c if isinstance(dtype, _EXACT_TYPES) else c.cast("string")


@dataclass(frozen=True)
class Checks:
    """The bounds a valid line keeps within (from the ingest.* keys)."""

    now: dt.datetime  # the job's start
    future_tolerance: dt.timedelta = dt.timedelta(0)
    earliest: dt.date | None = None
    max_abs_amount: float = float("inf")
    max_abs_quantity: float = float("inf")
    max_abs_unit_price: float = float("inf")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], now: dt.datetime) -> Checks:
        return cls(now, dt.timedelta(minutes=cfg["ingest.future_tolerance_minutes"]),
                   dt.date.fromisoformat(cfg["ingest.earliest_date"]), cfg["ingest.max_abs_amount"],
                   cfg["ingest.max_abs_quantity"], cfg["ingest.max_abs_unit_price"])


def _blank_to_null(c: Column) -> Column:
    t = F.trim(c)
    return F.when(t == "", None).otherwise(t)


def parse_text(c: Column) -> Column:
    """A trimmed string; blank -> null."""
    return _blank_to_null(c.cast("string"))


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
    column_map: Mapping[str, str], timestamp_format: str = "", missing_ids: Sequence[str] = (),
    raw_record_exclude: Sequence[str] = (),
) -> Callable[[DataFrame], DataFrame]:
    """Parse the mapped source columns into canonical, typed columns.

    Keeps every original value, as text, in the `raw_record` map (for the quarantine; columns in
    `raw_record_exclude` left out), the whole source record (`record_value`) and its hash (for the
    duplicate check), and the trimmed raw text of the parsed roles in helper columns that tell a missing
    value from an unparsable one. `amount` is the mapped amount, or quantity x unit price when no amount
    column is mapped.
    """

    def transform(df: DataFrame) -> DataFrame:
        dtypes = {f.name: f.dataType for f in df.schema.fields}
        source_cols = [c for c in df.columns if c != C.SOURCE_FILE]
        record = [record_value(c, dtypes[c]).alias(f"c{i}") for i, c in enumerate(source_cols)]
        kept = [c for c in source_cols if c not in set(raw_record_exclude)]

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
        raw_record = F.create_map(*[x for c in kept for x in (F.lit(c), F.col(f"`{c}`").cast("string"))])
        tx_id = (parse_id(src(C.ROLE_TRANSACTION_ID), dtypes[column_map[C.ROLE_TRANSACTION_ID]], missing_ids)
                 if C.ROLE_TRANSACTION_ID in column_map else F.lit(None).cast("string"))
        return df.select(
            raw_record.alias(C.RAW_RECORD),
            F.struct(*record).alias(_RECORD),
            F.xxhash64(*record).alias(_RECORD_HASH),
            F.col(C.SOURCE_FILE),
            parse_id(src(C.ROLE_CUSTOMER_ID), dtypes[column_map[C.ROLE_CUSTOMER_ID]], missing_ids)
            .alias(C.CUSTOMER_ID),
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


def with_quarantine_reasons(column_map: Mapping[str, str], checks: Checks) -> Callable[[DataFrame], DataFrame]:
    """Add `reasons` (every check a row fails, in check order) and `reason` (the first; null when clean).

    Expects the output of `with_canonical_columns`. `checks.now` is the job's start: a timestamp after
    now + future_tolerance is clock skew or a mis-read format, not a purchase; one before the earliest
    date is a placeholder or a mis-read. Magnitudes beyond the bounds are quarantined as implausible: they
    are typos or sentinels, and a few of them would take a customer's (or the whole log's) spend to
    infinity. With every line bounded, no sum over a log can overflow a double.
    """
    uses_amount = C.ROLE_AMOUNT in column_map
    bounds = ((C.REASON_IMPLAUSIBLE_AMOUNT, C.AMOUNT, checks.max_abs_amount),
              (C.REASON_IMPLAUSIBLE_QUANTITY, C.QUANTITY, checks.max_abs_quantity),
              (C.REASON_IMPLAUSIBLE_UNIT_PRICE, C.UNIT_PRICE, checks.max_abs_unit_price))

    def unparsable(role: str, parsed: str) -> Column:
        return F.col(_raw(role)).isNotNull() & F.col(parsed).isNull()

    def transform(df: DataFrame) -> DataFrame:
        missing_amount = (F.col(_raw(C.ROLE_AMOUNT)).isNull() if uses_amount
                          else F.col(_raw(C.ROLE_QUANTITY)).isNull() | F.col(_raw(C.ROLE_UNIT_PRICE)).isNull())
        checks_: list[tuple[str, Column]] = [
            (C.REASON_MISSING_CUSTOMER_ID, F.col(C.CUSTOMER_ID).isNull()),
            (C.REASON_MISSING_TIMESTAMP, F.col(_raw(C.ROLE_TIMESTAMP)).isNull()),
            (C.REASON_UNPARSABLE_TIMESTAMP, unparsable(C.ROLE_TIMESTAMP, C.TXN_TS)),
            (C.REASON_FUTURE_TIMESTAMP, F.col(C.TXN_TS) > F.lit(checks.now + checks.future_tolerance)),
        ]
        if checks.earliest is not None:
            # compared as a date in the session time zone, like txn_date
            checks_.append((C.REASON_EARLY_TIMESTAMP, F.to_date(F.col(C.TXN_TS)) < F.lit(checks.earliest)))
        checks_.append((C.REASON_MISSING_AMOUNT, missing_amount))
        if uses_amount:
            checks_.append((C.REASON_UNPARSABLE_AMOUNT, unparsable(C.ROLE_AMOUNT, C.AMOUNT)))
        if C.ROLE_QUANTITY in column_map:
            checks_.append((C.REASON_UNPARSABLE_QUANTITY, unparsable(C.ROLE_QUANTITY, C.QUANTITY)))
        if C.ROLE_UNIT_PRICE in column_map:
            checks_.append((C.REASON_UNPARSABLE_UNIT_PRICE, unparsable(C.ROLE_UNIT_PRICE, C.UNIT_PRICE)))
        if not uses_amount:
            # quantity x price can overflow to infinity even when both parse
            checks_.append((C.REASON_UNPARSABLE_AMOUNT, ~missing_amount & F.col(C.QUANTITY).isNotNull()
                            & F.col(C.UNIT_PRICE).isNotNull() & (F.abs(F.col(C.AMOUNT)) == float("inf"))))
        for code, column, bound in bounds:
            if bound != float("inf"):
                checks_.append((code, F.abs(F.col(column)) > F.lit(bound)))
        reasons = F.filter(F.array(*[F.when(cond, F.lit(code)) for code, cond in checks_]), lambda x: x.isNotNull())
        # the first failing check, as a CASE chain: the clean path and the counts need only this, so the
        # `reasons` array (a higher-order function, which Spark does not compile) is built for bad rows only
        first = F.when(checks_[0][1], F.lit(checks_[0][0]))
        for code, cond in checks_[1:]:
            first = first.when(cond, F.lit(code))
        return df.withColumn(C.REASONS, reasons).withColumn(C.REASON, first)

    return transform


def filter_clean(df: DataFrame) -> DataFrame:
    """Rows that passed every check."""
    return df.filter(F.col(C.REASON).isNull())


def filter_quarantined(df: DataFrame) -> DataFrame:
    """Rows that failed at least one check."""
    return df.filter(F.col(C.REASON).isNotNull())


def mark_duplicate_lines(has_transaction_id: bool) -> Callable[[DataFrame], DataFrame]:
    """Add `__duplicate`: true on each repeat of a whole source record that carries a transaction id.

    A line is a duplicate only when every column of its source row (the mapped and the unmapped ones:
    product, store, description...) equals another line's; two products in one basket at the same second
    and price are two lines. Of equal lines the one from the first source file in path order is kept, so a
    re-run keeps the same line; the same record in two files is one line. Lines without an id (the role
    unmapped, or blank on that line) are all kept: two equal lines can be two real purchases.

    One window sort: partitioned by the day, the id and a 64-bit hash of the record, ordered by the record
    itself and the file. Equal records are adjacent, and a line is a repeat only when its predecessor's
    record is equal, compared in full: two different records that share a hash are both kept. With
    `txn_month` and `txn_date` leading the keys, rows already clustered by day (`clustered_by_day`) need no
    other shuffle, and the sort also serves the writer, which needs each task's rows ordered by the partition
    column.
    """

    def transform(df: DataFrame) -> DataFrame:
        if not has_transaction_id:
            return df.withColumn(_DUPLICATE, F.lit(False))
        # a line without an id gets a key of its own, so it never matches another line
        own_key = F.when(F.col(C.TRANSACTION_ID).isNull(), F.monotonically_increasing_id())
        day = [c for c in (C.TXN_MONTH, C.TXN_DATE) if c in df.columns]
        lines = Window.partitionBy(*day, C.TRANSACTION_ID, _RECORD_HASH, _UNIQUE).orderBy(_RECORD, C.SOURCE_FILE)
        previous = F.lag(_RECORD).over(lines)
        return (df.withColumn(_UNIQUE, own_key)
                .withColumn(_DUPLICATE, F.coalesce(previous.eqNullSafe(F.col(_RECORD)), F.lit(False)))
                .drop(_UNIQUE))

    return transform


def drop_marked_duplicates(df: DataFrame) -> DataFrame:
    """The lines `mark_duplicate_lines` did not mark."""
    return df.filter(~F.col(_DUPLICATE))


def duplicate_observations() -> list[Column]:
    """Aggregates (for `DataFrame.observe` on marked lines): the number of repeats, and two of them
    (transaction id and file) for a person to check."""
    example = F.when(F.col(_DUPLICATE), F.struct(F.col(C.TRANSACTION_ID).alias("id"),
                                                  F.col(C.SOURCE_FILE).alias("file")))
    return [F.count_if(F.col(_DUPLICATE)).alias("duplicates"), F.min(example).alias("first"),
            F.max(example).alias("last")]


def clustered_by_day(df: DataFrame) -> DataFrame:
    """Valid rows with their `txn_date` (the date in the session time zone) and `txn_month`, hash-partitioned
    by day.

    The one shuffle of ingest: the duplicate check runs within these partitions, and each writing task
    holds whole days, so a write makes one file per month per task rather than one per month per input
    split. By day rather than by month: a large log's months would be few, large tasks.
    """
    day = F.to_date(F.col(C.TXN_TS))
    return df.withColumn(C.TXN_DATE, day).withColumn(C.TXN_MONTH, F.trunc(day, "MM")).repartition(C.TXN_DATE)


def to_transactions(batch_id: str) -> Callable[[DataFrame], DataFrame]:
    """Clean rows in the transactions table's schema; `txn_date` is the date in the session time zone."""

    def transform(df: DataFrame) -> DataFrame:
        day = F.to_date(F.col(C.TXN_TS))
        out = df.withColumn(C.IS_RETURN, F.col(C.AMOUNT) < 0).withColumn(C.INGEST_BATCH, F.lit(batch_id)) \
            .withColumn(C.TXN_DATE, day).withColumn(C.TXN_MONTH, F.trunc(day, "MM"))
        return out.select(*[F.col(f.name).cast(f.dataType) for f in TRANSACTIONS_SCHEMA.fields])

    return transform


def reason_counts() -> list[Column]:
    """Aggregates (for `DataFrame.observe`): all rows, rows passing every check, rows per first reason."""
    return [F.count(F.lit(1)).alias("input"), F.count_if(F.col(C.REASON).isNull()).alias("valid")] + [
        F.count_if(F.col(C.REASON) == code).alias(code) for code in C.REASON_CODES
    ]
