"""Profile on a hand-made table: sizes, shares, means, medians, lifts and centres in original units."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.io.models import IDENTITY, SIGNED_LOG1P, ModelInput
from custseg.stages.profile import transform as profile

E = math.e
REC = ModelInput(C.RECENCY_DAYS, C.RECENCY_DAYS, None, SIGNED_LOG1P)
TX = ModelInput(C.N_TRANSACTIONS, C.N_TRANSACTIONS, None, IDENTITY)


def test_profiles_by_hand(spark) -> None:  # type: ignore[no-untyped-def]
    # segment 0: a, b with recency e-1 and e^3-1 (ln(1+r) = 1 and 3); segment 1: c, d with recency 10 and 30
    rows = [
        ("a", 0, 30.0, E - 1, 4, 1.0, 4.0),
        ("b", 0, 10.0, E ** 3 - 1, 6, 3.0, 6.0),
        ("c", 1, 5.0, 10.0, 1, math.log(11), 1.0),
        ("d", 1, 5.0, 30.0, 1, math.log(31), 1.0),
    ]
    df = spark.createDataFrame(rows, f"{C.CUSTOMER_ID} string, {C.SEGMENT_ID} int, {C.TOTAL_SPEND} double, "
                                     f"{C.RECENCY_DAYS} double, {C.N_TRANSACTIONS} int, {REC.imputed_col} double, "
                                     f"{TX.imputed_col} double")
    cols = profile.profile_columns(df.drop(REC.imputed_col, TX.imputed_col), {})
    assert [n for n, _ in cols] == [C.TOTAL_SPEND, C.RECENCY_DAYS, C.N_TRANSACTIONS]
    centre_cols = [(i.name, i.imputed_col, i.inverse) for i in (REC, TX)]
    out = {r[C.SEGMENT_ID]: r for r in
           df.transform(profile.segment_profiles(cols, centre_cols, "run-1")).collect()}
    assert sorted(out) == [-1, 0, 1]
    s0, s1, pop = out[0], out[1], out[-1]
    assert (s0["customers"], s1["customers"], pop["customers"]) == (2, 2, 4)
    assert pop["is_population"] and not s0["is_population"]
    assert (s0["customer_share"], s0["revenue"], pop["revenue"]) == (0.5, 40.0, 50.0)
    assert s0["revenue_share"] == pytest.approx(0.8) and s1["revenue_share"] == pytest.approx(0.2)
    # means, and lifts against the population's
    pop_rec = (E - 1 + E ** 3 - 1 + 10 + 30) / 4
    assert s0["feature_mean"][C.RECENCY_DAYS] == pytest.approx((E + E ** 3 - 2) / 2)
    assert pop["feature_mean"][C.RECENCY_DAYS] == pytest.approx(pop_rec)
    assert s1["feature_lift"][C.RECENCY_DAYS] == pytest.approx(20 / pop_rec)
    assert (s0["feature_lift"][C.N_TRANSACTIONS], s1["feature_lift"][C.N_TRANSACTIONS]) == \
        (pytest.approx(5 / 3), pytest.approx(1 / 3))
    assert pop["feature_lift"][C.N_TRANSACTIONS] == pytest.approx(1.0)
    # medians: percentile_approx returns a member's value, the lower middle one for an even count
    assert s1["feature_median"][C.RECENCY_DAYS] == 10.0
    assert pop["feature_median"][C.RECENCY_DAYS] == 10.0
    assert s0["feature_median"][C.N_TRANSACTIONS] == 4.0
    # centres: the members' mean in model units (log space for recency) mapped back, not the plain mean
    assert s0["centroid"][C.RECENCY_DAYS] == pytest.approx(E ** 2 - 1)
    assert s1["centroid"][C.RECENCY_DAYS] == pytest.approx(math.sqrt(11 * 31) - 1)
    assert s0["centroid"][C.N_TRANSACTIONS] == pytest.approx(5.0)
    assert {r["run_id"] for r in out.values()} == {"run-1"}


def test_inverse_transforms_undo_the_forward_sql(spark) -> None:  # type: ignore[no-untyped-def]
    values = [-250.0, -1.0, 0.0, 0.5, 42.0, 1e6]
    df = spark.createDataFrame([(v,) for v in values], f"{C.RECENCY_DAYS} double")
    got = df.select(F.expr(REC.model_sql).alias("m")).select(REC.inverse(F.col("m")).alias("x")).collect()
    assert [r["x"] for r in got] == pytest.approx(values)
    assert [REC.inverse_value(math.copysign(math.log1p(abs(v)), v)) for v in values] == pytest.approx(values)
