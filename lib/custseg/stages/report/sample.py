"""The report's customer-level queries, each reduced in Spark to a bounded result before it reaches the driver:
quantiles of the key features per segment (k + 1 rows), and a stratified sample of at most `report.map_points`
customers in the model's clustered space, projected on two principal components.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.errors import StageError
from custseg.io import models

POPULATION = C.POPULATION_SEGMENT_ID
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_ACCURACY = 10_000
NUMERIC = ("integer", "long", "double", "float", "short", "decimal", "byte")


def feature_columns(features_df: DataFrame, names: Sequence[str], configured: bool) -> tuple[list[tuple[str, Column]],
                                                                                               list[str]]:
    """(name, expression) for each named numeric feature (`column` or a share map's `column.key`), and the names
    that are not one. A configured name (`report.features`) that is no column of customer_features is an error."""
    types = {f.name: f.dataType.typeName() for f in features_df.schema.fields}
    out: list[tuple[str, Column]] = []
    skipped: list[str] = []
    for name in names:
        column, _, key = name.partition(".")
        if key and types.get(column) == "map":
            out.append((name, F.col(column)[key].cast("double")))
        elif not key and types.get(name) in NUMERIC:
            out.append((name, F.col(name).cast("double")))
        elif configured and column not in types:
            raise StageError(f"report.features: {name!r} is not a column of customer_features")
        else:
            skipped.append(name)
    return out, skipped


@dataclass
class Distribution:
    """One feature's quantiles per segment (and the population, -1): p05, q1, median, q3, p95, mean, count."""

    feature: str
    stats: dict[int, dict[str, float | None]]


def distributions(segments_df: DataFrame, features_df: DataFrame,
                  columns: Sequence[tuple[str, Column]]) -> list[Distribution]:
    """Quantiles of each feature per segment and for everyone, in one aggregation (a rollup: k + 1 rows)."""
    if not columns:
        return []
    aggs = [F.count(F.lit(1)).alias("customers")]
    for i, (_, expr) in enumerate(columns):
        aggs += [F.percentile_approx(expr, list(QUANTILES), QUANTILE_ACCURACY).alias(f"q_{i}"),
                 F.avg(expr).alias(f"mean_{i}"), F.count(expr).alias(f"n_{i}")]
    joined = features_df.join(segments_df.select(C.CUSTOMER_ID, C.SEGMENT_ID), C.CUSTOMER_ID)
    rows = joined.rollup(C.SEGMENT_ID).agg(*aggs).collect()  # k + 1 rows
    out = []
    for i, (name, _) in enumerate(columns):
        stats: dict[int, dict[str, float | None]] = {}
        for r in rows:
            seg = POPULATION if r[C.SEGMENT_ID] is None else int(r[C.SEGMENT_ID])
            q = list(r[f"q_{i}"] or [None] * len(QUANTILES))
            stats[seg] = {"p05": q[0], "q1": q[1], "median": q[2], "q3": q[3], "p95": q[4], "mean": r[f"mean_{i}"],
                          "n": float(r[f"n_{i}"])}
        out.append(Distribution(name, stats))
    return out


def stratified_fractions(sizes: dict[int, int], max_points: int) -> dict[int, float]:
    """Sampling rate per segment for about `max_points` customers: each segment gets a floor of
    max_points / (4k) customers (all of a smaller one), the rest is shared in proportion to size."""
    total = sum(sizes.values())
    if total <= max_points:
        return {s: 1.0 for s in sizes}
    floor = max_points // (4 * max(len(sizes), 1))
    base = {s: min(n, floor) for s, n in sizes.items()}
    rest, rest_total = max_points - sum(base.values()), sum(n - base[s] for s, n in sizes.items())
    target = {s: base[s] + ((n - base[s]) * rest / rest_total if rest_total else 0) for s, n in sizes.items()}
    return {s: min(1.0, target[s] / n) if n else 0.0 for s, n in sizes.items()}


@dataclass
class MapData:
    """Sampled customers and the segment centres on the first two principal components of the clustered space."""

    x: list[float]
    y: list[float]
    segment: list[int]
    centres: dict[int, tuple[float, float]]
    explained: tuple[float, float]
    drawn: int
    total: int
    fractions: dict[int, float]
    loadings: list[list[tuple[str, float]]] = field(default_factory=list)  # per component: the largest inputs


def map_sample(spark: SparkSession, attributes_path: str, segments_df: DataFrame, features_df: DataFrame,
               bundle: models.SegmentationModel, sizes: dict[int, int], max_points: int, seed: int) -> MapData | str:
    """A seeded stratified sample (sampleBy, at most `max_points` rows), in the bundle's clustered space, projected
    with a PCA fitted on the sample (numpy: it is bounded); the centres projected the same way. A string says why
    there is no map."""
    import numpy as np
    from pyspark.ml.functions import vector_to_array

    fractions = stratified_fractions(sizes, max_points)
    picked = segments_df.select(C.CUSTOMER_ID, C.SEGMENT_ID).sampleBy(C.SEGMENT_ID, fractions, seed)
    with_attrs = models.with_attributes(spark, attributes_path, features_df,
                                        models.attribute_names(bundle.meta.inputs))
    # the sample is at most about max_points rows: broadcast, so the features are not shuffled to meet it
    vectors = (bundle.pipeline.transform(with_attrs.join(F.broadcast(picked), C.CUSTOMER_ID))
               .select(C.SEGMENT_ID, vector_to_array(F.col(bundle.meta.clustering_col)).alias("v"))
               .limit(max_points).collect())  # at most max_points rows
    if len(vectors) < 2:
        return f"the sample holds {len(vectors)} customer(s): too few for a map"
    points = np.asarray([r["v"] for r in vectors], dtype=float)
    mean = points.mean(axis=0)
    _, singular, vt = np.linalg.svd(points - mean, full_matrices=False)
    components = np.zeros((2, points.shape[1]))
    components[: min(2, vt.shape[0])] = vt[:2]
    for c in components:  # a fixed sign: the largest loading positive, so the same data draws the same map
        if c[np.argmax(np.abs(c))] < 0:
            c *= -1
    projected = (points - mean) @ components.T
    variance = singular ** 2
    share = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    explained = (float(share[0]) if len(share) > 0 else 0.0, float(share[1]) if len(share) > 1 else 0.0)
    centroids = np.asarray(bundle.meta.centroids_model, dtype=float)
    ids = list(bundle.meta.segment_ids or range(len(centroids)))  # the centres' order (ids need not be 0..k-1)
    centres = {}
    if centroids.ndim == 2 and centroids.shape[1] == points.shape[1]:
        centres = {int(s): (float(a), float(b)) for s, (a, b) in zip(ids, (centroids - mean) @ components.T,
                                                                     strict=False)}
    loadings = []
    names = [i.name for i in bundle.meta.inputs]
    if len(names) == points.shape[1]:  # no PCA inside the model: the dimensions are its inputs
        for c in components:
            top = sorted(range(len(names)), key=lambda j: -abs(c[j]))[:3]
            loadings.append([(names[j], float(c[j])) for j in top if abs(c[j]) > 1e-9])
    return MapData([float(v) for v in projected[:, 0]], [float(v) for v in projected[:, 1]],
                   [int(r[C.SEGMENT_ID]) for r in vectors], centres, explained, len(vectors), sum(sizes.values()),
                   fractions, loadings)


def earlier_dates(profiles_df: DataFrame, as_of: dt.date) -> list[dt.date]:
    """The dates before `as_of` that have segment profiles (one distinct value per date)."""
    rows = profiles_df.filter(F.col(C.AS_OF_DATE) < F.lit(as_of)).select(C.AS_OF_DATE).distinct().collect()
    return sorted(r[0] for r in rows)
