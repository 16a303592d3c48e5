"""A deterministic synthetic transaction log with planted behavioural groups, built in Spark.

Every random draw is a hash of (seed, customer, invoice, line, purpose), so the same seed gives the same
log whatever the partitioning, and generation scales like any other Spark job (no Python per row).

The log looks like a retail invoice-line export: customer ids with leading zeros, invoice numbers
(returns are 'C'-prefixed invoices with negative quantities, as in the UCI Online Retail logs), quantity
and unit price instead of an amount, category, channel and country. A configurable share of lines is
deliberately broken (blank id, bad or future timestamp, bad quantity, missing price, exact duplicate)
so that the quarantine has work to do.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

CATEGORIES = ("electronics", "home", "grocery", "fashion", "beauty", "sports", "toys", "books")
CHANNELS = ("online", "store", "app")
COUNTRIES = ("United Kingdom", "Germany", "France", "Netherlands", "Spain")

# generated column names (what a user's log might call them; the sample config maps them)
G_CUSTOMER = "CustomerID"
G_INVOICE = "InvoiceNo"
G_TIMESTAMP = "InvoiceDate"
G_QUANTITY = "Quantity"
G_UNIT_PRICE = "UnitPrice"
G_CATEGORY = "Category"
G_CHANNEL = "Channel"
G_COUNTRY = "Country"
TRUTH_GROUP = "planted_group"
TRUTH_CUSTOMER = "customer_id"


@dataclass(frozen=True)
class Group:
    """One planted behaviour. Activity window is in days relative to the history's span."""

    name: str
    weight: float
    invoices_per_year: float
    invoice_value: float  # median value of one invoice
    lines_max: int
    return_prob: float
    start: tuple[float, float]  # first active day, as a share of the span (low, high)
    end_days_before_end: tuple[int, int]  # last active day, days before the history's end (low, high)
    channels: tuple[float, ...]  # weights over CHANNELS
    categories: tuple[float, ...]  # weights over CATEGORIES


GROUPS: tuple[Group, ...] = (
    Group("champions", 0.12, 26, 140.0, 4, 0.03, (0.0, 0.3), (0, 10),
          (0.7, 0.2, 0.1), (0.35, 0.25, 0.05, 0.1, 0.05, 0.1, 0.05, 0.05)),
    Group("loyal_regulars", 0.22, 10, 55.0, 3, 0.04, (0.0, 0.4), (0, 40),
          (0.1, 0.85, 0.05), (0.05, 0.25, 0.45, 0.05, 0.1, 0.04, 0.03, 0.03)),
    Group("big_ticket_rare", 0.10, 2.5, 700.0, 2, 0.08, (0.0, 0.5), (0, 200),
          (0.8, 0.15, 0.05), (0.6, 0.3, 0.0, 0.02, 0.0, 0.05, 0.0, 0.03)),
    Group("lapsed", 0.20, 6, 45.0, 3, 0.05, (0.0, 0.3), (365, 700),
          (0.6, 0.25, 0.15), (0.1, 0.2, 0.3, 0.15, 0.1, 0.05, 0.05, 0.05)),
    Group("new_customers", 0.16, 14, 40.0, 3, 0.03, (1.0, 1.0), (0, 25),
          (0.4, 0.2, 0.4), (0.1, 0.15, 0.2, 0.2, 0.15, 0.1, 0.05, 0.05)),
    Group("bargain_returners", 0.20, 16, 30.0, 4, 0.35, (0.0, 0.5), (0, 30),
          (0.15, 0.05, 0.8), (0.02, 0.05, 0.03, 0.55, 0.25, 0.05, 0.03, 0.02)),
)
NEW_CUSTOMER_WINDOW_DAYS = 90  # new customers start within this many days of the end


def _u(seed: int, *parts: Column | str | int) -> Column:
    """A uniform draw in [0, 1) from a hash of the seed and the parts."""
    cols = [p if isinstance(p, Column) else F.lit(p) for p in parts]
    return F.pmod(F.xxhash64(F.lit(seed), *cols), F.lit(1 << 53)).cast("double") / float(1 << 53)


