"""Monitor: how customers moved between segments since the previous date P, and each segment's KPIs at D.

Everything comes from one aggregation. The date's segments, each customer with its KPI measures from the
features at D, are full-outer-joined with P's segments on customer_id and grouped by (from segment, to segment):
the flows, at most k*k + 2k rows, whatever the number of customers. Migration and KPIs are then computed on
those few rows: every KPI is a sum (or a ratio of sums) of the customers' measures, so a segment's value at D
is the sum over the flows into it, and its retention at P the flows out of it.

Definitions (D the as-of date, w a window in days; features as the features stage defines them):
- movement: `stayed` (same segment at P and D), `moved` (another), `entered` (no segment at P: from null),
  `left` (no segment at D: to null); share_of_from = customers / the from-segment's customers at P (null for
  entered), share_of_to = customers / the to-segment's customers at D (null for left);
- customers, customer_share (of the date's customers; the population's is 1);
- active_<w>d: customers whose last purchase day is in the w days ending on D, recency_days < w (recency 0:
  bought on D; the same window as the features' spend_<w>d);
- revenue_<w>d: the sum of the customers' spend_<w>d (net of returns);
- avg_order_value: the customers' gross spend / their purchase transactions, lifetime up to D (null without any);
- retained_share: of the segment's customers at P still present at D, the share in the same segment at D (the
  population's: of all customers present at both dates, the share that stayed); null without a previous date or
  when none of them is present at D.
A segment with customers at P and none at D keeps its rows for D (customers 0), so that its fall is visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from custseg.core import columns as C

FROM, TO = C.FROM_SEGMENT_ID, C.TO_SEGMENT_ID
CUSTOMERS = "customers"
VALUE = "value"
PREVIOUS_VALUE = "previous_value"
KPI_CUSTOMERS = "customers"
KPI_CUSTOMER_SHARE = "customer_share"
KPI_AVG_ORDER_VALUE = "avg_order_value"
KPI_RETAINED_SHARE = "retained_share"
# the per-customer measures the flows sum, besides the KPIs' own active_<w>d and revenue_<w>d
_GROSS = "gross_spend"
_PURCHASES = "purchase_transactions"
_TOTAL = "_is_total"  # the rollup's population row


def active_kpi(days: int) -> str:
    """Customers whose last purchase is in the `days` days ending on the date."""
    return f"active_{days}d"


def revenue_kpi(days: int) -> str:
    """Net spend of the segment's customers in the `days` days ending on the date."""
    return f"revenue_{days}d"


def kpi_names(windows_days: Sequence[int]) -> list[str]:
    """Every KPI, in the order the table's rows are written."""
    return [KPI_CUSTOMERS, KPI_CUSTOMER_SHARE, *[active_kpi(w) for w in windows_days],
            *[revenue_kpi(w) for w in windows_days], KPI_AVG_ORDER_VALUE, KPI_RETAINED_SHARE]


def required_feature_columns(windows_days: Sequence[int]) -> list[str]:
    """The customer_features columns the KPIs are computed from."""
    return [C.CUSTOMER_ID, C.RECENCY_DAYS, C.GROSS_SPEND, C.N_PURCHASE_TRANSACTIONS,
            *[C.spend_last(w) for w in windows_days]]


def _measures(windows_days: Sequence[int]) -> list[str]:
    return [*[active_kpi(w) for w in windows_days], *[revenue_kpi(w) for w in windows_days], _GROSS, _PURCHASES]


def kpi_measures(windows_days: Sequence[int]) -> Callable[[DataFrame], DataFrame]:
    """customer_features (one date) -> per customer: customer_id and the additive measures the KPIs sum."""

    def transform(features_df: DataFrame) -> DataFrame:
        return features_df.select(
            C.CUSTOMER_ID,
            *[(F.col(C.RECENCY_DAYS) < F.lit(w)).cast("long").alias(active_kpi(w)) for w in windows_days],
            *[F.col(C.spend_last(w)).cast("double").alias(revenue_kpi(w)) for w in windows_days],
            F.col(C.GROSS_SPEND).cast("double").alias(_GROSS),
            F.col(C.N_PURCHASE_TRANSACTIONS).cast("long").alias(_PURCHASES),
        )

    return transform


def segment_flows(previous_df: DataFrame, current_df: DataFrame, measures_df: DataFrame,
                  windows_days: Sequence[int]) -> DataFrame:
    """(customer_id, segment_id) at P and at D, and D's per-customer measures -> one row per (from, to) pair
    with customers: customers and the sums of the measures of those present at D.

    A customer of D's segments without a features row counts as a customer with no activity or spend.
    """
    previous = previous_df.select(C.CUSTOMER_ID, F.col(C.SEGMENT_ID).alias(FROM))
    current = current_df.select(C.CUSTOMER_ID, F.col(C.SEGMENT_ID).alias(TO)) \
        .join(measures_df, C.CUSTOMER_ID, "left")
    return previous.join(current, C.CUSTOMER_ID, "full_outer").groupBy(FROM, TO).agg(
        F.count(F.lit(1)).alias(CUSTOMERS), *[F.sum(m).alias(m) for m in _measures(windows_days)])


