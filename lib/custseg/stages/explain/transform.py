"""Explain, the distributed part: the population's statistics that naming and the distinguishing features need
(quintile cuts of the scored features, every profiled feature's standard deviation), in one aggregation, and the
surrogate tree's training frame. Everything else the stage does works on the profile's k + 1 rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

QUINTILES = (0.2, 0.4, 0.6, 0.8)
QUANTILE_ACCURACY = 10_000


def feature_value(name: str) -> Column:
    """A profiled feature by its profile name: a column (`total_spend`) or a share-map key
    (`category_spend_share.electronics`, null when the customer has no such key), as a double."""
    column, _, key = name.partition(".")
    value = F.col(column)[key] if key else F.col(column)
    return value.cast("double")


def population_stats(features_df: DataFrame, features: Sequence[str], scored: Sequence[str]) -> DataFrame:
    """One row: `std_<i>` the standard deviation of features[i], `cuts_<j>` the quintile cuts of scored[j]."""
    aggs = [F.stddev(feature_value(f)).alias(f"std_{i}") for i, f in enumerate(features)]
    aggs += [F.percentile_approx(feature_value(f), list(QUINTILES), QUANTILE_ACCURACY).alias(f"cuts_{j}")
             for j, f in enumerate(scored)]
    return features_df.agg(*aggs)
