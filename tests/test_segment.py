"""Segmentation building blocks on hand-made inputs with hand-computed expectations."""

from __future__ import annotations

import math

import pytest
from chispa import assert_approx_df_equality
from pyspark.ml.linalg import Vectors
from pyspark.sql import types as T

from custseg.core import columns as C
from custseg.io import models
from custseg.stages.segment import preprocess, select, validity


def test_adjusted_rand_index_identical_and_relabelled_partitions_score_one() -> None:
    # a = [0,0,1,1], b = [x,x,y,y]: the same partition under other names
    assert validity.adjusted_rand_index([(0, "x", 2), (1, "y", 2)]) == pytest.approx(1.0)


def test_adjusted_rand_index_hand_computed() -> None:
    # labels a = [0,0,0,1,1,1], b = [0,0,1,1,2,2]
    # cells: (0,0)=2 (0,1)=1 (1,1)=1 (1,2)=2 -> sum C(n,2) = 1 + 0 + 0 + 1 = 2
    # rows: 3,3 -> 3+3 = 6; cols: 2,2,2 -> 1+1+1 = 3; C(6,2) = 15
    # expected = 6*3/15 = 1.2; max = (6+3)/2 = 4.5; ARI = (2-1.2)/(4.5-1.2) = 0.8/3.3
    cont = [(0, 0, 2), (0, 1, 1), (1, 1, 1), (1, 2, 2)]
    assert validity.adjusted_rand_index(cont) == pytest.approx(0.8 / 3.3)


def test_model_inputs_expand_maps_and_mark_logged_features() -> None:
    specs = preprocess.model_inputs(
        [C.RECENCY_DAYS, C.RETURN_RATE, C.CHANNEL_SPEND_SHARE, "category_spend_share.home"],
        {C.CHANNEL_SPEND_SHARE: ["app", "online"]},
    )
    assert [s.name for s in specs] == [C.RECENCY_DAYS, C.RETURN_RATE, "channel_spend_share.app",
                                       "channel_spend_share.online", "category_spend_share.home"]
    assert [s.transform for s in specs] == [models.SIGNED_LOG1P] + [models.IDENTITY] * 4
    assert [s.key for s in specs] == [None, None, "app", "online", "home"]
    assert specs[2].sql == "channel_spend_share['app']"
    assert specs[2].model_col == "in__channel_spend_share_app"


def _cand(algo: str, k: int, sil: float | None, eligible: bool) -> select.Candidate:
    return select.Candidate(algo, k, silhouette=sil, eligible=eligible)


def test_choose_prefers_highest_silhouette_among_eligible() -> None:
    cands = [_cand("kmeans", 2, 0.9, False), _cand("kmeans", 3, 0.6, True),
             _cand("bisecting_kmeans", 4, 0.7, True)]
    chosen, why = select.choose(cands)
    assert (chosen.algorithm, chosen.k) == ("bisecting_kmeans", 4)
    assert "minimum segment size" in why


def test_choose_ties_go_to_smaller_k_then_kmeans() -> None:
    cands = [_cand("kmeans", 5, 0.7, True), _cand("bisecting_kmeans", 3, 0.7, True), _cand("kmeans", 3, 0.7, True)]
    chosen, _ = select.choose(cands)
    assert chosen.k == 3 and chosen.algorithm == "bisecting_kmeans"  # alphabetical: 'bisecting' < 'kmeans'


def test_choose_falls_back_when_nothing_is_eligible_and_fails_when_nothing_scored() -> None:
    chosen, why = select.choose([_cand("kmeans", 2, 0.4, False), _cand("kmeans", 3, 0.5, False)])
    assert chosen.k == 3 and why.startswith("no candidate met")
    chosen, why = select.choose([_cand("kmeans", 2, None, False)])
    assert chosen is None and "two or more clusters" in why


def test_segment_and_distance_from_centres(spark) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame(
        [("a", Vectors.dense([0.0, 0.0]), 0), ("b", Vectors.dense([3.0, 4.0]), 0),
         ("c", Vectors.dense([10.0, 1.0]), 1)],
        ["customer_id", "v", "prediction"],
    )
    centres = [[0.0, 0.0], [10.0, 0.0]]
    out = df.transform(models.with_segment_and_distance(centres, [1, 0], "v"))
    expected = spark.createDataFrame(
        [("a", 1, 0.0), ("b", 1, 5.0), ("c", 0, 1.0)],
        T.StructType([T.StructField(C.CUSTOMER_ID, T.StringType()), T.StructField(C.SEGMENT_ID, T.IntegerType()),
                      T.StructField(C.DISTANCE, T.DoubleType())]),
    )
    assert_approx_df_equality(out, expected, 1e-9, ignore_row_order=True, ignore_nullable=True)


