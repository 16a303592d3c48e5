"""Monitor: migration between segments and per-segment KPIs, on tiny hand-made dates with hand-computed values.

The two dates used throughout (P = 2024-01-31, D = 2024-02-29), customer: segment
    P: a 0, b 0, c 0, d 1, e 1, f 1, i 2
    D: a 0, b 0, c 1, d 1, e 0, g 1, h 0
so a, b, d stayed; c moved 0 -> 1 and e 1 -> 0; f and i (the only customer of segment 2) left; g and h entered.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg.core import columns as C
from custseg.core import config
from custseg.core.errors import ConfigError
from custseg.stages.monitor import step as monitor
from custseg.stages.monitor import transform as M

REPO = Path(__file__).resolve().parents[1]
P, D = dt.date(2024, 1, 31), dt.date(2024, 2, 29)
WINDOWS = [30, 90]
PREVIOUS = [("a", 0), ("b", 0), ("c", 0), ("d", 1), ("e", 1), ("f", 1), ("i", 2)]
CURRENT = [("a", 0), ("b", 0), ("c", 1), ("d", 1), ("e", 0), ("g", 1), ("h", 0)]
# customer, recency_days, spend_30d, spend_90d, gross_spend, n_purchase_transactions (features at D)
FEATURES_D = [("a", 0, 10.0, 30.0, 100.0, 4), ("b", 30, 0.0, 20.0, 50.0, 1), ("e", 89, 0.0, 5.0, 20.0, 2),
              ("h", 90, 0.0, 0.0, 30.0, 1), ("c", 29, 8.0, 8.0, 40.0, 2), ("d", 200, 0.0, 0.0, 60.0, 3),
              ("g", 5, 6.0, 6.0, 10.0, 1)]
FEATURE_COLUMNS = [C.CUSTOMER_ID, C.RECENCY_DAYS, C.spend_last(30), C.spend_last(90), C.GROSS_SPEND,
                   C.N_PURCHASE_TRANSACTIONS]

MIGRATION_SCHEMA = T.StructType([
    T.StructField(C.FROM_SEGMENT_ID, T.IntegerType()), T.StructField(C.TO_SEGMENT_ID, T.IntegerType()),
    T.StructField(C.MOVEMENT, T.StringType()), T.StructField("customers", T.LongType()),
    T.StructField("share_of_from", T.DoubleType()), T.StructField("share_of_to", T.DoubleType())])
# P: segment 0 has 3 customers, 1 has 3, 2 has 1; D: segment 0 has 4 (a, b, e, h), 1 has 3 (c, d, g)
MIGRATION = [
    (0, 0, "stayed", 2, 2 / 3, 2 / 4),
    (0, 1, "moved", 1, 1 / 3, 1 / 3),
    (1, 1, "stayed", 1, 1 / 3, 1 / 3),
    (1, 0, "moved", 1, 1 / 3, 1 / 4),
    (1, None, "left", 1, 1 / 3, None),
    (2, None, "left", 1, 1.0, None),
    (None, 1, "entered", 1, None, 1 / 3),
    (None, 0, "entered", 1, None, 1 / 4),
]
KPI_ORDER = ["customers", "customer_share", "active_30d", "active_90d", "revenue_30d", "revenue_90d",
             "avg_order_value", "retained_share"]
# per segment, in KPI_ORDER. Segment 0 (a, b, e, h): active in 30 days a only (b's last purchase is 30 days
# back), in 90 days a, b, e (h is 90 back); gross 200 over 8 purchases; of a, b, c (all still present) a and b
# stayed. Segment 1 (c, d, g): of d, e, f, d and e are present, d stayed. Segment 2: only at P, i left.
# Population: 5 customers present at both dates, 3 stayed.
KPIS_D: dict[int, list[float | None]] = {
    0: [4.0, 4 / 7, 1.0, 3.0, 10.0, 55.0, 200 / 8, 2 / 3],
    1: [3.0, 3 / 7, 2.0, 2.0, 14.0, 14.0, 110 / 6, 1 / 2],
    2: [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None, None],
    -1: [7.0, 1.0, 3.0, 5.0, 24.0, 69.0, 310 / 14, 3 / 5],
}
KPI_SCHEMA = T.StructType([T.StructField(C.SEGMENT_ID, T.IntegerType()), T.StructField(C.KPI, T.StringType()),
                           T.StructField("value", T.DoubleType())])


def _segments(spark, rows: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    return spark.createDataFrame(rows, f"{C.CUSTOMER_ID} string, {C.SEGMENT_ID} int")


def _features(spark, rows: list[tuple[Any, ...]]):  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(rows, FEATURE_COLUMNS)
    return df.select(C.CUSTOMER_ID, F.col(C.RECENCY_DAYS).cast("int").alias(C.RECENCY_DAYS), C.spend_last(30),
                     C.spend_last(90), C.GROSS_SPEND, F.col(C.N_PURCHASE_TRANSACTIONS).cast("long")
                     .alias(C.N_PURCHASE_TRANSACTIONS))


def _flows(spark, previous: list[tuple[str, int]] = PREVIOUS):  # type: ignore[no-untyped-def]
    measures = _features(spark, FEATURES_D).transform(M.kpi_measures(WINDOWS))
    return M.segment_flows(_segments(spark, previous), _segments(spark, CURRENT), measures, WINDOWS)


def _kpi_rows(kpis: dict[int, list[float | None]]) -> list[tuple[int, str, float | None]]:
    return [(sid, kpi, v) for sid, values in kpis.items() for kpi, v in zip(KPI_ORDER, values, strict=True)]


def test_migration_by_hand(spark) -> None:  # type: ignore[no-untyped-def]
    migration = M.segment_migration(_flows(spark))
    expected = spark.createDataFrame(MIGRATION, MIGRATION_SCHEMA)
    assert_approx_df_equality(migration, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_migration_rows_sum_to_each_dates_customers(spark) -> None:  # type: ignore[no-untyped-def]
    migration = M.segment_migration(_flows(spark))
    sums = migration.agg(
        F.sum(F.when(F.col(C.FROM_SEGMENT_ID).isNotNull(), F.col("customers"))).alias("from_p"),
        F.sum(F.when(F.col(C.TO_SEGMENT_ID).isNotNull(), F.col("customers"))).alias("to_d")).first()
    assert sums is not None and (sums["from_p"], sums["to_d"]) == (len(PREVIOUS), len(CURRENT))
    # every from-segment's shares add up to 1, and every to-segment's
    for key, share in ((C.FROM_SEGMENT_ID, "share_of_from"), (C.TO_SEGMENT_ID, "share_of_to")):
        totals = migration.filter(F.col(key).isNotNull()).groupBy(key).agg(F.sum(share).alias("s")).collect()
        assert sorted(round(r["s"], 12) for r in totals) == [1.0] * len(totals)


def test_kpis_by_hand(spark) -> None:  # type: ignore[no-untyped-def]
    kpis = M.segment_kpis(_flows(spark), WINDOWS)
    assert M.kpi_names(WINDOWS) == KPI_ORDER
    expected = spark.createDataFrame(_kpi_rows(KPIS_D), KPI_SCHEMA)
    assert_approx_df_equality(kpis, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_first_date_kpis_have_no_retention(spark) -> None:  # type: ignore[no-untyped-def]
    kpis = M.segment_kpis(_flows(spark, previous=[]), WINDOWS)
    first = {sid: [*values[:-1], None] for sid, values in KPIS_D.items() if sid != 2}  # no segment 2 without P
    expected = spark.createDataFrame(_kpi_rows(first), KPI_SCHEMA)
    assert_approx_df_equality(kpis, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_change_against_the_previous_kpi_rows(spark) -> None:  # type: ignore[no-untyped-def]
    current = spark.createDataFrame([(0, "customers", 4.0), (0, "revenue_30d", 10.0), (1, "customers", 3.0),
                                     (2, "customers", 0.0), (-1, "retained_share", 0.6)], KPI_SCHEMA)
    previous = spark.createDataFrame([(0, "customers", 3.0), (0, "revenue_30d", 0.0), (1, "customers", 3.0),
                                      (2, "customers", 1.0), (5, "customers", 9.0)], KPI_SCHEMA)
    out = current.transform(M.with_previous(previous))
    schema = T.StructType([*KPI_SCHEMA.fields, T.StructField("previous_value", T.DoubleType()),
                           T.StructField("change", T.DoubleType()), T.StructField("relative_change", T.DoubleType())])
    expected = spark.createDataFrame([
        (0, "customers", 4.0, 3.0, 1.0, 1 / 3),
        (0, "revenue_30d", 10.0, 0.0, 10.0, None),  # no relative change from 0
        (1, "customers", 3.0, 3.0, 0.0, 0.0),
        (2, "customers", 0.0, 1.0, -1.0, -1.0),
        (-1, "retained_share", 0.6, None, None, None),  # no previous row
    ], schema)
    assert_approx_df_equality(out, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


# --- the step, end to end through the runner ------------------------------------------------------------------

def _segment_rows(spark, date: dt.date, rows: list[tuple[str, int]], run: str):  # type: ignore[no-untyped-def]
    return _segments(spark, rows).select(
        F.lit(date).alias(C.AS_OF_DATE), C.CUSTOMER_ID, C.SEGMENT_ID, F.lit(1.0).alias(C.DISTANCE),
        F.lit(f"seg-{run}").alias(C.RUN_ID), F.lit(f"model-{run}").alias(C.MODEL_RUN_ID),
        F.lit(C.ASSIGNMENT_SCORED).alias(C.ASSIGNMENT))


def _write_inputs(spark, cfg: config.Config) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Segments and features for P and D (one commit each), recorded in lineage for D as the segment and features
    stages would (P, without a record, reads the tables' current versions); then a later, unrecorded version of
    both for D that the monitor must not read. Returns the versions recorded for D."""
    from custseg.io import delta, lineage

    seg_path, feat_path = cfg.table_path(C.TABLE_SEGMENTS), cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
    features_p = [(c, 10, 1.0, 2.0, 10.0, 1) for c, _ in PREVIOUS]  # at P every customer active, spend 1 / 2
    segs = _segment_rows(spark, P, PREVIOUS, "202401").unionByName(_segment_rows(spark, D, CURRENT, "202402"))
    feats = _features(spark, features_p).select(F.lit(P).alias(C.AS_OF_DATE), "*").unionByName(
        _features(spark, FEATURES_D).select(F.lit(D).alias(C.AS_OF_DATE), "*"))
    versions = {C.TABLE_SEGMENTS: delta.append(segs, seg_path, C.TABLE_SEGMENTS),
                C.TABLE_CUSTOMER_FEATURES: delta.append(feats, feat_path, C.TABLE_CUSTOMER_FEATURES)}
    for stage, table in (("segment", C.TABLE_SEGMENTS), ("features", C.TABLE_CUSTOMER_FEATURES)):
        lineage.record(spark, cfg, lineage.Entry(stage, f"{stage}-202402", D, {}, {table: versions[table]}))
    # later versions nobody recorded for D: everyone of D in segment 7, with no recent activity
    delta.replace_partition(_segment_rows(spark, D, [(c, 7) for c, _ in CURRENT], "other"), seg_path,
                            C.TABLE_SEGMENTS, D)
    delta.replace_partition(_features(spark, [(c, 999, 0.0, 0.0, 1.0, 1) for c, _ in CURRENT]).select(
        F.lit(D).alias(C.AS_OF_DATE), "*"), feat_path, C.TABLE_CUSTOMER_FEATURES, D)
    return versions


