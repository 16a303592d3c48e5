"""Segment, stable ids: a refit's segments keep the ids of the previous model's segments they match.

The new model's segments are compared with the previous model's in one common space, the previous model's
clustered (scaled) space: each new segment's centre there is the mean of its members' vectors under the
previous model's preprocessing, the previous centres are its own. An optimal one-to-one assignment (the
Hungarian method, on Euclidean distance) pairs them; a pair farther apart than segment.match_max_distance
is no match. Matched segments keep their id, the others get fresh ids above every id ever issued (retired
ids are never reused), numbered by mean gross spend, highest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from pyspark.ml import PipelineModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.io.models import PREDICTION, BundleMeta, SegmentationModel


def hungarian(cost: Sequence[Sequence[float]]) -> list[int]:
    """The column assigned to each row of a square cost matrix, with the smallest total cost (O(n^3))."""
    n = len(cost)
    inf = math.inf
    u, v = [0.0] * (n + 1), [0.0] * (n + 1)
    p, way = [0] * (n + 1), [0] * (n + 1)  # p[j]: the row matched to column j (1-based; 0: none)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (n + 1), [False] * (n + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    out = [0] * n
    for j in range(1, n + 1):
        out[p[j] - 1] = j - 1
    return out


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def match(new: Sequence[Sequence[float]], old: Sequence[Sequence[float]], max_distance: float) -> list[int | None]:
    """For each new centre, the index of the old centre it is matched to (None: no match within max_distance).

    One-to-one and optimal: the assignment minimises the total distance of the matched pairs plus
    max_distance / 2 for every centre (new or old) left unmatched, so a pair is matched exactly when that is
    cheaper than leaving both alone, and never when the centres are farther apart than max_distance."""
    n_new, n_old = len(new), len(old)
    size = n_new + n_old
    big = 1e9 + 10 * max_distance
    half = max_distance / 2
    cost = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(size):
            if i < n_new and j < n_old:
                d = distance(new[i], old[j])
                cost[i][j] = d if d <= max_distance else big
            elif i < n_new or j < n_old:  # a real centre paired with a dummy: left unmatched
                cost[i][j] = half
    assigned = hungarian(cost)
    out: list[int | None] = []
    for i in range(n_new):
        j = assigned[i]
        out.append(j if j < n_old and cost[i][j] < big else None)
    return out


@dataclass(frozen=True)
class Matched:
    """The ids a refit's clusters get, and how each was decided."""

    cluster_to_segment: list[int]
    distances: list[float | None]  # by cluster: distance to the matched previous centre (None: a new id)
    previous_run_id: str

    def kept(self) -> list[int]:
        return sorted(s for s, d in zip(self.cluster_to_segment, self.distances, strict=True) if d is not None)

    def new(self) -> list[int]:
        return sorted(s for s, d in zip(self.cluster_to_segment, self.distances, strict=True) if d is None)


def centres_in_previous_space(previous: SegmentationModel, features_df: DataFrame, predicted: DataFrame,
                              k: int) -> list[list[float]]:
    """Each new cluster's centre in the previous model's clustered space: the mean of its members' vectors
    under the previous model's preprocessing (k rows reach the driver). `features_df` carries the columns
    the previous model reads, `predicted` each customer's new cluster (`prediction`)."""
    prep = PipelineModel(stages=previous.pipeline.stages[:-1])
    dim = len(previous.meta.centroids_model[0])
    vectors = prep.transform(features_df).select(
        C.CUSTOMER_ID, vector_to_array(F.col(previous.meta.clustering_col)).alias("v"))
    rows = (predicted.select(C.CUSTOMER_ID, PREDICTION).join(vectors, C.CUSTOMER_ID)
            .groupBy(PREDICTION).agg(*[F.avg(F.col("v")[i]).alias(f"c{i}") for i in range(dim)]).collect())
    by_cluster = {int(r[PREDICTION]): [float(r[f"c{i}"]) for i in range(dim)] for r in rows}
    # a cluster without members (cannot happen for a fitted KMeans) is placed far away: a new id
    return [by_cluster.get(c, [math.inf] * dim) for c in range(k)]


def stable_ids(new_centres: list[list[float]], previous: BundleMeta, spend_rank: Sequence[int], max_distance: float,
               issued_max: int) -> Matched:
    """Ids for the new clusters: the matched previous segment's id, else fresh ones above `issued_max` (the
    highest id ever issued) in `spend_rank` order (clusters by mean gross spend, highest first)."""
    matches = match(new_centres, previous.centroids_model, max_distance)
    ids: list[int | None] = [previous.segment_ids[j] if j is not None else None for j in matches]
    next_id = max(issued_max, *previous.segment_ids) + 1
    for cluster in spend_rank:
        if ids[cluster] is None:
            ids[cluster] = next_id
            next_id += 1
    dists = [distance(new_centres[c], previous.centroids_model[j]) if j is not None else None
             for c, j in enumerate(matches)]
    return Matched([int(i) for i in ids if i is not None], dists, previous.run_id)


def first_ids(spend_rank: Sequence[int], issued_max: int) -> list[int]:
    """Ids for a model with nothing to match: issued_max + 1, ... by mean gross spend, highest first."""
    ids = [0] * len(spend_rank)
    for rank, cluster in enumerate(spend_rank):
        ids[cluster] = issued_max + 1 + rank
    return ids


def relabel(meta: BundleMeta, cluster_to_segment: list[int], centres: list[list[float]],
            centres_original: list[dict[str, float]]) -> BundleMeta:
    """`meta` with new ids: `centres` (and original units) are by MLlib cluster index, reordered by id."""
    order = sorted(range(len(cluster_to_segment)), key=lambda c: cluster_to_segment[c])
    return replace(meta, cluster_to_segment=list(cluster_to_segment),
                   segment_ids=[cluster_to_segment[c] for c in order],
                   centroids_model=[centres[c] for c in order],
                   centroids_original=[centres_original[c] for c in order])
