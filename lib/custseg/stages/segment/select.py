"""Segment, model selection: candidates fitted and scored through one path, and the rule that chooses.

- KMeans and BisectingKMeans are compared over a k range through one `fit_and_score` path: several
  seeded starts per candidate, the lowest within-cluster cost kept, scored by silhouette
  (ClusteringEvaluator, squared Euclidean), Davies-Bouldin and Calinski-Harabasz (`validity`) with its
  cluster sizes.
- The rule (`choose`): among candidates whose smallest segment holds at least `min_segment_share` of
  the customers, the best value of the selection metric (segment.selection_metric: the highest
  silhouette by default); ties go to the smaller k. When none qualifies, the best value overall, with the
  outcome recorded.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.util import inheritable_thread_target

from custseg.io.models import PREDICTION
from custseg.stages.segment.validity import validity_measures

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One (algorithm, k) tried in model selection, with what it scored."""

    algorithm: str
    k: int
    seed: int | None = None
    cost: float | None = None
    silhouette: float | None = None
    davies_bouldin: float | None = None  # lower is better
    calinski_harabasz: float | None = None  # higher is better
    cluster_sizes: list[int] = field(default_factory=list)
    n_clusters: int = 0
    min_share: float | None = None
    fit_seconds: float = 0.0
    starts: int = 0
    max_iter: int = 0
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
    # MLlib persists its own copy of the input (converted to vectors, validated) only when the DataFrame it is
    # given is not cached, and otherwise converts the cached rows again on every pass: BisectingKMeans makes
    # one pass per iteration at every split. A projection of the cached matrix reads the cache but is not
    # itself cached, so MLlib converts it once per fit (same model: same rows, same order; -25% per fit)
    vectors = df.select(features_col)
    try:
        return make_estimator(algorithm, k, seed, max_iter, features_col).fit(vectors)
    except Exception as e:  # py4j's Java error: matched by the failing class, re-raised otherwise
        if algorithm != "kmeans" or "KMeansAggregator" not in str(e):
            raise
        log.warning("segment: kmeans k=%d seed %d: the block solver failed on this data (fewer distinct points "
                    "than k?); fitting with solver=row", k, seed)
        return make_estimator(algorithm, k, seed, max_iter, features_col, solver="row").fit(vectors)


def _fit_start(algorithm: str, k: int, seed: int, max_iter: int, features_col: str, df: DataFrame) -> tuple[Any, float]:
    model = _fit(algorithm, k, seed, max_iter, features_col, df)
    return model, float(model.summary.trainingCost)


def _better(cost: float, best: float) -> bool:
    """Starts that reach the same optimum differ in cost only by the order of floating-point sums, which
    follows the partitioning: such ties keep the earlier seed, so local mode and a cluster agree."""
    return cost < best - COST_TIE_TOLERANCE * abs(best)


def score(model: Any, cand: Candidate, df: DataFrame, features_col: str, min_segment_share: float) -> None:
    """Fill `cand` from its kept start: cluster sizes, silhouette (ClusteringEvaluator, squared Euclidean),
    Davies-Bouldin and Calinski-Harabasz (`validity_measures`), eligibility and outcome. All three read the
    same predictions of `df`."""
    cand.cluster_sizes = [int(s) for s in model.summary.clusterSizes]
    produced = [s for s in cand.cluster_sizes if s > 0]
    cand.n_clusters = len(produced)
    total = sum(produced)
    cand.min_share = (min(produced) / total) if total else None
    cand.silhouette, cand.davies_bouldin, cand.calinski_harabasz, cand.outcome = None, None, None, "ok"
    if cand.n_clusters < 2:
        cand.outcome = "degenerate: a single cluster"
    else:
        predicted = model.transform(df)
        evaluator = ClusteringEvaluator(featuresCol=features_col, predictionCol=PREDICTION,
                                        metricName="silhouette", distanceMeasure="squaredEuclidean")
        sil = float(evaluator.evaluate(predicted))
        cand.silhouette = sil if math.isfinite(sil) else None
        cand.davies_bouldin, cand.calinski_harabasz = validity_measures(predicted, features_col,
                                                                        model.clusterCenters())
        if cand.silhouette is None:
            cand.outcome = "degenerate: silhouette not finite"
        elif cand.n_clusters < cand.k:
            cand.outcome = f"fewer clusters than k ({cand.n_clusters})"
    cand.eligible = (
        cand.silhouette is not None and cand.min_share is not None and cand.min_share >= min_segment_share
        and cand.n_clusters == cand.k
    )
    if cand.silhouette is not None and not cand.eligible and cand.outcome == "ok":
        cand.outcome = f"smallest segment {cand.min_share:.3%} below {min_segment_share:.1%}"


