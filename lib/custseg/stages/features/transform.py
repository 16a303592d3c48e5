"""Per-customer behavioural features as of a date D, from the transactions table.

Only transactions dated on or before D are read (`filter_as_of`), so nothing later can influence any
value. The log is shuffled once, by customer; within each partition it is aggregated to (customer, day,
transaction), to (customer, day) and to customer. Every feature below is an aggregate of day rows,
including inter-purchase gaps, which come from a window over day rows, not over every transaction.

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

# per (customer, day) helper columns
_DAY_NET = "day_net"
_DAY_GROSS = "day_gross"
_DAY_RETURNED = "day_returned"
_DAY_LINES = "day_lines"
_DAY_TXNS = "day_txns"
_DAY_PURCHASE_TXNS = "day_purchase_txns"
_DAY_RETURN_TXNS = "day_return_txns"
_DAY_HAS_PURCHASE = "day_has_purchase"
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
    """One row per (customer, day, transaction id): spend, lines, purchase and return lines, spend per top value.

    Lines without a transaction id fall into one row per (customer, day); the next level counts each of
    their lines as a transaction of its own. Fixed-width sums and counts only, so Spark runs a plain hash
    aggregation (no per-group sets).
    """

    def transform(df: DataFrame) -> DataFrame:
        amount = F.col(C.AMOUNT)
        gross = F.when(amount > 0, amount).otherwise(F.lit(0.0))
        is_return = F.col(C.IS_RETURN)
        tops = {C.CATEGORY: list(top_categories), C.CHANNEL: list(top_channels)}
        return df.groupBy(C.CUSTOMER_ID, C.TXN_DATE, C.TRANSACTION_ID).agg(
            F.sum(amount).alias(_DAY_NET),
            F.sum(gross).alias(_DAY_GROSS),
            F.sum(F.when(is_return, -amount).otherwise(F.lit(0.0))).alias(_DAY_RETURNED),
            F.count(F.lit(1)).alias(_DAY_LINES),
            F.count_if(~is_return).alias(_PURCHASE_LINES),
            F.count_if(is_return).alias(_RETURN_LINES),
            *_share_sums(top_categories, top_channels, lambda col, i: F.sum(
                F.when(F.col(col) == F.lit(tops[col][i]), gross).otherwise(F.lit(0.0)))),
        )

    return transform


def with_daily_totals(top_categories: Sequence[str], top_channels: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    """One row per (customer, day): net, gross and returned spend, lines, transactions, spend per top value."""

    def transform(df: DataFrame) -> DataFrame:
        invoices = df.transform(with_invoice_totals(top_categories, top_channels))
        no_id = F.col(C.TRANSACTION_ID).isNull()

        def transactions(lines: Column) -> Column:
            # an invoice with such lines counts once; lines without an id count one each
            return F.sum(F.when(no_id, lines).otherwise((lines > 0).cast("long")))

        return invoices.groupBy(C.CUSTOMER_ID, C.TXN_DATE).agg(
            F.sum(_DAY_NET).alias(_DAY_NET),
            F.sum(_DAY_GROSS).alias(_DAY_GROSS),
            F.sum(_DAY_RETURNED).alias(_DAY_RETURNED),
            F.sum(_DAY_LINES).alias(_DAY_LINES),
            transactions(F.col(_DAY_LINES)).alias(_DAY_TXNS),
            transactions(F.col(_PURCHASE_LINES)).alias(_DAY_PURCHASE_TXNS),
            transactions(F.col(_RETURN_LINES)).alias(_DAY_RETURN_TXNS),
            (F.sum(_PURCHASE_LINES) > 0).alias(_DAY_HAS_PURCHASE),
            *_share_sums(top_categories, top_channels, lambda col, i: F.sum(_share_col(col, i))),
        )

    return transform


def with_purchase_gaps(df: DataFrame) -> DataFrame:
    """Daily rows plus `gap_days`: days since the customer's previous purchase day, on purchase days.

    Null on a customer's first purchase day and on days with returns only. In the window's order the
    days without a purchase (null) come first, so `lag` over purchase days skips them.
    """
    purchase_date = F.when(F.col(_DAY_HAS_PURCHASE), F.col(C.TXN_DATE))
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
        # the one shuffle: every line of a customer to one partition; the invoice, day and customer
        # aggregations and the gap window below then run within partitions, without further exchanges
        by_customer = df.repartition(C.CUSTOMER_ID)
        daily = by_customer.transform(with_daily_totals(top_categories, top_channels)).transform(with_purchase_gaps)
        purchase_date = F.when(F.col(_DAY_HAS_PURCHASE), F.col(C.TXN_DATE))
        prev_trend = (F.col(C.TXN_DATE) <= F.date_sub(d, TREND_WINDOW_DAYS)) & in_last(2 * TREND_WINDOW_DAYS)
        share_sums = [
            F.sum(_share_col(col, i)).alias(_share_col(col, i))
            for col, values in ((C.CATEGORY, top_categories), (C.CHANNEL, top_channels))
            for i in range(len(values))
        ]
        per_customer = daily.groupBy(C.CUSTOMER_ID).agg(
            F.min(purchase_date).alias(C.FIRST_PURCHASE_DATE),
            F.max(purchase_date).alias(C.LAST_PURCHASE_DATE),
            F.count_if(F.col(_DAY_HAS_PURCHASE)).alias(_N_PURCHASE_DAYS),
            F.sum(F.col(_GAP).cast("long") * F.col(_GAP)).alias(_SUM_SQUARED_GAPS),
            F.sum(_DAY_TXNS).alias(C.N_TRANSACTIONS),
            F.sum(_DAY_PURCHASE_TXNS).alias(C.N_PURCHASE_TRANSACTIONS),
            F.sum(_DAY_RETURN_TXNS).alias(C.N_RETURN_TRANSACTIONS),
            F.sum(_DAY_LINES).alias(C.N_LINES),
            F.sum(_DAY_NET).alias(C.TOTAL_SPEND),
            F.sum(_DAY_GROSS).alias(C.GROSS_SPEND),
            F.sum(_DAY_RETURNED).alias(C.RETURNED_VALUE),
            *[F.sum(F.when(in_last(w), F.col(_DAY_NET)).otherwise(F.lit(0.0))).alias(C.spend_last(w))
              for w in windows_days],
            *[F.sum(F.when(in_last(w), F.col(_DAY_TXNS)).otherwise(F.lit(0))).alias(C.transactions_last(w))
              for w in windows_days],
            F.sum(F.when(in_last(TREND_WINDOW_DAYS), F.col(_DAY_NET)).otherwise(F.lit(0.0))).alias("_trend_last"),
            F.sum(F.when(prev_trend, F.col(_DAY_NET)).otherwise(F.lit(0.0))).alias(C.SPEND_PREV_90D),
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