def _normal(seed: int, *parts: Column | str | int) -> Column:
    """A standard normal draw (Box-Muller) from two hashed uniforms."""
    u1 = F.greatest(_u(seed, *parts, "n1"), F.lit(1e-12))
    u2 = _u(seed, *parts, "n2")
    return F.sqrt(-2.0 * F.log(u1)) * F.cos(2 * math.pi * u2)


def _pick(table: list[float], index: Column) -> Column:
    return F.element_at(F.array(*[F.lit(float(v)) for v in table]), index + 1)


def _choose(weights_by_group: list[tuple[float, ...]], group: Column, u: Column) -> Column:
    """Index drawn from the group's weights: the count of cumulative weights <= u."""
    cums = []
    for w in weights_by_group:
        total, acc, cum = sum(w), 0.0, []
        for x in w[:-1]:
            acc += x / total
            cum.append(acc)
        cums.append(cum)
    matrix = F.array(*[F.array(*[F.lit(c) for c in cum]) for cum in cums])
    return F.size(F.filter(F.element_at(matrix, group + 1), lambda c: c <= u))


def category_names(n: int) -> list[str]:
    """`n` category names: the base ones, then variants of each in turn (home_2, ..., electronics_3, ...)."""
    return [CATEGORIES[i] if i < len(CATEGORIES) else f"{CATEGORIES[i % len(CATEGORIES)]}_{i // len(CATEGORIES) + 1}"
            for i in range(n)]


def customers(spark: SparkSession, n: int, seed: int, span_days: int, partitions: int,
              activity: float = 1.0, arrivals: int = 0, arrival_day: int = 0) -> DataFrame:
    """One row per customer: id, planted group, activity window (day offsets) and invoice count.

    `activity` scales every group's invoices per year (the planted behaviours keep their proportions).
    `arrivals` more customers (ids n, n + 1, ...) are new customers whose first purchase falls between
    `arrival_day` and the end; customers 0..n-1 are the same with or without them."""
    cid = F.col("id")
    cum, acc = [], 0.0
    for g in GROUPS[:-1]:
        acc += g.weight
        cum.append(acc)
    u_group = _u(seed, cid, "group")
    group = F.size(F.filter(F.array(*[F.lit(c) for c in cum]), lambda c: c <= u_group))
    start_share = _pick([g.start[0] for g in GROUPS], group) + (
        _pick([g.start[1] - g.start[0] for g in GROUPS], group) * _u(seed, cid, "start"))
    new_group = GROUPS.index(next(g for g in GROUPS if g.name == "new_customers"))
    arrival = cid >= n
    group = F.when(arrival, F.lit(new_group)).otherwise(group)
    is_new = group == new_group
    start = F.when(arrival, F.lit(arrival_day) + (_u(seed, cid, "start") * (span_days - arrival_day)).cast("int")) \
        .when(is_new, F.lit(span_days) - (_u(seed, cid, "start") * NEW_CUSTOMER_WINDOW_DAYS).cast("int")) \
        .otherwise((start_share * span_days).cast("int"))
    end_before = _pick([g.end_days_before_end[0] for g in GROUPS], group) + _pick(
        [g.end_days_before_end[1] - g.end_days_before_end[0] for g in GROUPS], group) * _u(seed, cid, "end")
    end = F.greatest(start, F.lit(span_days) - end_before.cast("int"))
    active_years = (end - start + 1) / 365.0
    rate = _pick([g.invoices_per_year * activity for g in GROUPS], group) * F.exp(0.3 * _normal(seed, cid, "rate"))
    n_invoices = F.greatest(F.lit(1), F.round(rate * active_years).cast("int"))
    return (
        spark.range(0, n + arrivals, numPartitions=partitions)
        .select(
            cid.alias("cid"),
            group.alias("group"),
            start.alias("start_day"),
            end.alias("end_day"),
            n_invoices.alias("n_invoices"),
            F.floor(_u(seed, cid, "country") ** 2 * len(COUNTRIES)).cast("int").alias("country_idx"),
        )
    )