def fit_and_score(
    algorithm: str, k: int, df: DataFrame, features_col: str, seeds: Sequence[int], max_iter: int,
    min_segment_share: float,
) -> tuple[Any, Candidate]:
    """Fit one candidate from several seeded starts, keep the lowest cost, and score it.

    The same path serves KMeans and BisectingKMeans: same input, same evaluator, same metrics. `df`
    should be cached by the caller (it is read once per start and once for the silhouette).
    """
    cand = Candidate(algorithm, k, max_iter=max_iter)
    t0 = time.perf_counter()
    best = None
    for seed in seeds:
        model, cost = _fit_start(algorithm, k, seed, max_iter, features_col, df)
        cand.starts += 1
        if best is None or _better(cost, best[1]):
            best = (model, cost, seed)
    assert best is not None
    model, cand.cost, cand.seed = best
    score(model, cand, df, features_col, min_segment_share)
    cand.fit_seconds = round(time.perf_counter() - t0, 3)
    return model, cand


# --- the search: every candidate's first start, then the other starts where they can change the choice ---

@dataclass(frozen=True)
class Search:
    """How model selection spends its fits (segment.* settings)."""

    seeds: tuple[int, ...]  # the starts a candidate can get, in order; the first is every candidate's
    max_iter: int
    bisecting_max_iter: int  # BisectingKMeans' iterations per split during selection
    min_segment_share: float
    restart_margin: float  # candidates this close to the best first-start silhouette get the other starts
    parallelism: int  # fits running at once

    def iterations(self, algorithm: str) -> int:
        return min(self.max_iter, self.bisecting_max_iter) if algorithm == "bisecting_kmeans" else self.max_iter


def contenders(candidates: Sequence[Candidate], margin: float) -> list[int]:
    """Indexes of the candidates that further starts could make the choice: silhouette within `margin` of
    the best eligible candidate's. When no candidate is eligible yet, every scored one: another start can
    make any of them eligible (a segment above the minimum share), which changes the choice outright.

    On the silhouette whatever segment.selection_metric chooses with: the margin is a distance on the
    silhouette's fixed [-1, 1] scale, and Davies-Bouldin and Calinski-Harabasz have no fixed scale to set one
    on (Calinski-Harabasz grows with the number of customers)."""
    eligible = [c.silhouette for c in candidates if c.eligible and c.silhouette is not None]
    bar = max(eligible) - margin if eligible else -math.inf
    return [i for i, c in enumerate(candidates) if c.silhouette is not None and c.silhouette >= bar]


def search(df: DataFrame, grid: Sequence[tuple[str, int]], n_rows: int, features_col: str,
           s: Search) -> tuple[list[Candidate], dict[tuple[str, int], Any]]:
    """Model selection over `grid` on the cached `df` of `n_rows` rows.

    1. Every candidate's first start is fitted and scored (up to `s.parallelism` at once).
    2. The contenders (`contenders`) get the remaining starts; each keeps its lowest-cost start (ties:
       the earlier seed) and is scored again if that start changed.
    Each fit depends only on the data and its seed, never on which thread ran it or when: the same input
    gives the same candidates, and the results are gathered in grid order.
    """
    cands = [Candidate(a, k, max_iter=s.iterations(a)) for a, k in grid]
    models: dict[int, tuple[Any, float]] = {}
    todo = []
    for i, c in enumerate(cands):
        if c.k > n_rows:
            c.outcome = f"skipped: fewer customers ({n_rows}) than k"
            log.warning("segment: %s k=%d skipped: only %d customers", c.algorithm, c.k, n_rows)
        else:
            todo.append(i)

    def first(i: int) -> None:
        c = cands[i]
        t0 = time.perf_counter()
        models[i] = _fit_start(c.algorithm, c.k, s.seeds[0], c.max_iter, features_col, df)
        c.seed, c.cost, c.starts = s.seeds[0], models[i][1], 1
        score(models[i][0], c, df, features_col, s.min_segment_share)
        c.fit_seconds = round(time.perf_counter() - t0, 3)
        _log(c, "first start")

    parallel(df.sparkSession, [partial(first, i) for i in todo], s.parallelism)
    # the restarts follow the silhouette, whatever metric `choose` is given (see `contenders`)
    more = contenders([cands[i] for i in todo], s.restart_margin) if len(s.seeds) > 1 else []
    chosen_few = [todo[j] for j in more]
    extra: dict[tuple[int, int], tuple[Any, float, float]] = {}

    def another(i: int, seed: int) -> None:
        c = cands[i]
        t0 = time.perf_counter()
        model, cost = _fit_start(c.algorithm, c.k, seed, c.max_iter, features_col, df)
        extra[(i, seed)] = (model, cost, time.perf_counter() - t0)

    parallel(df.sparkSession, [partial(another, i, seed) for i in chosen_few for seed in s.seeds[1:]], s.parallelism)
    rescore = []
    for i in chosen_few:
        c = cands[i]
        c.starts = len(s.seeds)
        for seed in s.seeds[1:]:
            model, cost, seconds = extra[(i, seed)]
            c.fit_seconds = round(c.fit_seconds + seconds, 3)
            if _better(cost, models[i][1]):
                models[i], c.seed, c.cost = (model, cost), seed, cost
        if c.seed != s.seeds[0]:
            rescore.append(i)

    def again(i: int) -> None:
        t0 = time.perf_counter()
        score(models[i][0], cands[i], df, features_col, s.min_segment_share)
        cands[i].fit_seconds = round(cands[i].fit_seconds + time.perf_counter() - t0, 3)

    parallel(df.sparkSession, [partial(again, i) for i in rescore], s.parallelism)
    for i in chosen_few:
        _log(cands[i], f"best of {cands[i].starts} starts")
    if chosen_few:
        log.info("segment: %d of %d candidates were within %.3f of the best silhouette and got %d starts",
                 len(chosen_few), len(todo), s.restart_margin, len(s.seeds))
    return cands, {(cands[i].algorithm, cands[i].k): m for i, (m, _) in models.items()}


