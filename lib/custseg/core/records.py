"""Row-level rules shared by the inputs custseg validates (the transaction log and the customer attributes): how a
customer id is cleaned, and the shape of a quarantined row. Column expressions only; no session.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import columns as C

# Spark's trim removes spaces only; ids also lose tabs, line breaks, non-breaking and other Unicode spaces
# and byte-order marks around them
EDGE_SPACE = r"^[\s\p{Z}\x{FEFF}]+|[\s\p{Z}\x{FEFF}]+$"
ASCII_SPACE = " \t\n\x0b\x0c\r"  # the ASCII characters EDGE_SPACE matches (Java's \s, and the space of \p{Z})


def parse_id(c: Column, dtype: T.DataType, missing: Sequence[str] = ()) -> Column:
    """An identifier as text; null when blank or a placeholder for a missing value (`missing`, compared
    ignoring case).

    Leading zeros are kept; an integral float id (17850.0, the usual artefact of a log that passed through
    pandas with missing ids) is written without its '.0'. Surrounding whitespace of any kind (tabs,
    non-breaking spaces) is removed, and text ids are put in Unicode NFC form, so that an id typed as
    'e' + combining accent and one typed as 'é' are the same customer (ICU, which Spark ships, does the
    normalising; only ids with a non-ASCII character pay for it).
    """
    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        whole = F.when(c == F.floor(c), c.cast("decimal(38,0)").cast("string"))
        return F.when(F.isnan(c.cast("double")), None).otherwise(F.coalesce(whole, c.cast("string")))
    if isinstance(dtype, T.NumericType):
        return c.cast("string")
    s = c.cast("string")
    # Most ids are ASCII (valid UTF-8 with as many bytes as characters). In ASCII text EDGE_SPACE's characters
    # are \s's (\p{Z} adds only the space): a trim of those six, with no regular expression and nothing to
    # normalise. Other ids take the regular expressions. btrim, not trim: Spark logs a deprecation warning for
    # trim's two-argument form on every run.
    ascii_only = (F.octet_length(s) == F.char_length(s)) & F.is_valid_utf8(s)
    edged = F.regexp_replace(s, EDGE_SPACE, "")
    t = F.when(ascii_only, F.btrim(s, F.lit(ASCII_SPACE))).when(
        edged.rlike("[^\\x00-\\x7F]"),
        F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"), F.lit("compose"), edged, F.lit(False)),
    ).otherwise(edged)
    placeholder = F.lower(t).isin([m.strip().lower() for m in missing]) if missing else F.lit(False)
    integral_float = F.when(t.contains("."), F.regexp_replace(t, r"^(\d+)\.0+$", "$1")).otherwise(t)
    return F.when((t == "") | placeholder, None).otherwise(integral_float)


def to_quarantine(batch_id: str, now: dt.datetime) -> Callable[[DataFrame], DataFrame]:
    """Quarantined rows as stored: reason codes, original values, where they came from, when."""

    def transform(df: DataFrame) -> DataFrame:
        return df.select(
            F.col(C.REASON), F.col(C.REASONS), F.col(C.RAW_RECORD), F.col(C.SOURCE_FILE),
            F.lit(batch_id).alias(C.INGEST_BATCH), F.lit(now).alias(C.QUARANTINED_AT),
            F.to_date(F.lit(now)).alias(C.QUARANTINE_DATE),
        )

    return transform