def transaction_lines(customers_df: DataFrame, seed: int, start_date: dt.date, n_categories: int = len(CATEGORIES),
                      stop: tuple[int, int] | None = None) -> DataFrame:
    """Explode customers into invoices and invoice lines, in the raw export's column names and types.

    A line's base category is drawn from its group's weights; with more than the base categories, one of
    that base's variants (`category_names`) is then drawn uniformly. `stop` = (group, day): that group's
    invoices from that day on are not made (the group stops buying)."""
    cid, inv, line = F.col("cid"), F.col("inv"), F.col("line")
    group = F.col("group")
    invoices = customers_df.select("*", F.explode(F.sequence(F.lit(0), F.col("n_invoices") - 1)).alias("inv"))
    day = F.col("start_day") + (_u(seed, cid, inv, "day") * (F.col("end_day") - F.col("start_day") + 1)).cast("int")
    second = (8 * 3600 + _u(seed, cid, inv, "sec") * 13 * 3600).cast("long")
    if stop is not None:
        invoices = invoices.filter(~((group == stop[0]) & (day >= stop[1])))
    is_return = _u(seed, cid, inv, "ret") < _pick([g.return_prob for g in GROUPS], group)
    n_lines = 1 + (_u(seed, cid, inv, "lines") * _pick([float(g.lines_max) for g in GROUPS], group)).cast("int")
    invoices = invoices.select(
        "cid", "group", "country_idx", "inv",
        (F.unix_timestamp(F.lit(start_date).cast("timestamp")) + day.cast("long") * 86400 + second).alias("ts"),
        is_return.alias("is_return"),
        _choose([g.channels for g in GROUPS], group, _u(seed, cid, inv, "channel")).alias("channel_idx"),
        F.explode(F.sequence(F.lit(1), n_lines)).alias("line"),
        n_lines.alias("n_lines"),
    )
    line_value = (_pick([g.invoice_value for g in GROUPS], group) / F.col("n_lines")) * F.exp(
        0.5 * _normal(seed, cid, inv, line, "value"))
    quantity = 1 + (_u(seed, cid, inv, line, "qty") * 4).cast("int")
    unit_price = F.round(F.greatest(line_value / quantity, F.lit(0.1)), 2)
    category_idx = _choose([g.categories for g in GROUPS], group, _u(seed, cid, inv, line, "cat"))
    if n_categories > len(CATEGORIES):
        # base b has variants b, b + 8, b + 16, ... below n_categories
        variants = F.floor((F.lit(n_categories - 1) - category_idx) / len(CATEGORIES)) + 1
        variant = (_u(seed, cid, inv, line, "variant") * variants).cast("int")
        category_idx = (category_idx + variant * len(CATEGORIES)).cast("int")
    return invoices.select(
        F.lpad(cid.cast("string"), 8, "0").alias(G_CUSTOMER),
        F.concat(F.when(F.col("is_return"), F.lit("C")).otherwise(F.lit("")),
                 F.lpad(cid.cast("string"), 8, "0"), F.lit("-"), inv.cast("string"))
        .alias(G_INVOICE),
        F.date_format(F.timestamp_seconds(F.col("ts")), "yyyy-MM-dd HH:mm:ss").alias(G_TIMESTAMP),
        F.when(F.col("is_return"), -quantity).otherwise(quantity).cast("string").alias(G_QUANTITY),
        F.format_string("%.2f", unit_price).alias(G_UNIT_PRICE),
        F.element_at(F.array(*[F.lit(c) for c in category_names(n_categories)]), category_idx + 1).alias(G_CATEGORY),
        F.element_at(F.array(*[F.lit(c) for c in CHANNELS]), F.col("channel_idx") + 1).alias(G_CHANNEL),
        F.element_at(F.array(*[F.lit(c) for c in COUNTRIES]), F.col("country_idx") + 1).alias(G_COUNTRY),
        cid.alias("_cid"), inv.alias("_inv"), line.alias("_line"),
    )


BAD_KINDS = ("blank_customer", "bad_timestamp", "future_timestamp", "bad_quantity", "missing_price", "duplicate")