def test_preprocessing_logs_imputes_and_scales(spark) -> None:  # type: ignore[no-untyped-def]
    # recency 0, e-1, e^2-1 -> log1p 0, 1, 2 -> sample std 1 -> scaled 0, 1, 2 (divided by the std, not centred)
    # return_rate 0.0, null, NaN -> the NaN is treated as missing: both imputed with the median of [0.0] = 0.0
    # -> zero variance; the pipeline still scales it to 0 (dropping it is the caller's job, see below)
    df = spark.createDataFrame(
        [("a", 0.0, 0.0), ("b", math.e - 1, None), ("c", math.e ** 2 - 1, float("nan"))],
        "customer_id string, recency_days double, return_rate double",
    )
    specs = preprocess.model_inputs([C.RECENCY_DAYS, C.RETURN_RATE], {})
    model = preprocess.preprocessing_pipeline(specs).fit(df)
    rows = {r[C.CUSTOMER_ID]: r[C.SCALED_VECTOR].toArray().tolist()
            for r in model.transform(df).select(C.CUSTOMER_ID, C.SCALED_VECTOR).collect()}
    assert rows["a"][0] == pytest.approx(0.0, abs=1e-12)
    assert rows["b"][0] == pytest.approx(1.0)
    assert rows["c"][0] == pytest.approx(2.0)
    assert all(math.isfinite(r[1]) for r in rows.values())
    stats = df.agg(*preprocess.non_finite_counts(specs)).first().asDict()
    assert stats["nonfinite__in__return_rate"] == 1
    assert stats["std__in__return_rate"] == 0.0


class _FakeModel:
    """Stands in for a fitted MLlib model: a given cost, fixed clusters for the silhouette."""

    def __init__(self, cost: float, seed: int) -> None:
        self.seed = seed
        self.summary = type("Summary", (), {"trainingCost": cost, "clusterSizes": [2, 2]})()

    def clusterCenters(self) -> list[list[float]]:
        return [[0.0, 0.0], [10.0, 0.0]]

    def transform(self, df):  # type: ignore[no-untyped-def]
        from pyspark.sql import functions as F

        return df.withColumn(models.PREDICTION, F.when(F.col("id") < 2, 0).otherwise(1))


