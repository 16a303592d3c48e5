"""Profile: describe each segment, and the whole population as a baseline, in the features' own units.

Per segment: customers and their share, revenue (net spend) and its share, the mean and median of every
numeric feature, each mean's lift against the population mean, and the segment centre in original
units. The centre is the mean of the members in the model's (log-compressed, imputed) space mapped
back through the inverse transform: for a model without PCA this is exactly the clustering centroid.
The population row has segment_id -1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.core import columns as C

POPULATION_SEGMENT = -1
MEDIAN_ACCURACY = 10_000

NON_PROFILE_COLUMNS = frozenset({C.AS_OF_DATE, C.CUSTOMER_ID, C.FIRST_PURCHASE_DATE, C.LAST_PURCHASE_DATE,
                                 C.SEGMENT_ID, C.DISTANCE, C.RUN_ID, C.MODEL_RUN_ID,
                                 C.ASSIGNMENT})


def profile_columns(features_df: DataFrame, map_keys: dict[str, list[str]]) -> list[tuple[str, Column]]:
    """(name, expression) for every numeric feature, with each share-map key as its own feature."""
    out: list[tuple[str, Column]] = []
    for f in features_df.schema.fields:
        if f.name in NON_PROFILE_COLUMNS:
            continue
        type_name = f.dataType.typeName()
        if type_name in ("integer", "long", "double", "float", "short", "decimal"):
            out.append((f.name, F.col(f.name).cast("double")))
        elif type_name == "map":
            for key in map_keys.get(f.name, []):
                out.append((f"{f.name}.{key}", F.col(f.name)[key]))
    return out


def segment_profiles(
    profile_cols: Sequence[tuple[str, Column]],
    centre_cols: Sequence[tuple[str, str, Callable[[Column], Column]]],
    run_id: str,
) -> Callable[[DataFrame], DataFrame]:
    """Segments joined to features -> one profile row per segment plus the population row.

    `centre_cols` are (feature name, model-units column, inverse transform) for the model's inputs.
    One aggregation (a rollup over segment_id) computes segments and population together.
    """

    def transform(df: DataFrame) -> DataFrame:
        aggs = [F.count(F.lit(1)).alias("customers"), F.sum(C.TOTAL_SPEND).alias("revenue")]
        for i, (_, expr) in enumerate(profile_cols):
            aggs.append(F.avg(expr).alias(f"mean_{i}"))
            aggs.append(F.percentile_approx(expr, 0.5, MEDIAN_ACCURACY).cast("double").alias(f"median_{i}"))
        for i, (_, col, _) in enumerate(centre_cols):
            aggs.append(F.avg(col).alias(f"centre_{i}"))
        rolled = df.rollup(C.SEGMENT_ID).agg(*aggs).withColumn(
            C.SEGMENT_ID, F.coalesce(F.col(C.SEGMENT_ID), F.lit(POPULATION_SEGMENT)))
        pop = rolled.filter(F.col(C.SEGMENT_ID) == POPULATION_SEGMENT).select(
            F.col("customers").alias("pop_customers"), F.col("revenue").alias("pop_revenue"),
            *[F.col(f"mean_{i}").alias(f"pop_mean_{i}") for i in range(len(profile_cols))])
        names = [F.lit(n) for n, _ in profile_cols]

        def as_map(values: list[Column]) -> Column:
            return F.map_from_arrays(F.array(*names), F.array(*values)) if values else \
                F.create_map().cast("map<string,double>")

        lifts = [F.when(F.col(f"pop_mean_{i}") != 0, F.col(f"mean_{i}") / F.col(f"pop_mean_{i}"))
                 for i in range(len(profile_cols))]
        centres = [inverse(F.col(f"centre_{i}")) for i, (_, _, inverse) in enumerate(centre_cols)]
        centre_map = F.map_from_arrays(F.array(*[F.lit(n) for n, _, _ in centre_cols]), F.array(*centres)) \
            if centre_cols else F.create_map().cast("map<string,double>")
        return rolled.crossJoin(pop).select(
            F.col(C.SEGMENT_ID).cast("int").alias(C.SEGMENT_ID),
            (F.col(C.SEGMENT_ID) == POPULATION_SEGMENT).alias("is_population"),
            F.col("customers").cast("long").alias("customers"),
            (F.col("customers") / F.col("pop_customers")).alias("customer_share"),
            F.col("revenue"),
            F.when(F.col("pop_revenue") != 0, F.col("revenue") / F.col("pop_revenue")).alias("revenue_share"),
            as_map([F.col(f"mean_{i}") for i in range(len(profile_cols))]).alias("feature_mean"),
            as_map([F.col(f"median_{i}") for i in range(len(profile_cols))]).alias("feature_median"),
            as_map(lifts).alias("feature_lift"),
            centre_map.alias("centroid"),
            F.lit(run_id).alias(C.RUN_ID),
        )

    return transform
