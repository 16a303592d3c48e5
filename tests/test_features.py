"""Customer features on a hand-made transactions table; every expected value is computed by hand.

As-of date D = 2024-06-30. Useful day offsets (2024 is a leap year):
  D-10 = 2024-06-20   D-29 = 2024-06-01   D-30 = 2024-05-31   D-70 = 2024-04-21
  D-90 = 2024-04-01   D-100 = 2024-03-22  D-180 = 2024-01-02  D-364 = 2023-07-02  D-365 = 2023-07-01
Windows: last w days = (D-w, D]; the trend's previous 90 days = (D-180, D-90].

Customers:
  A  purchase days D-100 (two transactions: id A1 and a line without id), D-90, D-70 (two lines of one
     transaction A3); a return-only day D-10 (-25); a big purchase after D (must be ignored).
  B  one day, D itself: two lines of transaction B1.
  C  only a return up to D, and a purchase after D: no purchase day as of D, so no feature row.
  E  four purchase days at D-365, D-364, D-30, D-29 (window edges), lines without transaction ids.
Gross spend by category up to D: books 110 (A), toys 70 (A 10 + B 60), games 30 (A), garden 30 (B 15 + E 15).
By channel: online 110 (A), store 85 (A 10 + B 75), app 45 (A 30 + E 15).
"""

from __future__ import annotations

import datetime as dt
import math

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from custseg.core import columns as C
from custseg.core.catalog import TRANSACTIONS_SCHEMA
from custseg.stages.features import transform as features

D = dt.date(2024, 6, 30)


def line(customer: str, tx: str | None, day: dt.date, amount: float, category: str, channel: str,
         at: dt.time = dt.time(12, 0)) -> tuple:
    return (customer, tx, dt.datetime.combine(day, at), amount, None, None, amount < 0, category, channel, "UK",
            "file:/in/log.csv", "batch-1", day, day.replace(day=1))


BEFORE_OR_ON_D = [
    line("A", "A1", dt.date(2024, 3, 22), 40.0, "books", "online"),
    line("A", None, dt.date(2024, 3, 22), 10.0, "toys", "store"),
    line("A", "A2", dt.date(2024, 4, 1), 50.0, "books", "online"),
    line("A", "A3", dt.date(2024, 4, 21), 30.0, "games", "app"),
    line("A", "A3", dt.date(2024, 4, 21), 20.0, "books", "online"),
    line("A", "A4", dt.date(2024, 6, 20), -25.0, "books", "online"),
    line("B", "B1", dt.date(2024, 6, 30), 60.0, "toys", "store", dt.time(23, 59, 59)),
    line("B", "B1", dt.date(2024, 6, 30), 15.0, "garden", "store", dt.time(23, 59, 59)),
    line("C", "C1", dt.date(2024, 6, 10), -5.0, "books", "online"),
    line("E", None, dt.date(2023, 7, 1), 1.0, "garden", "app"),
    line("E", None, dt.date(2023, 7, 2), 2.0, "garden", "app"),
    line("E", None, dt.date(2024, 5, 31), 4.0, "garden", "app"),
    line("E", None, dt.date(2024, 6, 1), 8.0, "garden", "app"),
]
AFTER_D = [
    line("A", "A5", dt.date(2024, 7, 5), 1000.0, "garden", "store"),
    line("C", "C2", dt.date(2024, 7, 1), 500.0, "garden", "online", dt.time(0, 0, 0)),
]

FEATURE_SCHEMA = (
    "as_of_date date, customer_id string, recency_days int, n_transactions bigint, n_purchase_transactions bigint, "
    "n_return_transactions bigint, n_lines bigint, n_purchase_days int, repeat_frequency int, tenure_days int, "
    "age_at_last_purchase_days int, first_purchase_date date, last_purchase_date date, total_spend double, "
    "gross_spend double, returned_value double, avg_spend_per_transaction double, avg_gross_per_transaction double, "
    "avg_spend_per_purchase_day double, avg_gross_per_purchase_day double, return_rate double, returned_share double, "
    "gap_mean_days double, gap_std_days double, spend_30d double, spend_90d double, spend_365d double, "
    "n_transactions_30d bigint, n_transactions_90d bigint, n_transactions_365d bigint, spend_prev_90d double, "
    "trend_ratio_90d double"
)