def _log(c: Candidate, what: str) -> None:
    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    log.info("segment: %-16s k=%-3d silhouette %s DB %s CH %s cost %.1f smallest %s (%s; %s) %.1f s", c.algorithm,
             c.k, fmt(c.silhouette, ".4f"), fmt(c.davies_bouldin, ".4f"), fmt(c.calinski_harabasz, ".1f"),
             c.cost or 0.0,
             f"{c.min_share:.2%}" if c.min_share is not None else "-", c.outcome, what, c.fit_seconds)


def parallel(spark: SparkSession, tasks: Sequence[Callable[[], None]], parallelism: int) -> None:
    """Run `tasks` with at most `parallelism` at once (Spark schedules jobs from several threads). The first
    failure cancels the rest (their Spark jobs too) and is raised.

    Spark's default FIFO scheduler is kept: on the sample, FAIR pools per thread gave the same selection time
    (32.3 s FAIR, 33.6 s FIFO, one run each), and undeclared pools log a warning per pool."""
    if parallelism <= 1 or len(tasks) <= 1:
        for task in tasks:
            task()
        return
    sc = spark.sparkContext
    group = f"custseg-selection-{uuid.uuid4().hex[:12]}"

    def run(task: Callable[[], None]) -> None:
        sc.setJobGroup(group, "custseg model selection", interruptOnCancel=True)
        task()

    wrap = inheritable_thread_target(spark)
    pool = ThreadPoolExecutor(max_workers=parallelism, thread_name_prefix="custseg-selection")
    futures = [pool.submit(wrap(run), task) for task in tasks]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in futures:
            exc = f.exception() if f in done else None
            if exc is not None:
                raise exc
    except BaseException:
        for f in futures:
            f.cancel()
        sc.cancelJobGroup(group)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# segment.selection_metric (core.keys.SELECTION_METRICS): whether a higher value is better, and its name in the rule
METRIC_DIRECTIONS: dict[str, tuple[bool, str]] = {
    "silhouette": (True, "silhouette"),
    "davies_bouldin": (False, "Davies-Bouldin index"),
    "calinski_harabasz": (True, "Calinski-Harabasz index"),
}


def choose(candidates: Sequence[Candidate], metric: str = "silhouette") -> tuple[Candidate | None, str]:
    """The selection rule: the best `metric` (segment.selection_metric) among eligible candidates: the
    highest silhouette (the default), the lowest Davies-Bouldin or the highest Calinski-Harabasz; ties:
    smaller k, then algorithm name. A candidate with no value of the metric ranks after those with one.

    Falls back to the best among all scored candidates (a finite silhouette), saying so.
    """
    if metric not in METRIC_DIRECTIONS:
        raise ValueError(f"unknown selection metric {metric!r}: one of {', '.join(METRIC_DIRECTIONS)}")
    higher, name = METRIC_DIRECTIONS[metric]

    def key(c: Candidate) -> tuple[bool, float, int, str]:
        if metric == "silhouette":
            return False, -(c.silhouette or -2.0), c.k, c.algorithm  # the rule as it was before the other metrics
        v = getattr(c, metric)
        return v is None, 0.0 if v is None else (-v if higher else v), c.k, c.algorithm

    best = f"{'highest' if higher else 'lowest'} {name}"
    eligible = sorted((c for c in candidates if c.eligible), key=key)
    if eligible:
        return eligible[0], f"{best} among candidates meeting the minimum segment size"
    scored = sorted((c for c in candidates if c.silhouette is not None), key=key)
    if scored:
        return scored[0], f"no candidate met the minimum segment size: {best} overall"
    return None, "no candidate produced two or more clusters"
