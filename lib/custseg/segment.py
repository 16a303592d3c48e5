"""Segment: preprocess customer features, choose a clustering model, assign every customer a segment.

- Preprocessing is one MLlib Pipeline (SQLTransformer -> Imputer -> VectorAssembler -> StandardScaler
  [-> PCA]) fitted on the features: signed log1p on skewed money and count features, NaN/infinity
  turned into nulls, nulls imputed with the median, standardised.
- Model selection compares KMeans and BisectingKMeans over a k range through one `fit_and_score`
  path: several seeded starts per candidate, the lowest within-cluster cost kept, scored by silhouette
  (ClusteringEvaluator, squared Euclidean) with its cluster sizes.
- The rule (`choose`): among candidates whose smallest segment holds at least `min_segment_share` of
  the customers, the highest silhouette; ties go to the smaller k. When none qualifies, the highest
  silhouette overall, with the outcome recorded.
- Segment ids are ordered by the segment's mean (scaled) gross spend, highest first, so that id 0 is
  the most valuable segment in every run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import BisectingKMeans, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import PCA, Imputer, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg import columns as C

log = logging.getLogger(__name__)

# The default clustering inputs: recency, tenure, frequency, monetary, rhythm and returns.
# Spend shares per category and channel are left out by default: a customer with one or two purchases
# has shares of exactly 0 or 1, so one-purchase customers split into tight clusters by the channel they
# happened to use, and ten category shares outweigh everything else in the distance. Add
# `channel_spend_share` / `category_spend_share` (or one key, `channel_spend_share.online`) to
# segment.features to cluster on them; the profiles report them either way.
DEFAULT_FEATURES: tuple[str, ...] = (
    C.RECENCY_DAYS,
    C.TENURE_DAYS,
    C.N_TRANSACTIONS,
    C.GROSS_SPEND,
    C.AVG_GROSS_PER_TRANSACTION,
    C.GAP_MEAN_DAYS,
    C.RETURN_RATE,
    C.RETURNED_SHARE,
)

# Heavy-tailed features, compressed with sign(x) * log1p(|x|) before scaling.
LOG_FEATURES: frozenset[str] = frozenset({
    C.RECENCY_DAYS, C.TENURE_DAYS, C.AGE_AT_LAST_PURCHASE_DAYS, C.N_TRANSACTIONS, C.N_PURCHASE_TRANSACTIONS,
    C.N_RETURN_TRANSACTIONS, C.N_LINES, C.N_PURCHASE_DAYS, C.REPEAT_FREQUENCY, C.TOTAL_SPEND, C.GROSS_SPEND,
    C.RETURNED_VALUE, C.AVG_SPEND_PER_TRANSACTION, C.AVG_GROSS_PER_TRANSACTION, C.AVG_SPEND_PER_DAY,
    C.AVG_GROSS_PER_DAY, C.GAP_MEAN_DAYS, C.GAP_STD_DAYS, C.SPEND_PREV_90D, C.TREND_RATIO_90D,
})
MAP_FEATURES: frozenset[str] = frozenset({C.CATEGORY_SPEND_SHARE, C.CHANNEL_SPEND_SHARE})

PREDICTION = "prediction"
_IMPUTED_SUFFIX = "__imp"


class SegmentationError(RuntimeError):
    """Segmentation cannot produce a meaningful model (too few customers, nothing to cluster on)."""


MODEL_INPUT_PREFIX = "in__"


@dataclass(frozen=True)
class FeatureSpec:
    """One clustering input: its name (a column, or `map.key`), the SQL computing it from the features."""

    name: str
    source: str  # features-table column
    sql: str
    logged: bool

    @property
    def model_col(self) -> str:
        """The input's column inside the model (prefixed, so the original column stays available)."""
        return MODEL_INPUT_PREFIX + _safe_name(self.name)


def feature_name(model_col: str) -> str:
    """Inverse of FeatureSpec.model_col for plain columns; map inputs keep their safe name."""
    return model_col.removeprefix(MODEL_INPUT_PREFIX)


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower())


def feature_specs(requested: Sequence[str], map_keys: dict[str, list[str]]) -> list[FeatureSpec]:
    """Expand the requested features (map columns into one input per key, `map.key` for one key)."""
    specs: list[FeatureSpec] = []
    for item in requested:
        column, _, key = item.partition(".")
        if column in MAP_FEATURES:
            keys = [key] if key else map_keys.get(column, [])
            for k in keys:
                lit = k.replace("'", "''")
                specs.append(FeatureSpec(f"{column}.{k}", column, f"{column}['{lit}']", False))
        else:
            specs.append(FeatureSpec(column, column, f"CAST({column} AS DOUBLE)", column in LOG_FEATURES))
    return specs


def _finite_sql(expr: str, logged: bool) -> str:
    """NaN and infinities become null (then imputed) instead of poisoning the scaler and the distances."""
    x = f"SIGN({expr}) * LN(1 + ABS({expr}))" if logged else expr
    return f"CASE WHEN isnan({x}) OR ABS({x}) = double('inf') THEN NULL ELSE {x} END"


