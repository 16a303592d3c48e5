"""Validity measures of model selection (Davies-Bouldin, Calinski-Harabasz) and the metric that chooses, on
hand-made data with hand-computed expectations."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_approx_df_equality
from pyspark.ml.linalg import Vectors
from pyspark.sql import types as T

from custseg.core import config, keys
from custseg.core.stage import StageContext
from custseg.stages.segment import select, step, validity

# Three clusters of two points in 2-D, far apart:
#   cluster 0: (-1, 0), ( 1, 0)   mean m0 = ( 0,  0)   distances to m0: 1, 1   S0 = 1   sum d^2 = 2
#   cluster 1: (12,14), (12,18)   mean m1 = (12, 16)   distances to m1: 2, 2   S1 = 2   sum d^2 = 8
#   cluster 2: (21, 0), (27, 0)   mean m2 = (24,  0)   distances to m2: 3, 3   S2 = 3   sum d^2 = 18
# n = 6, k = 3, overall mean m = (36/6, 32/6) = (12, 16/3)
# Calinski-Harabasz:
#   B = 2 * (|m0-m|^2 + |m1-m|^2 + |m2-m|^2) = 2 * ((144 + 256/9) + (1024/9) + (144 + 256/9)) = 2 * 1376/3 = 2752/3
#   W = 2 + 8 + 18 = 28
#   CH = (B / (k-1)) / (W / (n-k)) = (2752/6) / (28/3) = 1376/28 = 344/7 = 49.142857142857...
# Davies-Bouldin: |m0-m1| = sqrt(144+256) = 20, |m1-m2| = sqrt(144+256) = 20, |m0-m2| = 24
#   R01 = (1+2)/20 = 0.15, R02 = (1+3)/24 = 1/6, R12 = (2+3)/20 = 0.25
#   D0 = max(0.15, 1/6) = 1/6, D1 = max(0.15, 0.25) = 0.25, D2 = max(1/6, 0.25) = 0.25
#   DB = (1/6 + 1/4 + 1/4) / 3 = (8/12) / 3 = 2/9 = 0.222222222...
POINTS = [((-1.0, 0.0), 0), ((1.0, 0.0), 0), ((12.0, 14.0), 1), ((12.0, 18.0), 1), ((21.0, 0.0), 2), ((27.0, 0.0), 2)]
MEANS = [[0.0, 0.0], [12.0, 16.0], [24.0, 0.0]]
DB_3 = 2 / 9
CH_3 = 344 / 7


def _predicted(spark, points=POINTS):  # type: ignore[no-untyped-def]
    return spark.createDataFrame([(Vectors.dense(list(x)), c) for x, c in points], ["v", "prediction"])


def _counting(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Count the aggregations `validity_measures` runs."""
    calls: list[int] = []
    real = validity.cluster_sums

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(validity, "cluster_sums", counted)
    return calls


