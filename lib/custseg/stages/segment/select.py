"""Segment, model selection: candidates fitted and scored through one path, and the rule that chooses.

- KMeans and BisectingKMeans are compared over a k range through one `fit_and_score` path: several
  seeded starts per candidate, the lowest within-cluster cost kept, scored by silhouette
  (ClusteringEvaluator, squared Euclidean) with its cluster sizes.
- The rule (`choose`): among candidates whose smallest segment holds at least `min_segment_share` of
  the customers, the highest silhouette; ties go to the smaller k. When none qualifies, the highest
  silhouette overall, with the outcome recorded.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import DataFrame

from custseg.io.models import PREDICTION

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One (algorithm, k) tried in model selection, with what it scored."""

    algorithm: str
    k: int
    seed: int | None = None
    cost: float | None = None
    silhouette: float | None = None
    cluster_sizes: list[int] = field(default_factory=list)
    n_clusters: int = 0
    min_share: float | None = None
    fit_seconds: float = 0.0
    starts: int = 0
    eligible: bool = False
    chosen: bool = False
    outcome: str = "ok"

    def row(self) -> dict[str, Any]:
        return asdict(self)


COST_TIE_TOLERANCE = 1e-9  # relative: costs closer than this are the same optimum


def make_estimator(algorithm: str, k: int, seed: int, max_iter: int, features_col: str, solver: str = "block") -> Any:
    """KMeans or BisectingKMeans, configured by keyword, seed always set."""
    if algorithm == "kmeans":
        # k-means|| initialisation (MLlib's default) and the block solver, which "auto" does not pick for
        # this dense, low-dimensional matrix: at 185k customers 0.25 s per iteration, against 0.48 s with
        # solver "row" and 0.85 s with "auto" (docs/BENCHMARKS.md)
        return KMeans(k=k, seed=seed, maxIter=max_iter, solver=solver, featuresCol=features_col,
                      predictionCol=PREDICTION)
    if algorithm == "bisecting_kmeans":
        return BisectingKMeans(k=k, seed=seed, maxIter=max_iter, featuresCol=features_col, predictionCol=PREDICTION)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def _fit(algorithm: str, k: int, seed: int, max_iter: int, features_col: str, df: DataFrame) -> Any:
    """Fit one start. MLlib's block solver fails (an index error in KMeansAggregator) when the k-means||
    initialisation finds fewer than k distinct centres, as on data with fewer distinct points than k; that
    start is then fitted with the row solver, which handles it."""
    try:
        return make_estimator(algorithm, k, seed, max_iter, features_col).fit(df)
    except Exception as e:  # py4j's Java error: matched by the failing class, re-raised otherwise
        if algorithm != "kmeans" or "KMeansAggregator" not in str(e):
            raise
        log.warning("segment: kmeans k=%d seed %d: the block solver failed on this data (fewer distinct points "
                    "than k?); fitting with solver=row", k, seed)
        return make_estimator(algorithm, k, seed, max_iter, features_col, solver="row").fit(df)


def fit_and_score(
    algorithm: str, k: int, df: DataFrame, features_col: str, seeds: Sequence[int], max_iter: int,
    min_segment_share: float,
) -> tuple[Any, Candidate]:
    """Fit one candidate from several seeded starts, keep the lowest cost, and score it.

    The same path serves KMeans and BisectingKMeans: same input, same evaluator, same metrics. `df`
    should be cached by the caller (it is read once per start and once for the silhouette).
    """
    cand = Candidate(algorithm, k)
    t0 = time.perf_counter()
    best = None
    for seed in seeds:
        model = _fit(algorithm, k, seed, max_iter, features_col, df)
        cost = float(model.summary.trainingCost)
        cand.starts += 1
        # starts that reach the same optimum differ in cost only by the order of floating-point sums, which
        # follows the partitioning: such ties keep the earlier seed, so local mode and a cluster agree
        if best is None or cost < best[1] - COST_TIE_TOLERANCE * abs(best[1]):
            best = (model, cost, seed)
    assert best is not None
    model, cand.cost, cand.seed = best
    cand.cluster_sizes = [int(s) for s in model.summary.clusterSizes]
    produced = [s for s in cand.cluster_sizes if s > 0]
    cand.n_clusters = len(produced)
    total = sum(produced)
    cand.min_share = (min(produced) / total) if total else None
    if cand.n_clusters < 2:
        cand.outcome = "degenerate: a single cluster"
    else:
        evaluator = ClusteringEvaluator(featuresCol=features_col, predictionCol=PREDICTION,
                                        metricName="silhouette", distanceMeasure="squaredEuclidean")
        sil = float(evaluator.evaluate(model.transform(df)))
        cand.silhouette = sil if math.isfinite(sil) else None
        if cand.silhouette is None:
            cand.outcome = "degenerate: silhouette not finite"
        elif cand.n_clusters < k:
            cand.outcome = f"fewer clusters than k ({cand.n_clusters})"
    cand.eligible = (
        cand.silhouette is not None and cand.min_share is not None and cand.min_share >= min_segment_share
        and cand.n_clusters == k
    )
    if cand.silhouette is not None and not cand.eligible and cand.outcome == "ok":
        cand.outcome = f"smallest segment {cand.min_share:.3%} below {min_segment_share:.1%}"
    cand.fit_seconds = round(time.perf_counter() - t0, 3)
    return model, cand


def choose(candidates: Sequence[Candidate]) -> tuple[Candidate | None, str]:
    """The selection rule: highest silhouette among eligible candidates (ties: smaller k, then kmeans).

    Falls back to the highest silhouette among all scored candidates, saying so.
    """
    def key(c: Candidate) -> tuple[float, int, str]:
        return (-(c.silhouette or -2.0), c.k, c.algorithm)

    eligible = sorted((c for c in candidates if c.eligible), key=key)
    if eligible:
        return eligible[0], "highest silhouette among candidates meeting the minimum segment size"
    scored = sorted((c for c in candidates if c.silhouette is not None), key=key)
    if scored:
        return scored[0], "no candidate met the minimum segment size: highest silhouette overall"
    return None, "no candidate produced two or more clusters"


def adjusted_rand_index(contingency: Sequence[tuple[Any, Any, int]]) -> float:
    """ARI of two labelings from their contingency counts [(label_a, label_b, n), ...] (k x g rows)."""
    def comb2(n: float) -> float:
        return n * (n - 1) / 2.0

    a_tot: dict[Any, int] = {}
    b_tot: dict[Any, int] = {}
    n = 0
    sum_cells = 0.0
    for a, b, c in contingency:
        a_tot[a] = a_tot.get(a, 0) + c
        b_tot[b] = b_tot.get(b, 0) + c
        n += c
        sum_cells += comb2(c)
    sum_a = sum(comb2(v) for v in a_tot.values())
    sum_b = sum(comb2(v) for v in b_tot.values())
    expected = sum_a * sum_b / comb2(n) if n > 1 else 0.0
    max_index = (sum_a + sum_b) / 2.0
    if max_index == expected:
        return 1.0
    return (sum_cells - expected) / (max_index - expected)