# one row per customer, in FEATURE_SCHEMA order (maps are checked separately)
EXPECTED = [
    # A: days 03-22, 04-01, 04-21 (+ return day 06-20); gaps 10 and 20 -> mean 15, population std 5
    (D, "A", 70, 5, 4, 1, 6, 3, 2, 100, 30, dt.date(2024, 3, 22), dt.date(2024, 4, 21),
     125.0, 150.0, 25.0, 125.0 / 5, 150.0 / 4, 125.0 / 3, 150.0 / 3, 1 / 5, 25.0 / 150.0,
     15.0, 5.0,
     -25.0, 25.0, 125.0, 1, 2, 5,
     100.0, 0.25),
    # B: one day (D itself): no gaps, repeat frequency 0, nothing in the previous 90 days -> no trend
    (D, "B", 0, 1, 1, 0, 2, 1, 0, 0, 0, D, D,
     75.0, 75.0, 0.0, 75.0, 75.0, 75.0, 75.0, 0.0, 0.0,
     None, None,
     75.0, 75.0, 75.0, 1, 1, 1,
     0.0, None),
    # E: gaps 1, 334, 1 -> mean 112, variance (111^2 + 222^2 + 111^2) / 3 = 24642
    (D, "E", 29, 4, 4, 0, 4, 4, 3, 365, 336, dt.date(2023, 7, 1), dt.date(2024, 6, 1),
     15.0, 15.0, 0.0, 3.75, 3.75, 3.75, 3.75, 0.0, 0.0,
     112.0, math.sqrt(24642),
     8.0, 12.0, 14.0, 1, 2, 3,
     0.0, None),
]

EXPECTED_CATEGORY_SHARES = {
    "A": {"books": 110 / 150, "toys": 10 / 150, "other": 30 / 150},
    "B": {"books": 0.0, "toys": 60 / 75, "other": 15 / 75},
    "E": {"books": 0.0, "toys": 0.0, "other": 1.0},
}
EXPECTED_CHANNEL_SHARES = {
    "A": {"online": 110 / 150, "store": 10 / 150, "other": 30 / 150},
    "B": {"online": 0.0, "store": 1.0, "other": 0.0},
    "E": {"online": 0.0, "store": 0.0, "other": 1.0},
}


@pytest.fixture(scope="module")
def transactions(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(BEFORE_OR_ON_D + AFTER_D, TRANSACTIONS_SCHEMA).cache()


@pytest.fixture(scope="module")
def cut(transactions: DataFrame) -> DataFrame:
    return transactions.transform(features.filter_as_of(D))


@pytest.fixture(scope="module")
def feats(cut: DataFrame) -> DataFrame:
    return cut.transform(features.customer_features(D, ["books", "toys"], ["online", "store"])).cache()


def test_filter_as_of_keeps_rows_on_or_before_d(cut: DataFrame) -> None:
    kept = sorted((r[C.CUSTOMER_ID], r[C.TXN_DATE]) for r in cut.collect())
    assert len(kept) == 13
    assert max(d for _, d in kept) == D
    assert ("A", dt.date(2024, 7, 5)) not in kept and ("C", dt.date(2024, 7, 1)) not in kept


def test_top_values_ordering(cut: DataFrame, transactions: DataFrame) -> None:
    assert features.top_values(cut, {C.CATEGORY: 2})[C.CATEGORY] == ["books", "toys"]
    # games and garden tie at 30: by name
    assert features.top_values(cut, {C.CATEGORY: 3})[C.CATEGORY] == ["books", "toys", "games"]
    assert features.top_values(cut, {C.CATEGORY: 10})[C.CATEGORY] == ["books", "toys", "games", "garden"]
    assert features.top_values(cut, {C.CHANNEL: 5})[C.CHANNEL] == ["online", "store", "app"]
    # without the as-of cut the later purchases (garden 1500) would change the ranking
    assert features.top_values(transactions, {C.CATEGORY: 2})[C.CATEGORY] == ["garden", "books"]


def test_top_values_ignores_other_null_and_returns(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            line("X", "1", D, 500.0, "other", "web"),  # the reserved key never ranks
            line("X", "2", D, 400.0, None, "web"),  # no category
            line("X", "3", D, -300.0, "shoes", "web"),  # returns are not gross spend
            line("X", "4", D, 5.0, "shoes", "web"),
            line("X", "5", D, 7.0, "hats", "web"),
        ],
        TRANSACTIONS_SCHEMA,
    )
    assert features.top_values(df, {C.CATEGORY: 5})[C.CATEGORY] == ["hats", "shoes"]


def test_top_values_of_several_columns_in_one_pass(cut: DataFrame) -> None:
    assert features.top_values(cut, {C.CATEGORY: 2, C.CHANNEL: 1}) == {C.CATEGORY: ["books", "toys"],
                                                                      C.CHANNEL: ["online"]}
    assert features.top_values(cut, {C.CHANNEL: 5, C.CATEGORY: 3}) == {C.CATEGORY: ["books", "toys", "games"],
                                                                      C.CHANNEL: ["online", "store", "app"]}
    assert features.top_values(cut, {}) == {}


def test_every_feature_hand_computed(spark: SparkSession, feats: DataFrame) -> None:
    expected = spark.createDataFrame(EXPECTED, FEATURE_SCHEMA)
    got = feats.drop(C.CATEGORY_SPEND_SHARE, C.CHANNEL_SPEND_SHARE)
    assert_approx_df_equality(got, expected, 1e-9, ignore_nullable=True, ignore_row_order=True)