def segment_migration(flows_df: DataFrame) -> DataFrame:
    """Flows -> migration rows: from, to, movement, customers, share_of_from, share_of_to."""
    from_col, to_col, customers = F.col(FROM), F.col(TO), F.col(CUSTOMERS)
    of_from = F.sum(customers).over(Window.partitionBy(FROM))
    of_to = F.sum(customers).over(Window.partitionBy(TO))
    movement = (F.when(from_col.isNull(), F.lit(C.MOVEMENT_ENTERED))
                .when(to_col.isNull(), F.lit(C.MOVEMENT_LEFT))
                .when(from_col == to_col, F.lit(C.MOVEMENT_STAYED))
                .otherwise(F.lit(C.MOVEMENT_MOVED)))
    return flows_df.select(
        from_col.cast("int").alias(FROM),
        to_col.cast("int").alias(TO),
        movement.alias(C.MOVEMENT),
        customers.cast("long").alias(CUSTOMERS),
        F.when(from_col.isNotNull(), customers / of_from).alias("share_of_from"),
        F.when(to_col.isNotNull(), customers / of_to).alias("share_of_to"),
    )


def _rolled(df: DataFrame, key: str, *aggs: Column) -> DataFrame:
    """Rows by `key` plus the population's (segment_id -1), from one rollup."""
    rolled = df.filter(F.col(key).isNotNull()).rollup(key).agg(F.grouping(key).alias(_TOTAL), *aggs)
    segment = F.when(F.col(_TOTAL) == 1, F.lit(C.POPULATION_SEGMENT_ID)).otherwise(F.col(key))
    return rolled.select(segment.cast("int").alias(C.SEGMENT_ID), *[c for c in rolled.columns if c not in
                                                                    (key, _TOTAL)])


def segment_kpis(flows_df: DataFrame, windows_days: Sequence[int]) -> DataFrame:
    """Flows -> KPIs in long format: segment_id (-1 the population), kpi, value.

    Segments with customers at D, and those with customers at P only (customers 0 at D).
    """
    measures = _measures(windows_days)
    at_d = _rolled(flows_df, TO, F.sum(CUSTOMERS).alias(CUSTOMERS), *[F.sum(m).alias(m) for m in measures])
    at_p = _rolled(flows_df, FROM,
                   F.sum(F.when(F.col(TO).isNotNull(), F.col(CUSTOMERS))).alias("_still_present"),
                   F.sum(F.when(F.col(FROM) == F.col(TO), F.col(CUSTOMERS))).alias("_stayed"))
    population = at_d.filter(F.col(C.SEGMENT_ID) == C.POPULATION_SEGMENT_ID).select(
        F.col(CUSTOMERS).alias("_population"))
    wide = at_d.join(at_p, C.SEGMENT_ID, "full_outer").crossJoin(population)
    customers = F.coalesce(F.col(CUSTOMERS), F.lit(0))
    purchases, still_present = F.col(_PURCHASES), F.col("_still_present")
    values = {
        KPI_CUSTOMERS: customers,
        KPI_CUSTOMER_SHARE: customers / F.col("_population"),
        **{active_kpi(w): F.coalesce(F.col(active_kpi(w)), F.lit(0)) for w in windows_days},
        **{revenue_kpi(w): F.coalesce(F.col(revenue_kpi(w)), F.lit(0.0)) for w in windows_days},
        KPI_AVG_ORDER_VALUE: F.when(purchases > 0, F.col(_GROSS) / purchases),
        KPI_RETAINED_SHARE: F.when(still_present > 0, F.coalesce(F.col("_stayed"), F.lit(0)) / still_present),
    }
    return wide.select(C.SEGMENT_ID, *[values[k].cast("double").alias(k) for k in kpi_names(windows_days)]) \
        .unpivot([C.SEGMENT_ID], [F.col(k) for k in kpi_names(windows_days)], C.KPI, VALUE)


def with_previous(previous_df: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """KPIs (segment_id, kpi, value) plus the previous date's value of the same (segment_id, kpi) from
    `previous_df` (null when absent), `change` = value - previous_value and `relative_change` = change /
    |previous_value| (null when the previous value is null or 0)."""
    previous = previous_df.select(C.SEGMENT_ID, C.KPI, F.col(VALUE).alias(PREVIOUS_VALUE))

    def transform(df: DataFrame) -> DataFrame:
        value, prev = F.col(VALUE), F.col(PREVIOUS_VALUE)
        change = value - prev
        return df.join(previous, [C.SEGMENT_ID, C.KPI], "left").select(
            C.SEGMENT_ID, C.KPI, value, prev, change.alias("change"),
            F.when(prev != 0, change / F.abs(prev)).alias("relative_change"))

    return transform