def test_the_step_end_to_end_over_two_dates(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from custseg import runner
    from custseg.io import delta

    cfg = config.load(None, [f"input.path={tmp_path}/x.csv", f"output.root={tmp_path}/out"])
    recorded = _write_inputs(spark, cfg)
    mig_path, kpi_path = cfg.table_path(C.TABLE_SEGMENT_MIGRATION), cfg.table_path(C.TABLE_SEGMENT_KPIS)

    first = runner.run_stage(spark, cfg, "monitor", P)
    assert isinstance(first, monitor.MonitorResult)
    assert first.describe().startswith("first date: no migration")
    assert first.previous_as_of is None and first.counts()["monitor.migration_rows"] == 0
    assert delta.read(spark, mig_path).count() == 0  # the date's migration: an empty partition
    kpis_p = delta.read(spark, kpi_path).filter(F.col(C.AS_OF_DATE) == F.lit(P))
    assert kpis_p.count() == 4 * len(KPI_ORDER)  # segments 0, 1, 2 and the population
    assert kpis_p.filter(F.col("previous_value").isNotNull() | F.col(C.PREVIOUS_AS_OF_DATE).isNotNull()
                         | ((F.col(C.KPI) == "retained_share") & F.col("value").isNotNull())).count() == 0

    second = runner.run_stage(spark, cfg, "monitor", D)
    assert isinstance(second, monitor.MonitorResult)
    assert second.reads[C.TABLE_SEGMENTS] == recorded[C.TABLE_SEGMENTS]  # not the later, unrecorded version
    assert second.reads[C.TABLE_CUSTOMER_FEATURES] == recorded[C.TABLE_CUSTOMER_FEATURES]
    assert second.movements == {"stayed": 3, "moved": 2, "entered": 2, "left": 2}
    assert second.describe().splitlines() == [
        "since 2024-01-31: customers 3 stayed, 2 moved, 2 entered, 2 left; 32 KPI rows",
        "    segment  0:          4 customers (was 3), retained 66.7%",
        "    segment  1:          3 customers (was 3), retained 50.0%",
        "    segment  2:          0 customers (was 1), retained -",
        "    population:          7 customers (was 7), retained 60.0%"]

    migration = delta.read(spark, mig_path).filter(F.col(C.AS_OF_DATE) == F.lit(D))
    assert migration.select(C.AS_OF_DATE, C.PREVIOUS_AS_OF_DATE, C.RUN_ID).distinct().collect() == \
        [(D, P, "seg-202402")]
    assert_approx_df_equality(migration.select(*MIGRATION_SCHEMA.names), spark.createDataFrame(
        MIGRATION, MIGRATION_SCHEMA), 1e-12, ignore_row_order=True, ignore_nullable=True)

    kpis = delta.read(spark, kpi_path).filter(F.col(C.AS_OF_DATE) == F.lit(D))
    assert kpis.select(C.PREVIOUS_AS_OF_DATE, C.RUN_ID, C.MODEL_RUN_ID).distinct().collect() == \
        [(P, "seg-202402", "model-202402")]
    assert_approx_df_equality(kpis.select(C.SEGMENT_ID, C.KPI, "value"), spark.createDataFrame(
        _kpi_rows(KPIS_D), KPI_SCHEMA), 1e-12, ignore_row_order=True, ignore_nullable=True)
    # previous values are the monitor's rows for P: there segment 0 had 3 customers, all active with 1.0 in
    # 30 days; segment 2 had 1
    schema = T.StructType([T.StructField(C.SEGMENT_ID, T.IntegerType()), T.StructField(C.KPI, T.StringType()),
                           *[T.StructField(c, T.DoubleType()) for c in ("previous_value", "change",
                                                                        "relative_change")]])
    expected = spark.createDataFrame([(0, "customers", 3.0, 1.0, 1 / 3), (0, "revenue_30d", 3.0, 7.0, 7 / 3),
                                      (2, "customers", 1.0, -1.0, -1.0), (-1, "retained_share", None, None, None)],
                                     schema)
    picked = kpis.join(expected.select(C.SEGMENT_ID, C.KPI), [C.SEGMENT_ID, C.KPI]).select(*schema.names)
    assert_approx_df_equality(picked, expected, 1e-12, ignore_row_order=True, ignore_nullable=True)


def test_check_rejects_a_window_the_features_do_not_have(tmp_path: Path) -> None:
    base = [f"input.path={tmp_path}/x.csv", f"output.root={tmp_path}/out"]
    cfg = config.load(None, [*base, "monitor.windows_days=[30, 60]"])
    with pytest.raises(ConfigError) as e:
        monitor.check(cfg)
    assert str(e.value) == ("monitor.windows_days: 60 not in features.windows_days (monitor.windows_days = "
                            "[30, 60], features.windows_days = [30, 90, 365]): the KPIs use the features' "
                            "spend_<N>d columns")
    monitor.check(config.load(None, [*base, "monitor.windows_days=[365, 30]"]))  # any of them, in any order


def test_a_bad_window_stops_the_cli_before_spark(capsys: pytest.CaptureFixture[str]) -> None:
    from custseg import cli

    code = cli.main(["monitor", "--conf", str(REPO / "conf" / "local.toml"),
                     "--set", "features.windows_days=[30, 365]"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "custseg: error: monitor.windows_days: 90 not in features.windows_days (monitor.windows_days = [30, 90], "
        "features.windows_days = [30, 365]): the KPIs use the features' spend_<N>d columns")