def test_feature_columns_in_order(feats: DataFrame) -> None:
    names = [f.strip().split(" ")[0] for f in FEATURE_SCHEMA.split(",")]
    assert feats.columns == [*names, C.CATEGORY_SPEND_SHARE, C.CHANNEL_SPEND_SHARE]


def test_return_only_customer_left_out(feats: DataFrame) -> None:
    assert sorted(r[C.CUSTOMER_ID] for r in feats.select(C.CUSTOMER_ID).collect()) == ["A", "B", "E"]


def test_spend_shares(feats: DataFrame) -> None:
    shares = feats.select(C.CUSTOMER_ID, C.CATEGORY_SPEND_SHARE, C.CHANNEL_SPEND_SHARE)
    rows = {r[C.CUSTOMER_ID]: r for r in shares.collect()}
    for customer, shares in EXPECTED_CATEGORY_SHARES.items():
        assert rows[customer][C.CATEGORY_SPEND_SHARE] == pytest.approx(shares), customer
    for customer, shares in EXPECTED_CHANNEL_SHARES.items():
        assert rows[customer][C.CHANNEL_SPEND_SHARE] == pytest.approx(shares), customer


def test_later_rows_change_nothing(spark: SparkSession, feats: DataFrame) -> None:
    only_before = spark.createDataFrame(BEFORE_OR_ON_D, TRANSACTIONS_SCHEMA)
    again = only_before.transform(features.customer_features(D, ["books", "toys"], ["online", "store"]))
    # maps cannot be sorted on, so order by customer instead of ignore_row_order
    assert_df_equality(feats.orderBy(C.CUSTOMER_ID), again.orderBy(C.CUSTOMER_ID), ignore_nullable=True)


def test_other_windows_and_no_top_values(cut: DataFrame) -> None:
    out = cut.transform(features.customer_features(D, [], [], windows_days=[1, 31]))
    assert [c for c in out.columns if c.startswith("spend_") or c.startswith("n_transactions_")] == [
        "spend_1d", "spend_31d", "n_transactions_1d", "n_transactions_31d", "spend_prev_90d",
    ]
    got = {r[C.CUSTOMER_ID]: (r["spend_1d"], r["spend_31d"], r["n_transactions_31d"], r[C.CATEGORY_SPEND_SHARE],
                              r[C.CHANNEL_SPEND_SHARE]) for r in out.collect()}
    # last 1 day = D only; last 31 days = 2024-05-31 .. D
    assert got == {
        "A": (0.0, -25.0, 1, None, None),
        "B": (75.0, 75.0, 1, None, None),
        "E": (0.0, 12.0, 2, None, None),
    }


def test_invoice_totals_count_transactions(cut: DataFrame) -> None:
    rows = cut.filter(cut[C.CUSTOMER_ID] == "A").transform(features.with_invoice_totals(["books"], []))
    got = {(r[C.TXN_DATE], r[C.TRANSACTION_ID]): (r["txn_net"], r["txn_gross"], r["txn_returned"], r["txn_lines"],
                                                  r["txns"], r["purchase_txns"], r["return_txns"], r["has_purchase"],
                                                  r["category_0"])
           for r in rows.collect()}
    assert got == {
        (dt.date(2024, 3, 22), "A1"): (40.0, 40.0, 0.0, 1, 1, 1, 0, True, 40.0),
        (dt.date(2024, 3, 22), None): (10.0, 10.0, 0.0, 1, 1, 1, 0, True, 0.0),  # a line without id: one each
        (dt.date(2024, 4, 1), "A2"): (50.0, 50.0, 0.0, 1, 1, 1, 0, True, 50.0),
        (dt.date(2024, 4, 21), "A3"): (50.0, 50.0, 0.0, 2, 1, 1, 0, True, 20.0),  # two lines, one transaction
        (dt.date(2024, 6, 20), "A4"): (-25.0, 0.0, 25.0, 1, 1, 0, 1, False, 0.0),
    }


def test_a_days_second_purchase_transaction_is_no_gap(cut: DataFrame) -> None:
    rows = cut.filter(cut[C.CUSTOMER_ID] == "A").transform(features.with_invoice_totals([], [])) \
        .transform(features.with_purchase_gaps)
    gaps = [(r[C.TXN_DATE], r["gap_days"]) for r in rows.collect() if r["has_purchase"]]
    # 03-22 twice (the first purchase: null; the other: 0), 04-01 (+10), 04-21 (+20); the return day has none
    assert sorted(g for _, g in gaps if g is not None) == [0, 10, 20]
    assert [d for d, g in gaps if g is None] == [dt.date(2024, 3, 22)]
