"""Export: the members of chosen segments with their name and recommended action, as rows for a campaign tool.

The segment choice (`--segment` values: ids or names) is resolved against the date's descriptions, a table
of k rows, on the driver; the members are selected and joined to their description in Spark.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.errors import ConfigError, StageError

# segment_descriptions' action columns (declared with these names in custseg.core.catalog)
ACTION = "action"
ACTION_CHANNEL = "action_channel"
ACTION_OFFER = "action_offer"
ACTION_MESSAGE = "action_message"

DESCRIPTION_COLUMNS = (C.SEGMENT_ID, C.SEGMENT_NAME, ACTION, ACTION_CHANNEL, ACTION_OFFER, ACTION_MESSAGE)
MEMBER_COLUMNS = (C.CUSTOMER_ID, C.SEGMENT_ID, C.AS_OF_DATE, C.DISTANCE)
# the exported files' columns, in this order
EXPORT_COLUMNS = (C.CUSTOMER_ID, C.SEGMENT_ID, C.SEGMENT_NAME, ACTION, ACTION_CHANNEL, ACTION_OFFER, ACTION_MESSAGE,
                  C.AS_OF_DATE, C.DISTANCE)

_SEGMENT_ID = re.compile(r"\d+")


def parse_selectors(values: Iterable[str]) -> tuple[str, ...]:
    """`--segment` values (repeatable, each also comma-separated) -> the selectors, stripped, in order.

    An empty value or an empty item (`--segment ""`, `--segment 1,,2`) is a ConfigError."""
    out: list[str] = []
    for value in values:
        items = [item.strip() for item in value.split(",")]
        if not all(items):
            raise ConfigError(f"--segment {value!r}: empty segment; give ids or names, e.g. --segment 0,2 or "
                              "--segment 'At risk'")
        out.extend(items)
    return tuple(out)


def _name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _base_name(name: str) -> str:
    """A segment name without explain's qualifiers: "at risk - online electronics (higher spend)" -> "at risk"."""
    return name.split(" - ", 1)[0].split(" (", 1)[0]


def describe_available(available: Mapping[int, str]) -> str:
    """`0: Loyal big spenders, 1: At risk`: the segments of a date, for error messages."""
    return ", ".join(f"{i}: {available[i]}" for i in sorted(available)) or "none"


def resolve_segments(selectors: Sequence[str], available: Mapping[int, str], as_of: dt.date) -> list[int]:
    """The segment ids the selectors name, each once, in the order given.

    A selector of digits is an id; any other is a segment name, matched ignoring case and surrounding (and
    repeated) spaces; a name that is no segment's full name may be its name without the qualifier explain adds
    ("heavy returners" for "heavy returners - app fashion"). `available` is the date's segment id -> name. A
    selector that names no segment, or a name shared by several, is a StageError listing the segments that exist.
    """
    by_name: dict[str, list[int]] = {}
    by_base: dict[str, list[int]] = {}
    for i, name in available.items():
        by_name.setdefault(_name_key(name or ""), []).append(i)
        by_base.setdefault(_name_key(_base_name(name or "")), []).append(i)
    chosen: list[int] = []
    for sel in selectors:
        if _SEGMENT_ID.fullmatch(sel):
            ids = [int(sel)] if int(sel) in available else []
        else:
            ids = sorted(by_name.get(_name_key(sel)) or by_base.get(_name_key(sel), []))
        if not ids:
            raise StageError(f"--segment {sel!r}: no segment of that id or name as of {as_of}; the segments are "
                             f"{describe_available(available)}")
        if len(ids) > 1:
            raise StageError(f"--segment {sel!r}: more than one segment has that name as of {as_of} "
                             f"({describe_available({i: available[i] for i in ids})}): give the id")
        if ids[0] not in chosen:
            chosen.append(ids[0])
    return chosen


def _require(df: DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StageError(f"{what}: missing column(s) {', '.join(missing)}")


def filter_segments(segment_ids: Sequence[int]) -> Callable[[DataFrame], DataFrame]:
    """Segments rows -> the rows of the given segments only."""

    def transform(df: DataFrame) -> DataFrame:
        _require(df, [C.SEGMENT_ID], "segments")
        return df.filter(F.col(C.SEGMENT_ID).isin(list(segment_ids)))

    return transform


def with_descriptions(descriptions_df: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Segment members -> the same rows with their segment's name and action (the descriptions of one date).

    The descriptions are one row per segment: broadcast, so the members are never shuffled."""

    def transform(df: DataFrame) -> DataFrame:
        _require(descriptions_df, DESCRIPTION_COLUMNS, "segment_descriptions")
        described = F.broadcast(descriptions_df.select(*DESCRIPTION_COLUMNS))
        return df.join(described, C.SEGMENT_ID, "inner")

    return transform


def export_rows(segments_df: DataFrame, descriptions_df: DataFrame, segment_ids: Sequence[int]) -> DataFrame:
    """One date's segments and descriptions -> the members of `segment_ids`, in EXPORT_COLUMNS.

    customer_id stays text (leading zeros survive in every format)."""
    _require(segments_df, MEMBER_COLUMNS, "segments")
    return (segments_df.select(*MEMBER_COLUMNS)
            .transform(filter_segments(segment_ids))
            .transform(with_descriptions(descriptions_df.transform(filter_segments(segment_ids))))
            .select(F.col(C.CUSTOMER_ID).cast("string").alias(C.CUSTOMER_ID), *EXPORT_COLUMNS[1:]))