def test_davies_bouldin_and_calinski_harabasz_by_hand_in_one_aggregation(spark, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls = _counting(monkeypatch)
    db, ch = validity.validity_measures(_predicted(spark), "v", MEANS)
    assert db == pytest.approx(DB_3, abs=1e-9)
    assert ch == pytest.approx(CH_3, abs=1e-9)
    assert len(calls) == 1  # centres at the means: the one aggregation is enough


def test_centres_off_the_means_give_the_same_values(spark, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # the measures are defined on the clusters' means, not on the model's centres; with centres elsewhere the
    # squared distances still give W exactly (sum|x-m|^2 = sum|x-c|^2 - n|m-c|^2) but the plain distances do not
    # give S: distances to (0, 0.5) from cluster 0 are sqrt(1.25) twice, mean 1.118 instead of 1
    calls = _counting(monkeypatch)
    db, ch = validity.validity_measures(_predicted(spark), "v", [[0.0, 0.5], [12.0, 15.0], [24.0, 0.0]])
    assert db == pytest.approx(DB_3, abs=1e-9)
    assert ch == pytest.approx(CH_3, abs=1e-9)
    assert len(calls) == 2  # the second aggregation takes the distances to the means


def test_empty_clusters_are_skipped(spark) -> None:  # type: ignore[no-untyped-def]
    # clusters 0 and 2 only (the model's cluster 1 is empty): n = 4, k = 2, overall mean (12, 0)
    #   B = 2*|(0,0)-(12,0)|^2 + 2*|(24,0)-(12,0)|^2 = 288 + 288 = 576; W = 2 + 18 = 20
    #   CH = (576/1) / (20/2) = 57.6
    #   DB: R02 = (1+3)/24 = 1/6 for both clusters: DB = 1/6
    two = [p for p in POINTS if p[1] != 1]
    db, ch = validity.validity_measures(_predicted(spark, two), "v", MEANS)
    assert db == pytest.approx(1 / 6, abs=1e-9)
    assert ch == pytest.approx(57.6, abs=1e-9)


def test_one_cluster_gives_nothing_and_non_finite_values_become_none(spark) -> None:  # type: ignore[no-untyped-def]
    assert validity.validity_measures(_predicted(spark, POINTS[:2]), "v", MEANS) == (None, None)
    # every point on its cluster's mean: W = 0, CH = B/0 -> None; S = 0 everywhere, DB = 0
    db, ch = validity.validity_measures(_predicted(spark, [((0.0, 0.0), 0), ((4.0, 3.0), 1)]), "v", [[0, 0], [4, 3]])
    assert (db, ch) == (0.0, None)
    # two clusters with the same mean (1, 0): DB = (1+1)/0 -> None; B = 0, so CH = 0 / W = 0
    same_mean = [((0.0, 0.0), 0), ((2.0, 0.0), 0), ((1.0, 1.0), 1), ((1.0, -1.0), 1)]
    db, ch = validity.validity_measures(_predicted(spark, same_mean), "v", [[1.0, 0.0], [1.0, 0.0]])
    assert db is None and ch == 0.0


@pytest.mark.parametrize("algorithm", ["kmeans", "bisecting_kmeans"])
def test_every_scored_candidate_gets_the_measures(spark, algorithm: str) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame([(Vectors.dense(list(x)),) for x, _ in POINTS], ["v"])
    _, cand = select.fit_and_score(algorithm, 3, df, "v", [1], 20, 0.0)
    assert sorted(cand.cluster_sizes) == [2, 2, 2]  # the three planted clusters
    assert cand.davies_bouldin == pytest.approx(DB_3, abs=1e-9)
    assert cand.calinski_harabasz == pytest.approx(CH_3, abs=1e-9)


def _cand(algo: str, k: int, sil: float | None, db: float | None, ch: float | None, eligible: bool = True
          ) -> select.Candidate:
    return select.Candidate(algo, k, silhouette=sil, davies_bouldin=db, calinski_harabasz=ch, eligible=eligible)


# silhouette picks A, Davies-Bouldin picks B, Calinski-Harabasz picks D; C would win all three but is not eligible
A = _cand("kmeans", 2, 0.60, 0.80, 200.0)
B = _cand("kmeans", 3, 0.55, 0.50, 180.0)
C_INELIGIBLE = _cand("kmeans", 4, 0.90, 0.10, 900.0, eligible=False)
D = _cand("bisecting_kmeans", 4, 0.50, 0.90, 250.0)


@pytest.mark.parametrize(("metric", "winner", "words"), [
    ("silhouette", A, "highest silhouette among candidates meeting the minimum segment size"),
    ("davies_bouldin", B, "lowest Davies-Bouldin index among candidates meeting the minimum segment size"),
    ("calinski_harabasz", D, "highest Calinski-Harabasz index among candidates meeting the minimum segment size"),
])
def test_choose_ranks_by_the_selection_metric(metric: str, winner: select.Candidate, words: str) -> None:
    chosen, why = select.choose([A, B, C_INELIGIBLE, D], metric)
    assert chosen is winner
    assert why == words


def test_choose_defaults_to_the_silhouette() -> None:
    assert select.choose([A, B, C_INELIGIBLE, D]) == (A, "highest silhouette among candidates meeting the minimum "
                                                          "segment size")


def test_choose_by_davies_bouldin_ties_missing_values_and_fallback() -> None:
    # ties: smaller k, then the algorithm's name
    tied = [_cand("kmeans", 5, 0.5, 0.4, 10.0), _cand("kmeans", 3, 0.5, 0.4, 10.0),
            _cand("bisecting_kmeans", 3, 0.5, 0.4, 10.0)]
    chosen, _ = select.choose(tied, "davies_bouldin")
    assert chosen is tied[2]
    # an eligible candidate without a value ranks after those with one, lower k or not
    missing = [_cand("kmeans", 2, 0.5, None, None), _cand("kmeans", 3, 0.5, 1.5, 5.0)]
    assert select.choose(missing, "davies_bouldin")[0] is missing[1]
    assert select.choose(missing, "calinski_harabasz")[0] is missing[1]
    # nothing eligible: the lowest Davies-Bouldin among scored candidates (a finite silhouette)
    loose = [_cand("kmeans", 2, 0.5, 0.7, 1.0, False), _cand("kmeans", 3, 0.4, 0.6, 1.0, False),
             _cand("kmeans", 4, None, 0.1, 1.0, False)]
    chosen, why = select.choose(loose, "davies_bouldin")
    assert chosen is loose[1]
    assert why == "no candidate met the minimum segment size: lowest Davies-Bouldin index overall"
    with pytest.raises(ValueError, match="unknown selection metric"):
        select.choose(loose, "inertia")


def test_the_rule_knows_every_configurable_metric() -> None:
    assert set(select.METRIC_DIRECTIONS) == set(keys.SELECTION_METRICS)


BASE = ["input.path=data/in.csv", "output.root=out", "input.columns.customer_id=cid", "input.columns.timestamp=ts",
        "input.columns.amount=amt"]


def test_segment_selection_metric_reaches_the_rule() -> None:
    assert step._params(config.load(None, BASE), None).selection_metric == "silhouette"
    params = step._params(config.load(None, [*BASE, "segment.selection_metric=davies_bouldin"]), None)
    assert params.selection_metric == "davies_bouldin"
    assert params.choose([A, B, C_INELIGIBLE, D])[0] is B


def test_model_selection_rows_carry_the_measures(spark) -> None:  # type: ignore[no-untyped-def]
    cfg = config.load(None, BASE)
    ctx = StageContext(cfg, "run-v", dt.datetime(2024, 7, 1), dt.date(2024, 6, 30))
    rows = step._model_selection_rows(spark, ctx, [A, _cand("kmeans", 9, None, None, None, False)], 100)
    expected = spark.createDataFrame(
        [("kmeans", 2, 0.60, 0.80, 200.0), ("kmeans", 9, None, None, None)],
        T.StructType([T.StructField("algorithm", T.StringType()), T.StructField("k", T.IntegerType()),
                      T.StructField("silhouette", T.DoubleType()), T.StructField("davies_bouldin", T.DoubleType()),
                      T.StructField("calinski_harabasz", T.DoubleType())]))
    assert_approx_df_equality(rows.select("algorithm", "k", "silhouette", "davies_bouldin", "calinski_harabasz"),
                              expected, 1e-12, ignore_row_order=True, ignore_nullable=True)
