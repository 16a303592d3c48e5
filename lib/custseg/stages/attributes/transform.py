"""Customer attributes: choose the attribute columns, parse them, and sort every row into clean or quarantine.

Pure functions. Parsing never raises on a bad value (Spark 4 runs with ANSI on: numbers go through
try_cast); a value that does not parse becomes null and its row gets a reason code. The attributes table is
one row per customer, so the rows of one customer are compared: exact repeats collapse into one row, rows
that disagree are all quarantined (custseg cannot tell which one is right).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import columns as C
from custseg.core.errors import InputError
from custseg.core.records import parse_id
from custseg.core.records import to_quarantine as to_quarantine  # the step and tests use it from here

# the reasons a row is quarantined for, in check order (the first that applies is `reason`)
REASON_CODES: tuple[str, ...] = (C.REASON_MISSING_CUSTOMER_ID, C.REASON_UNPARSABLE_ATTRIBUTE,
                                 C.REASON_CONFLICTING_ATTRIBUTES)

# columns of customer_attributes besides the attributes: an attribute may not take these names
RESERVED = (C.CUSTOMER_ID, C.SOURCE_FILE, C.INGEST_BATCH)

# characters Delta does not allow in a column name (without column mapping): replaced by "_" in the table
_DELTA_FORBIDDEN = r"[ ,;{}()\n\t=]"

# helper columns, dropped before writing
_KEY = "__customer_key"
_VALUES = "__values"
_DUPLICATE = "__duplicate"
_AGREE = "__agree"
_NTH = "__nth"

@dataclass(frozen=True)
class Attribute:
    """One attribute: its column in the input, its column in customer_attributes, its kind."""

    source: str
    name: str
    kind: str  # C.KIND_CATEGORICAL or C.KIND_NUMERIC


def table_column(source: str) -> str:
    """The attribute's column name in customer_attributes: the source name, Delta's forbidden characters as _."""
    return re.sub(_DELTA_FORBIDDEN, "_", source)


def choose_attributes(schema: T.StructType, id_column: str, categorical: Sequence[str],
                      numeric: Sequence[str]) -> list[Attribute]:
    """The attribute columns of an input with `schema`: the ones named, or (both lists empty) every text column
    as categorical and every numeric column as numeric, besides the id.

    A named column (or the id) that the input lacks is an InputError naming it and the columns found.
    """
    found = [n for n in schema.names if n != C.SOURCE_FILE]
    shown = ", ".join(found)
    if id_column not in found:
        raise InputError(f"attributes.customer_id: column {id_column!r} is not in the attributes input "
                         f"(columns found: {shown})")
    for key, names in (("attributes.categorical", categorical), ("attributes.numeric", numeric)):
        for name in names:
            if name not in found:
                raise InputError(f"{key}: column {name!r} is not in the attributes input (columns found: {shown})")
            if name == id_column:
                raise InputError(f"{key}: {name!r} is the customer id column (attributes.customer_id)")
    if categorical or numeric:
        chosen = [Attribute(n, table_column(n), C.KIND_CATEGORICAL) for n in categorical] + \
                 [Attribute(n, table_column(n), C.KIND_NUMERIC) for n in numeric]
    else:
        types = {f.name: f.dataType for f in schema.fields}
        chosen = [Attribute(n, table_column(n), C.KIND_CATEGORICAL if isinstance(types[n], T.StringType)
                            else C.KIND_NUMERIC)
                  for n in found if n != id_column and isinstance(types[n], (T.StringType, T.NumericType))
                  and table_column(n).lower() not in RESERVED]
    if not chosen:
        raise InputError(f"attributes.path: the attributes input has no text or numeric column besides the id "
                         f"(columns found: {shown})")
    seen: dict[str, str] = {}
    for a in chosen:  # Delta compares column names ignoring case
        if a.name.lower() in RESERVED:
            raise InputError(f"attributes: column {a.source!r} would take the name of customer_attributes' own "
                             f"column {a.name.lower()!r}: rename it in the input")
        if (other := seen.setdefault(a.name.lower(), a.source)) != a.source:
            raise InputError(f"attributes: columns {other!r} and {a.source!r} would both be {a.name!r} in "
                             "customer_attributes (names compare ignoring case, and ' ,;{}()=' become '_')")
    return chosen


def _text(c: Column) -> Column:
    t = F.trim(c.cast("string"))
    return F.when(t == "", None).otherwise(t)


def _number(c: Column, dtype: T.DataType) -> Column:
    """A finite double, or null: blank and NaN (pandas' missing value) are missing; infinity is not a number."""
    v = c.cast("double") if isinstance(dtype, T.NumericType) else _text(c).try_cast("double")
    return F.when(F.isnan(v), None).otherwise(v)


def _col(name: str) -> Column:
    return F.col(f"`{name}`")


def _slot(i: int) -> str:
    """The i-th attribute's column until the rows are written: an attribute may be called `reason` too."""
    return f"__attr{i}"


def with_parsed_attributes(id_column: str, attributes: Sequence[Attribute], missing_ids: Sequence[str] = (),
                           raw_record_exclude: Sequence[str] = ()) -> Callable[[DataFrame], DataFrame]:
    """The id and the attributes parsed (categorical: trimmed text, blank -> null; numeric: double), with
    `reasons` (every row-level check a row fails) and `reason` (the first; null when it passes).

    Keeps every source column's value as text in `raw_record` (for the quarantine; `raw_record_exclude`
    left out) and `source_file`.
    """

    def transform(df: DataFrame) -> DataFrame:
        dtypes = {f.name: f.dataType for f in df.schema.fields}
        kept = [c for c in df.columns if c != C.SOURCE_FILE and c not in set(raw_record_exclude)]
        raw_record = F.create_map(*[x for c in kept for x in (F.lit(c), _col(c).cast("string"))])
        parsed = [(_text(_col(a.source)) if a.kind == C.KIND_CATEGORICAL
                   else _number(_col(a.source), dtypes[a.source])).alias(_slot(i)) for i, a in enumerate(attributes)]
        out = df.select(raw_record.alias(C.RAW_RECORD), F.col(C.SOURCE_FILE),
                        parse_id(_col(id_column), dtypes[id_column], missing_ids).alias(C.CUSTOMER_ID), *parsed,
                        *[_text(_col(a.source)).alias(f"__raw{i}") for i, a in enumerate(attributes)
                          if a.kind == C.KIND_NUMERIC])
        unparsable = F.lit(False)
        for i, a in enumerate(attributes):
            if a.kind == C.KIND_NUMERIC:  # present (NaN counts as absent) but not a finite number
                present = F.col(f"__raw{i}").isNotNull() & (F.lower(F.col(f"__raw{i}")) != "nan")
                v = F.col(_slot(i))
                unparsable = unparsable | (present & (v.isNull() | (F.abs(v) == float("inf"))))
        checks = [(C.REASON_MISSING_CUSTOMER_ID, F.col(C.CUSTOMER_ID).isNull()),
                  (C.REASON_UNPARSABLE_ATTRIBUTE, unparsable)]
        reasons = F.filter(F.array(*[F.when(cond, F.lit(code)) for code, cond in checks]), lambda x: x.isNotNull())
        first = F.when(checks[0][1], F.lit(checks[0][0])).when(checks[1][1], F.lit(checks[1][0]))
        return (out.withColumn(C.REASONS, reasons).withColumn(C.REASON, first)
                .drop(*[f"__raw{i}" for i, a in enumerate(attributes) if a.kind == C.KIND_NUMERIC]))

    return transform


def mark_repeats_and_conflicts(attributes: Sequence[Attribute]) -> Callable[[DataFrame], DataFrame]:
    """Compare the valid rows of each customer: when they all carry the same attribute values, all but one
    are marked `__duplicate`; when they differ, every one of them gets the reason conflicting_customer_attributes.

    One window, partitioned by customer (rows that failed a row-level check each get a key of their own,
    so that many rows without an id do not meet in one task) and ordered by the values: a customer's rows
    agree when the first and the last value tuple are equal. Of equal rows the one from the first source
    file is kept, so a re-run keeps the same one.
    """

    def transform(df: DataFrame) -> DataFrame:
        valid = F.col(C.REASON).isNull()
        own_key = F.struct(F.col(C.CUSTOMER_ID), F.when(~valid, F.monotonically_increasing_id()))
        rows = Window.partitionBy(_KEY).orderBy(_VALUES, C.SOURCE_FILE)
        every = rows.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
        # both window functions in one projection: one sort serves them
        values = F.struct(*[F.col(_slot(i)) for i in range(len(attributes))])
        windowed = (df.withColumn(_KEY, own_key).withColumn(_VALUES, values)
                    .select("*", F.first(_VALUES).over(every).eqNullSafe(F.last(_VALUES).over(every)).alias(_AGREE),
                            F.row_number().over(rows).alias(_NTH)))
        conflicting = valid & ~F.col(_AGREE)
        return (windowed.withColumn(_DUPLICATE, valid & F.col(_AGREE) & (F.col(_NTH) > 1))
                .withColumn(C.REASONS, F.when(conflicting, F.array(F.lit(C.REASON_CONFLICTING_ATTRIBUTES)))
                            .otherwise(F.col(C.REASONS)))
                .withColumn(C.REASON, F.when(conflicting, F.lit(C.REASON_CONFLICTING_ATTRIBUTES))
                            .otherwise(F.col(C.REASON)))
                .drop(_KEY, _VALUES, _AGREE, _NTH))

    return transform


def filter_clean(df: DataFrame) -> DataFrame:
    """Rows that passed every check, one per customer (repeats dropped)."""
    return df.filter(F.col(C.REASON).isNull() & ~F.col(_DUPLICATE))


def filter_quarantined(df: DataFrame) -> DataFrame:
    """Rows that failed a check."""
    return df.filter(F.col(C.REASON).isNotNull())


def row_counts() -> list[Column]:
    """Aggregates (for `DataFrame.observe` on marked rows): all rows, clean rows, repeats, rows per reason."""
    return [F.count(F.lit(1)).alias("input"), F.count_if(F.col(C.REASON).isNull() & ~F.col(_DUPLICATE)).alias("clean"),
            F.count_if(F.col(_DUPLICATE)).alias("duplicates")] + \
        [F.count_if(F.col(C.REASON) == code).alias(code) for code in REASON_CODES]


def to_customer_attributes(attributes: Sequence[Attribute], batch_id: str) -> Callable[[DataFrame], DataFrame]:
    """Clean rows as stored: customer_id, each categorical attribute as text, each numeric one as double,
    source_file, ingest_batch."""

    def transform(df: DataFrame) -> DataFrame:
        types = {C.KIND_CATEGORICAL: "string", C.KIND_NUMERIC: "double"}
        return df.select(F.col(C.CUSTOMER_ID).cast("string"),
                         *[F.col(_slot(i)).cast(types[a.kind]).alias(a.name) for i, a in enumerate(attributes)],
                         F.col(C.SOURCE_FILE).cast("string"), F.lit(batch_id).alias(C.INGEST_BATCH))

    return transform