def test_equal_costs_keep_the_earlier_seed(spark, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # two starts at the same optimum differ only by float summation order: the earlier seed must win, or a
    # cluster and local mode (different partitionings) could keep different starts
    costs = {1: 100.0, 2: 100.0 * (1 - 1e-12), 3: 90.0}

    class Est:
        def __init__(self, seed: int) -> None:
            self.seed = seed

        def fit(self, df):  # type: ignore[no-untyped-def]
            return _FakeModel(costs[self.seed], self.seed)

    monkeypatch.setattr(select, "make_estimator", lambda algorithm, k, seed, max_iter, col: Est(seed))
    df = spark.createDataFrame([(i, Vectors.dense([float(i // 2 * 10), 0.0])) for i in range(4)], ["id", "v"])
    model, cand = select.fit_and_score("kmeans", 2, df, "v", [1, 2], 10, 0.0)
    assert (model.seed, cand.seed, cand.cost, cand.starts) == (1, 1, 100.0, 2)
    model, cand = select.fit_and_score("kmeans", 2, df, "v", [1, 2, 3], 10, 0.0)
    assert (model.seed, cand.cost) == (3, 90.0)  # a real improvement still wins
    assert cand.silhouette is not None and cand.silhouette > 0.9


def _planted_features(spark, n: int = 900):  # type: ignore[no-untyped-def]
    """Three planted groups on three features, with overlap, so that BisectingKMeans' splits and the
    sample matter; a null gap for one customer in ten (imputed with the median)."""
    import random

    rng = random.Random(5)
    centres = [(5.0, 40.0, 0.05), (60.0, 8.0, 0.3), (200.0, 2.0, 0.0)]
    rows = []
    for i in range(n):
        r, f, ret = centres[i % 3]
        rows.append((f"c{i:05d}", rng.gauss(r, r / 2), rng.gauss(f, f / 2), abs(rng.gauss(ret, 0.1)),
                     None if i % 10 == 0 else rng.uniform(1, 90)))
    return spark.createDataFrame(rows, "customer_id string, recency_days double, n_transactions double, "
                                       "return_rate double, gap_mean_days double")


def _candidates(df, n_partitions: int) -> list[tuple]:  # type: ignore[no-untyped-def]
    """Preprocess, lay out, sample and fit both algorithms, as the segment stage does."""
    specs = preprocess.model_inputs([C.RECENCY_DAYS, C.N_TRANSACTIONS, C.RETURN_RATE, C.GAP_MEAN_DAYS], {})
    laid_out = df.transform(preprocess.with_canonical_layout(n_partitions))
    prep = preprocess.preprocessing_pipeline(specs).fit(laid_out)
    matrix = prep.transform(laid_out).select(C.CUSTOMER_ID, C.SCALED_VECTOR).cache()
    train = preprocess.selection_sample(matrix, 900, 500, 42, 300).cache()
    out = []
    for algo in ("kmeans", "bisecting_kmeans"):
        for k in (3, 4):
            _, c = select.fit_and_score(algo, k, train, C.SCALED_VECTOR, [42, 43], 10, 0.0)
            out.append((algo, k, c.seed, c.cost, c.silhouette, c.cluster_sizes))
    sampled = sorted(r[0] for r in train.select(C.CUSTOMER_ID).collect())
    train.unpersist()
    matrix.unpersist()
    return [*out, ("sample", len(sampled), hash(tuple(sampled)))]


def test_matrix_partitions_follow_the_data_size_only() -> None:
    assert preprocess.matrix_partitions(10, 250_000) == 1
    assert preprocess.matrix_partitions(250_000, 250_000) == 1
    assert preprocess.matrix_partitions(250_001, 250_000) == 2
    assert preprocess.matrix_partitions(500_000, 250_000) == 2
    assert preprocess.matrix_partitions(500_001, 250_000) == 3
    assert preprocess.matrix_partitions(1_850_000, 250_000) == 8


def test_candidates_do_not_depend_on_how_the_input_was_partitioned(spark) -> None:  # type: ignore[no-untyped-def]
    # the same customers read as 1, 3 and 7 partitions in different orders (as a features table written by
    # another run, or read on a cluster, would be): identical candidates, to the last bit, and the same sample
    from pyspark.sql import functions as F

    df = _planted_features(spark).cache()
    splits = [df.coalesce(1), df.repartition(3), df.orderBy(F.rand(3)).repartition(7, F.col("recency_days"))]
    results = [_candidates(s, 2) for s in splits]
    df.unpersist()
    assert results[0][-1][1] < 900  # the selection ran on a sample
    assert results[1] == results[0]
    assert results[2] == results[0]


def test_fit_chooses_the_planted_k_numbers_segments_by_spend_and_maps_centres_back(spark) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from custseg.stages.segment import fit

    # three well-separated groups of 40 customers: recent big spenders, middling, long-gone small spenders
    planted = [(5.0, 2000.0), (60.0, 300.0), (400.0, 40.0)]
    rows = [(f"g{g}_{i:02d}", rec * (1 + (i % 5) * 0.03), spend * (1 + (i % 7) * 0.03))
            for g, (rec, spend) in enumerate(planted) for i in range(40)]
    df = spark.createDataFrame(rows, f"{C.CUSTOMER_ID} string, {C.RECENCY_DAYS} double, {C.GROSS_SPEND} double")
    inputs = preprocess.model_inputs([C.RECENCY_DAYS, C.GROSS_SPEND], {})
    params = fit.FitParams(seed=42, n_starts=2, max_iter=20, min_segment_share=0.05, selection_sample_rows=100_000,
                           rows_per_partition=250_000, pca_components=0, k=0, algorithm="", k_range=(2, 5),
                           algorithms=("kmeans", "bisecting_kmeans"))
    fitted = fit.fit(df, len(rows), inputs, {}, params, dt.date(2024, 6, 30), "run-x", 3)
    try:
        assert fitted.chosen is not None and fitted.chosen.k == 3 and fitted.model is not None
        assert len(fitted.candidates) == 8 and sum(c.chosen for c in fitted.candidates) == 1
        seg = {r[C.CUSTOMER_ID]: r[C.SEGMENT_ID] for r in fitted.segments.collect()}  # type: ignore[union-attr]
        for g in range(3):  # segment 0 spends most
            assert {seg[f"g{g}_{i:02d}"] for i in range(40)} == {g}
        assert fitted.sizes == [40, 40, 40]
        meta = fitted.model.meta
        assert (meta.k, meta.features_version, meta.as_of_date) == (3, 3, "2024-06-30")
        # a KMeans centre is its members' mean in model units (log1p), mapped back with expm1
        for g, centre in enumerate(meta.centroids_original):
            recs = [r[1] for r in rows if r[0].startswith(f"g{g}_")]
            spends = [r[2] for r in rows if r[0].startswith(f"g{g}_")]
            assert centre[C.RECENCY_DAYS] == pytest.approx(math.expm1(sum(map(math.log1p, recs)) / 40), rel=1e-6)
            assert centre[C.GROSS_SPEND] == pytest.approx(math.expm1(sum(map(math.log1p, spends)) / 40), rel=1e-6)
    finally:
        fitted.release()


def _scored(k: int, sil: float | None, eligible: bool = True) -> select.Candidate:
    return select.Candidate("kmeans", k, silhouette=sil, eligible=eligible)


def test_contenders_are_the_candidates_near_the_best_eligible_silhouette() -> None:
    cands = [_scored(2, 0.50), _scored(3, 0.70), _scored(4, 0.66), _scored(5, 0.649), _scored(6, 0.80, eligible=False),
             _scored(7, None, eligible=False)]
    # the bar is the best *eligible* silhouette (0.70) less the margin: 0.65; an ineligible 0.80 is above it
    assert select.contenders(cands, 0.05) == [1, 2, 4]
    assert select.contenders(cands, 0.0) == [1, 4]
    assert select.contenders(cands, 2.0) == [0, 1, 2, 3, 4]  # every scored candidate: the full search
    # nothing eligible yet: every scored candidate, since another start can make any of them eligible
    assert select.contenders([_scored(2, 0.3, False), _scored(3, 0.5, False), _scored(4, None, False)], 0.1) == [0, 1]
    assert select.contenders([_scored(2, None, False)], 0.1) == []


def _selection_matrix(spark):  # type: ignore[no-untyped-def]
    specs = preprocess.model_inputs([C.RECENCY_DAYS, C.N_TRANSACTIONS, C.RETURN_RATE, C.GAP_MEAN_DAYS], {})
    laid_out = _planted_features(spark, 600).transform(preprocess.with_canonical_layout(2))
    prep = preprocess.preprocessing_pipeline(specs).fit(laid_out)
    return prep.transform(laid_out).select(C.CUSTOMER_ID, C.SCALED_VECTOR).cache()


def _row(c: select.Candidate) -> tuple:  # type: ignore[type-arg]
    return (c.algorithm, c.k, c.seed, c.cost, c.silhouette, c.cluster_sizes, c.starts, c.max_iter, c.eligible)


def test_search_gives_the_same_candidates_whatever_the_parallelism(spark) -> None:  # type: ignore[no-untyped-def]
    matrix = _selection_matrix(spark)
    grid = [("kmeans", 2), ("kmeans", 3), ("kmeans", 5), ("bisecting_kmeans", 3), ("bisecting_kmeans", 4)]
    try:
        runs = {}
        for parallelism in (1, 3):
            search = select.Search((42, 43, 44), 20, 5, 0.0, 0.05, parallelism)
            cands, models_ = select.search(matrix, grid, 600, C.SCALED_VECTOR, search)
            runs[parallelism] = [_row(c) for c in cands]
            assert set(models_) == set(grid)
        # the full search (every candidate gets every start) is the old path, candidate by candidate
        full, _ = select.search(matrix, grid, 600, C.SCALED_VECTOR, select.Search((42, 43, 44), 20, 5, 0.0, 2.0, 3))
        one_by_one = [select.fit_and_score(a, k, matrix, C.SCALED_VECTOR, [42, 43, 44], 5 if a != "kmeans" else 20,
                                           0.0)[1] for a, k in grid]
    finally:
        matrix.unpersist()
    assert runs[1] == runs[3]
    rows = runs[1]
    assert [r[7] for r in rows] == [20, 20, 20, 5, 5]  # BisectingKMeans selects with its fewer iterations
    assert {r[6] for r in rows} == {1, 3}  # only the contenders got the other starts
    assert [_row(c) for c in full] == [_row(c) for c in one_by_one]
    assert all(r[6] == 3 for r in map(_row, full))


def test_parallel_raises_the_first_failure_and_runs_nothing_after_it(spark) -> None:  # type: ignore[no-untyped-def]
    import time

    ran: list[int] = []

    def ok(i: int) -> None:
        time.sleep(0.2)
        ran.append(i)

    def boom() -> None:
        raise ValueError("candidate failed")

    with pytest.raises(ValueError, match="candidate failed"):
        select.parallel(spark, [boom, *[lambda i=i: ok(i) for i in range(20)]], 2)
    # at most the tasks already running beside the failure (one per worker) finish; the queued ones never start
    assert len(ran) <= 2