def with_bad_rows(seed: int, fraction: float) -> Callable[[DataFrame], DataFrame]:
    """Break about `fraction` of the lines, one kind each (see BAD_KINDS); duplicates are added, not changed."""

    def transform(df: DataFrame) -> DataFrame:
        if fraction <= 0:
            return df.drop("_cid", "_inv", "_line")
        parts = (F.col("_cid"), F.col("_inv"), F.col("_line"))
        bad = _u(seed, *parts, "bad") < fraction
        kind = (F.when(bad, (_u(seed, *parts, "kind") * len(BAD_KINDS)).cast("int")))

        def broken(k: str) -> Column:
            return kind == BAD_KINDS.index(k)

        out = df.select(
            F.when(broken("blank_customer"), F.lit("  ")).otherwise(F.col(G_CUSTOMER)).alias(G_CUSTOMER),
            G_INVOICE,
            F.when(broken("bad_timestamp"), F.lit("31/31/2023 25:61"))
            .when(broken("future_timestamp"), F.lit("2999-01-01 00:00:00"))
            .otherwise(F.col(G_TIMESTAMP)).alias(G_TIMESTAMP),
            F.when(broken("bad_quantity"), F.lit("two")).otherwise(F.col(G_QUANTITY)).alias(G_QUANTITY),
            F.when(broken("missing_price"), F.lit(None)).otherwise(F.col(G_UNIT_PRICE)).alias(G_UNIT_PRICE),
            G_CATEGORY, G_CHANNEL, G_COUNTRY,
            F.when(broken("duplicate"), F.array(F.lit(1), F.lit(2))).otherwise(F.array(F.lit(1))).alias("_copies"),
        )
        return out.withColumn("_copies", F.explode("_copies")).drop("_copies")

    return transform


def generate(
    spark: SparkSession,
    n_customers: int,
    seed: int,
    start_date: dt.date,
    end_date: dt.date,
    bad_row_fraction: float = 0.0,
    partitions: int = 0,
    activity: float = 1.0,
    n_categories: int = len(CATEGORIES),
    change_date: dt.date | None = None,
    change_group: str = "loyal_regulars",
    arrivals: int = 0,
) -> tuple[DataFrame, DataFrame]:
    """(log, truth): the raw transaction lines and each customer's planted group.

    With `change_date`: from that date `change_group` stops buying and `arrivals` new customers start (a
    planted change over time); without it, `arrivals` new customers start in the last 90 days."""
    span = (end_date - start_date).days
    parts = partitions or max(1, min(400, n_customers // 50_000))
    change_day = (change_date - start_date).days if change_date else None
    arrival_day = change_day if change_day is not None else span - NEW_CUSTOMER_WINDOW_DAYS
    cust = customers(spark, n_customers, seed, span, parts, activity, arrivals, max(0, min(span, arrival_day)))
    group_index = next(i for i, g in enumerate(GROUPS) if g.name == change_group)
    stop = (group_index, change_day) if change_day is not None else None
    log = transaction_lines(cust, seed, start_date, n_categories, stop).transform(
        with_bad_rows(seed, bad_row_fraction))
    names = F.array(*[F.lit(g.name) for g in GROUPS])
    truth = cust.select(F.lpad(F.col("cid").cast("string"), 8, "0").alias(TRUTH_CUSTOMER),
                        F.element_at(names, F.col("group") + 1).alias(TRUTH_GROUP))
    return log, truth


def typed_columns(df: DataFrame) -> DataFrame:
    """The log with the types a Parquet export would carry: timestamp, integer quantity, decimal price.

    Values broken on purpose that have no typed form (a quantity of 'two', a bad date) become nulls,
    which ingest quarantines as missing.
    """
    return df.select(
        G_CUSTOMER, G_INVOICE,
        F.try_to_timestamp(F.col(G_TIMESTAMP), F.lit("yyyy-MM-dd HH:mm:ss")).alias(G_TIMESTAMP),
        F.col(G_QUANTITY).try_cast("int").alias(G_QUANTITY),
        F.col(G_UNIT_PRICE).try_cast("decimal(12,2)").alias(G_UNIT_PRICE),
        G_CATEGORY, G_CHANNEL, G_COUNTRY,
    )
