"""Per-customer behavioural features as of a date D, from the transactions table.

Only transactions dated on or before D are read (`filter_as_of`), so nothing later can influence any
value. The log is shuffled once, by customer; within each partition it is aggregated to (customer, day,
transaction) and then to customer. Every feature below is an aggregate of those transaction rows, including
inter-purchase gaps, which come from a window over them (a day's second purchase transaction is 0 days
after its first, and adds nothing), not over every line.

Definitions (days are whole calendar days in the input time zone):
- a purchase day is a day with at least one non-return line; a return is a line with a negative amount;
- recency_days = D - last purchase day; tenure_days = D - first purchase day;
  age_at_last_purchase_days = last - first purchase day; repeat_frequency = purchase days - 1
  (frequency, T and recency of the BTYD summary used by lifetimes / pymc-marketing, in days);
- a transaction is a distinct transaction id within a day, or a line when the id is missing;
- spend is net of returns (total_spend) or purchases only (gross_spend); returned_value is the
  returned amount as a positive number; returned_share = returned_value / gross_spend;
- gap_mean_days / gap_std_days: mean and population standard deviation of the gaps between
  consecutive purchase days; null for one-day customers;
- spend shares per category / channel: each top value's share of gross spend, the rest as 'other';
- windowed: spend and transactions in the w days ending on D (D - w < day <= D); trend_ratio_90d =
  net spend in the last 90 days / net spend in the 90 days before (null when that is not above 1e-6:
  purchases and returns that cancel out leave float noise, not a base to divide by).
Customers whose history up to D holds only returns have no purchase day and are left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from custseg.core import columns as C

TREND_WINDOW_DAYS = 90
# purchases and returns that cancel out leave float noise (1e-14) in a net sum: no trend base below this
MIN_TREND_BASE = 1e-6

# per (customer, day, transaction) helper columns
_NET = "txn_net"
_GROSS = "txn_gross"
_RETURNED = "txn_returned"
_LINES = "txn_lines"
_TXNS = "txns"
_PURCHASE_TXNS = "purchase_txns"
_RETURN_TXNS = "return_txns"
_HAS_PURCHASE = "has_purchase"
_N_PURCHASE_DAYS = "n_purchase_days_"
_GAP = "gap_days"
_SUM_SQUARED_GAPS = "sum_squared_gaps"
_PURCHASE_LINES = "purchase_lines"
_RETURN_LINES = "return_lines"


def _share_col(prefix: str, i: int) -> str:
    return f"{prefix}_{i}"


def filter_as_of(as_of: dt.date) -> Callable[[DataFrame], DataFrame]:
    """Transactions dated on or before `as_of` (the features' cut-off: nothing later is read).

    On the transactions table the month filter prunes whole partitions (`txn_month`), the day filter the rest.
    Rows an earlier custseg wrote before `txn_month` existed have none, and are cut by their day alone.
    """

    def transform(df: DataFrame) -> DataFrame:
        if C.TXN_MONTH in df.columns:
            month = F.col(C.TXN_MONTH)
            df = df.filter(month.isNull() | (month <= F.lit(as_of.replace(day=1))))
        return df.filter(F.col(C.TXN_DATE) <= F.lit(as_of))

    return transform


def top_values(df: DataFrame, limits: Mapping[str, int]) -> dict[str, list[str]]:
    """For each column, its `n` values with the most gross spend (ties by name), excluding 'other'.

    One pass over `df` for all the columns: purchase lines are summed per combination of the columns'
    values (a map-side hash aggregation, few rows leave each task), and the combinations are then stacked
    into one row per column and value and summed again. An action bounded by the sum of the limits: the
    driver holds those few values, never customer-sized data. (`stack` rather than GROUPING SETS: Spark
    4.2's generated code for the latter fails to compile here and falls back to the interpreted path.)
    """
    cols = list(limits)
    if not cols:
        return {}
    value, which, gross = "_value", "_column", "_gross"
    pairs = ", ".join(f"'{c}', `{c}`" for c in cols)
    per_set = (
        df.filter(F.col(C.AMOUNT) > 0)
        .groupBy(*cols)
        .agg(F.sum(C.AMOUNT).alias(gross))
        .selectExpr(f"stack({len(cols)}, {pairs}) AS ({which}, {value})", gross)
        .groupBy(which, value)
        .agg(F.sum(gross).alias(gross))
    )
    limit = F.element_at(F.create_map(*[x for c in cols for x in (F.lit(c), F.lit(limits[c]))]), F.col(which))
    rank = F.row_number().over(Window.partitionBy(which).orderBy(F.desc(gross), F.asc(value)))
    rows = (
        per_set.filter(F.col(value).isNotNull() & (F.col(value) != C.OTHER_KEY))
        .withColumn("_rank", rank)
        .filter(F.col("_rank") <= limit)
        .collect()
    )
    out: dict[str, list[str]] = {c: [] for c in cols}
    for r in sorted(rows, key=lambda r: r["_rank"]):
        out[r[which]].append(r[value])
    return out


def _share_sums(top_categories: Sequence[str], top_channels: Sequence[str], value: Callable[[str, int], Column]
                ) -> list[Column]:
    return [value(col, i).alias(_share_col(col, i))
            for col, values in ((C.CATEGORY, top_categories), (C.CHANNEL, top_channels)) for i in range(len(values))]


def with_invoice_totals(top_categories: Sequence[str], top_channels: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    """One row per (customer, day, transaction id): net, gross and returned spend, lines, the transactions it
    counts for (all, purchases, returns), whether it holds a purchase, and spend per top value.

    Lines without a transaction id fall into one row per (customer, day), which counts each of its lines as
    a transaction of its own; a row with an id counts once (as a purchase if it has a purchase line, as a
    return if it has a return line). Fixed-width sums and counts only, so Spark runs a plain hash
    aggregation (no per-group sets).
    """

    def transform(df: DataFrame) -> DataFrame:
        amount = F.col(C.AMOUNT)
        gross = F.when(amount > 0, amount).otherwise(F.lit(0.0))
        is_return = F.col(C.IS_RETURN)
        tops = {C.CATEGORY: list(top_categories), C.CHANNEL: list(top_channels)}
        totals = df.groupBy(C.CUSTOMER_ID, C.TXN_DATE, C.TRANSACTION_ID).agg(
            F.sum(amount).alias(_NET),
            F.sum(gross).alias(_GROSS),
            F.sum(F.when(is_return, -amount).otherwise(F.lit(0.0))).alias(_RETURNED),
            F.count(F.lit(1)).alias(_LINES),
            F.count_if(~is_return).alias(_PURCHASE_LINES),
            F.count_if(is_return).alias(_RETURN_LINES),
            *_share_sums(top_categories, top_channels, lambda col, i: F.sum(
                F.when(F.col(col) == F.lit(tops[col][i]), gross).otherwise(F.lit(0.0)))),
        )
        no_id = F.col(C.TRANSACTION_ID).isNull()

        def transactions(lines: str) -> Column:
            return F.when(no_id, F.col(lines)).otherwise((F.col(lines) > 0).cast("long"))

        return totals.select(
            C.CUSTOMER_ID, C.TXN_DATE, C.TRANSACTION_ID, _NET, _GROSS, _RETURNED, _LINES,
            transactions(_LINES).alias(_TXNS),
            transactions(_PURCHASE_LINES).alias(_PURCHASE_TXNS),
            transactions(_RETURN_LINES).alias(_RETURN_TXNS),
            (F.col(_PURCHASE_LINES) > 0).alias(_HAS_PURCHASE),
            *_share_sums(top_categories, top_channels, lambda col, i: F.col(_share_col(col, i))),
        )

    return transform


def with_purchase_gaps(df: DataFrame) -> DataFrame:
    """Transaction rows plus `gap_days`: days since the customer's previous purchase transaction.

    Null on a customer's first purchase transaction and on rows without a purchase; 0 on a day's second and
    later purchase transactions, so the positive gaps are the gaps between consecutive purchase days. In the
    window's order the rows without a purchase (null) come first, so `lag` over purchases skips them.
    """
    purchase_date = F.when(F.col(_HAS_PURCHASE), F.col(C.TXN_DATE))
    by_day = Window.partitionBy(C.CUSTOMER_ID).orderBy(purchase_date.asc_nulls_first())
    return df.withColumn(_GAP, F.datediff(purchase_date, F.lag(purchase_date).over(by_day)))


def _gap_std(n: Column, span: Column, sum_squared: Column) -> Column:
    """Population std of the n - 1 gaps between n sorted purchase days; null below two days.

    The gaps sum to `span` (last - first day), so the variance is (m * sum g^2 - span^2) / m^2 with
    m = n - 1: an exact integer numerator, no cancellation, no array of days.
    """
    m = n - 1
    return F.when(n >= 2, F.sqrt((m * sum_squared - span * span).cast("double")) / m)


def _share_map(prefix: str, values: Sequence[str], gross: Column) -> Column:
    if not values:
        return F.lit(None).cast("map<string,double>")
    parts = [F.col(_share_col(prefix, i)) for i in range(len(values))]
    other = gross - sum(parts[1:], parts[0])
    keys = F.array(*[F.lit(v) for v in values], F.lit(C.OTHER_KEY))
    vals = F.array(*[p / gross for p in parts], F.greatest(other, F.lit(0.0)) / gross)
    return F.when(gross > 0, F.map_from_arrays(keys, vals))


def customer_features(
    as_of: dt.date,
    top_categories: Sequence[str] = (),
    top_channels: Sequence[str] = (),
    windows_days: Sequence[int] = (30, 90, 365),
) -> Callable[[DataFrame], DataFrame]:
    """Transactions (already cut at `as_of`) -> one feature row per customer with a purchase day."""
    d = F.lit(as_of)

    def in_last(days: int) -> Column:
        return F.col(C.TXN_DATE) > F.date_sub(d, days)

    def transform(df: DataFrame) -> DataFrame:
        # the one shuffle: every line of a customer to one partition; the transaction and customer
        # aggregations and the gap window below then run within partitions, without further exchanges
        by_customer = df.repartition(C.CUSTOMER_ID)
        rows = by_customer.transform(with_invoice_totals(top_categories, top_channels)).transform(with_purchase_gaps)
        purchase_date = F.when(F.col(_HAS_PURCHASE), F.col(C.TXN_DATE))
        prev_trend = (F.col(C.TXN_DATE) <= F.date_sub(d, TREND_WINDOW_DAYS)) & in_last(2 * TREND_WINDOW_DAYS)
        share_sums = _share_sums(top_categories, top_channels, lambda col, i: F.sum(_share_col(col, i)))
        per_customer = rows.groupBy(C.CUSTOMER_ID).agg(
            F.min(purchase_date).alias(C.FIRST_PURCHASE_DATE),
            F.max(purchase_date).alias(C.LAST_PURCHASE_DATE),
            # the first purchase day, and every later one (a positive gap)
            (F.count_if(F.col(_GAP) > 0) + 1).alias(_N_PURCHASE_DAYS),
            F.sum(F.col(_GAP).cast("long") * F.col(_GAP)).alias(_SUM_SQUARED_GAPS),
            F.sum(_TXNS).alias(C.N_TRANSACTIONS),
            F.sum(_PURCHASE_TXNS).alias(C.N_PURCHASE_TRANSACTIONS),
            F.sum(_RETURN_TXNS).alias(C.N_RETURN_TRANSACTIONS),
            F.sum(_LINES).alias(C.N_LINES),
            F.sum(_NET).alias(C.TOTAL_SPEND),
            F.sum(_GROSS).alias(C.GROSS_SPEND),
            F.sum(_RETURNED).alias(C.RETURNED_VALUE),
            *[F.sum(F.when(in_last(w), F.col(_NET)).otherwise(F.lit(0.0))).alias(C.spend_last(w))
              for w in windows_days],
            *[F.sum(F.when(in_last(w), F.col(_TXNS)).otherwise(F.lit(0))).alias(C.transactions_last(w))
              for w in windows_days],
            F.sum(F.when(in_last(TREND_WINDOW_DAYS), F.col(_NET)).otherwise(F.lit(0.0))).alias("_trend_last"),
            F.sum(F.when(prev_trend, F.col(_NET)).otherwise(F.lit(0.0))).alias(C.SPEND_PREV_90D),
            *share_sums,
        ).filter(F.col(C.FIRST_PURCHASE_DATE).isNotNull())

        n_days = F.col(_N_PURCHASE_DAYS).cast("int")  # the table's column type
        span = F.datediff(F.col(C.LAST_PURCHASE_DATE), F.col(C.FIRST_PURCHASE_DATE))
        gap_mean = F.when(n_days >= 2, span / (n_days - 1))
        n_tx, n_buy = F.col(C.N_TRANSACTIONS), F.col(C.N_PURCHASE_TRANSACTIONS)
        gross = F.col(C.GROSS_SPEND)
        prev = F.col(C.SPEND_PREV_90D)

        def ratio(num: Column, den: Column, above: float = 0.0) -> Column:
            return F.when(den > above, num / den)

        return per_customer.select(
            d.alias(C.AS_OF_DATE),
            C.CUSTOMER_ID,
            F.datediff(d, F.col(C.LAST_PURCHASE_DATE)).alias(C.RECENCY_DAYS),
            n_tx.alias(C.N_TRANSACTIONS),
            n_buy.alias(C.N_PURCHASE_TRANSACTIONS),
            F.col(C.N_RETURN_TRANSACTIONS),
            F.col(C.N_LINES),
            n_days.alias(C.N_PURCHASE_DAYS),
            (n_days - 1).alias(C.REPEAT_FREQUENCY),
            F.datediff(d, F.col(C.FIRST_PURCHASE_DATE)).alias(C.TENURE_DAYS),
            span.alias(C.AGE_AT_LAST_PURCHASE_DAYS),
            F.col(C.FIRST_PURCHASE_DATE),
            F.col(C.LAST_PURCHASE_DATE),
            F.col(C.TOTAL_SPEND),
            gross.alias(C.GROSS_SPEND),
            F.col(C.RETURNED_VALUE),
            ratio(F.col(C.TOTAL_SPEND), n_tx).alias(C.AVG_SPEND_PER_TRANSACTION),
            ratio(gross, n_buy).alias(C.AVG_GROSS_PER_TRANSACTION),
            (F.col(C.TOTAL_SPEND) / n_days).alias(C.AVG_SPEND_PER_DAY),
            (gross / n_days).alias(C.AVG_GROSS_PER_DAY),
            ratio(F.col(C.N_RETURN_TRANSACTIONS), n_tx).alias(C.RETURN_RATE),
            ratio(F.col(C.RETURNED_VALUE), gross).alias(C.RETURNED_SHARE),
            gap_mean.cast("double").alias(C.GAP_MEAN_DAYS),
            _gap_std(n_days, span, F.col(_SUM_SQUARED_GAPS)).alias(C.GAP_STD_DAYS),
            *[F.col(C.spend_last(w)) for w in windows_days],
            *[F.col(C.transactions_last(w)).cast("long").alias(C.transactions_last(w)) for w in windows_days],
            prev.alias(C.SPEND_PREV_90D),
            ratio(F.col("_trend_last"), prev, MIN_TREND_BASE).alias(C.TREND_RATIO_90D),
            _share_map(C.CATEGORY, top_categories, gross).alias(C.CATEGORY_SPEND_SHARE),
            _share_map(C.CHANNEL, top_channels, gross).alias(C.CHANNEL_SPEND_SHARE),
        )

    return transform
