"""Segment, preprocessing: from customer features to the scaled matrix that is clustered.

- One MLlib Pipeline (SQLTransformer -> Imputer -> VectorAssembler -> StandardScaler [-> PCA]): signed
  log1p on skewed money and count features, NaN/infinity turned into nulls, nulls imputed with the
  median, scaled to unit variance. The transforms and their inverses are the model bundle's
  (`custseg.io.models`).
- The scaler does not centre the data. Distances, KMeans and the silhouette do not change under a
  translation, but MLlib's BisectingKMeans does: it splits a cluster from its centre plus and minus
  noise of 1e-4 times the centre's norm, and the centre of centred data is the zero vector up to
  rounding (norm ~1e-16). Its first split was then decided by rounding residue: a 1e-15 relative change
  of one feature changed every BisectingKMeans candidate, which is why local mode and a cluster (whose
  features differ in the last bits, from sums in another order) chose differently.
- The clustering input is laid out canonically (hash-partitioned by customer, sorted), so that the
  same data gives the same model in local mode and on a cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyspark.ml import Pipeline
from pyspark.ml.feature import PCA, Imputer, SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.io.models import IDENTITY, SIGNED_LOG1P, ModelInput

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
PCA_COL = "pca_features"


def model_inputs(requested: Sequence[str], map_keys: dict[str, list[str]]) -> list[ModelInput]:
    """Expand the requested features (map columns into one input per key, `map.key` for one key)."""
    inputs: list[ModelInput] = []
    for item in requested:
        column, _, key = item.partition(".")
        if column in MAP_FEATURES:
            for k in ([key] if key else map_keys.get(column, [])):
                inputs.append(ModelInput(f"{column}.{k}", column, k, IDENTITY))
        else:
            inputs.append(ModelInput(column, column, None, SIGNED_LOG1P if column in LOG_FEATURES else IDENTITY))
    return inputs


def non_finite_counts(inputs: Sequence[ModelInput]) -> list[Column]:
    """Aggregates: per input, the rows whose raw value is NaN or infinite, and its standard deviation."""
    out: list[Column] = []
    for i in inputs:
        raw = F.expr(i.sql)
        out.append(F.count_if(F.isnan(raw) | (F.abs(raw) == float("inf"))).alias(f"nonfinite__{i.model_col}"))
        out.append(F.stddev_pop(F.expr(i.model_sql)).alias(f"std__{i.model_col}"))
    return out


def preprocessing_pipeline(inputs: Sequence[ModelInput], pca_components: int = 0) -> Pipeline:
    """The MLlib Pipeline from features-table columns to the scaled vector that is clustered."""
    select = ", ".join(f"{i.model_sql} AS {i.model_col}" for i in inputs)
    stages: list[Any] = [
        SQLTransformer(statement=f"SELECT *, {select} FROM __THIS__"),
        Imputer(strategy="median", inputCols=[i.model_col for i in inputs], outputCols=[i.imputed_col for i in inputs]),
        VectorAssembler(inputCols=[i.imputed_col for i in inputs], outputCol=C.FEATURES_VECTOR),
        StandardScaler(inputCol=C.FEATURES_VECTOR, outputCol=C.SCALED_VECTOR, withMean=False, withStd=True),
    ]
    if pca_components:
        stages.append(PCA(k=pca_components, inputCol=C.SCALED_VECTOR, outputCol=PCA_COL))
    return Pipeline(stages=stages)


def clustering_column(pca_components: int) -> str:
    """The vector column the clusterer reads."""
    return PCA_COL if pca_components else C.SCALED_VECTOR


# --- the clustering input's layout ------------------------------------------------------------------

MIN_MATRIX_PARTITIONS = 1


def matrix_partitions(rows: int, rows_per_partition: int) -> int:
    """Partitions of the clustering input: from its size only, never from the cluster's cores.

    MLlib runs one task per partition per iteration, so a few well-filled partitions are fastest (and a
    sample of up to `rows_per_partition` rows is one task per job: model selection runs candidates from
    several threads instead; on the built-in sample the selection took 27.7 s in one partition against
    33.3 s in two); the count must not follow `defaultParallelism`, or the same data would be split (and
    sampled, and summed) differently in local mode and on a cluster.
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