def non_finite_counts(df: DataFrame, specs: Sequence[FeatureSpec]) -> list[Column]:
    """Aggregates: per input, the rows whose raw value is NaN or infinite, and its standard deviation."""
    out: list[Column] = []
    for s in specs:
        raw = F.expr(s.sql)
        out.append(F.count_if(F.isnan(raw) | (F.abs(raw) == float("inf"))).alias(f"nonfinite__{s.model_col}"))
        out.append(F.stddev_pop(F.expr(_finite_sql(s.sql, s.logged))).alias(f"std__{s.model_col}"))
    return out


def preprocessing_pipeline(specs: Sequence[FeatureSpec], pca_components: int = 0) -> Pipeline:
    """The MLlib Pipeline from features-table columns to the scaled vector that is clustered."""
    names = [s.model_col for s in specs]
    select = ", ".join(f"{_finite_sql(s.sql, s.logged)} AS {s.model_col}" for s in specs)
    stages: list[Any] = [
        SQLTransformer(statement=f"SELECT *, {select} FROM __THIS__"),
        Imputer(strategy="median", inputCols=names, outputCols=[n + _IMPUTED_SUFFIX for n in names]),
        VectorAssembler(inputCols=[n + _IMPUTED_SUFFIX for n in names], outputCol=C.FEATURES_VECTOR),
        StandardScaler(inputCol=C.FEATURES_VECTOR, outputCol=C.SCALED_VECTOR, withMean=True, withStd=True),
    ]
    if pca_components:
        stages.append(PCA(k=pca_components, inputCol=C.SCALED_VECTOR, outputCol="pca_features"))
    return Pipeline(stages=stages)


def clustering_column(pca_components: int) -> str:
    return "pca_features" if pca_components else C.SCALED_VECTOR


# --- the clustering input's layout ------------------------------------------------------------------

MIN_MATRIX_PARTITIONS = 2


def matrix_partitions(rows: int, rows_per_partition: int) -> int:
    """Partitions of the clustering input: from its size only, never from the cluster's cores.

    MLlib runs one task per partition per iteration, so a few well-filled partitions are fastest; the
    count must not follow `defaultParallelism`, or the same data would be split (and sampled, and
    summed) differently in local mode and on a cluster.
    """
    return max(MIN_MATRIX_PARTITIONS, -(-rows // rows_per_partition))


def with_canonical_layout(n_partitions: int) -> Callable[[DataFrame], DataFrame]:
    """The same rows in the same partitions in the same order, wherever it runs and however it was read.

    Rows go to a partition by a hash of the customer id (Murmur3, the same on every JVM) and are sorted
    by customer id within it. MLlib's per-partition work (k-means|| initialisation, BisectingKMeans'
    splits, the seeded sample, the order of floating-point sums) then sees identical input in local
    mode and on a cluster, whatever the file layout of the features table or the shuffle fetch order.
    """
    def transform(df: DataFrame) -> DataFrame:
        return df.repartition(n_partitions, F.col(C.CUSTOMER_ID)).sortWithinPartitions(C.CUSTOMER_ID)

    return transform


def selection_sample(matrix: DataFrame, rows: int, sample_rows: int, seed: int,
                     rows_per_partition: int) -> DataFrame:
    """A seeded sample of about `sample_rows` of the `rows` customers, in its own canonical layout.

    Drawn per partition from the canonical matrix (Spark seeds each partition's sampler with the seed
    and the partition's index), then laid out again: coalescing instead would group the matrix's cached
    partitions by the executor holding them, which differs between runs on a cluster.
    """
    fraction = min(1.0, sample_rows / rows)
    return matrix.sample(False, fraction, seed).transform(
        with_canonical_layout(matrix_partitions(sample_rows, rows_per_partition)))


# --- model selection ------------------------------------------------------------------------------

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


# --- assignment -----------------------------------------------------------------------------------

def with_segment_and_distance(
    centers: Sequence[Sequence[float]], relabel: Sequence[int], features_col: str
) -> Callable[[DataFrame], DataFrame]:
    """Map MLlib's prediction to the ordered segment id and add the Euclidean distance to its centre.

    Built-in array functions only: the k centres travel as a literal array, not a Python UDF.
    """
    centre_array = F.array(*[F.array(*[F.lit(float(x)) for x in c]) for c in centers])
    relabel_array = F.array(*[F.lit(int(i)) for i in relabel])

    def transform(df: DataFrame) -> DataFrame:
        vec = vector_to_array(F.col(features_col))  # a JVM function: no Python worker involved
        cluster = F.col(PREDICTION).cast("int") + 1
        centre = F.element_at(centre_array, cluster)
        sq = F.aggregate(F.zip_with(vec, centre, lambda a, b: (a - b) * (a - b)), F.lit(0.0), lambda acc, x: acc + x)
        return df.select(
            F.col(C.CUSTOMER_ID),
            F.element_at(relabel_array, cluster).alias(C.SEGMENT_ID),
            F.sqrt(sq).alias(C.DISTANCE),
        )

    return transform


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
