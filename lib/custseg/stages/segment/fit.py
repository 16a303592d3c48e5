"""Segment, fitting: lay out and preprocess the features, select a model, fit it, number its segments.

A first model's segment ids are ordered by the segment's mean gross spend, highest first, so that id 0 is its
most valuable segment; a refit's ids are decided by the caller (`Fitted.with_ids`, `stable`), matching
the previous model's segments. The ids travel in the model bundle.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from custseg import __version__
from custseg.core import columns as C
from custseg.core.errors import SegmentationError
from custseg.io.models import PREDICTION, BundleMeta, ModelInput, SegmentationModel, original_units
from custseg.stages.segment import preprocess as P
from custseg.stages.segment import select as S
from custseg.stages.segment import stable as S_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitParams:
    """The segment.* settings a fit uses."""

    seed: int
    n_starts: int
    max_iter: int
    min_segment_share: float
    selection_sample_rows: int
    rows_per_partition: int
    pca_components: int
    k: int
    algorithm: str
    k_range: tuple[int, int]
    algorithms: tuple[str, ...]
    bisecting_selection_max_iter: int = 10
    restart_margin: float = 0.05
    parallelism: int = 4
    selection_metric: str = "silhouette"  # what `choose` ranks by; the restarts stay on the silhouette

    def grid(self) -> list[tuple[str, int]]:
        """The (algorithm, k) candidates to try."""
        if self.k and self.algorithm:
            return [(self.algorithm, self.k)]
        ks = [self.k] if self.k else list(range(self.k_range[0], self.k_range[1] + 1))
        algos = [self.algorithm] if self.algorithm else list(self.algorithms)
        return [(a, k) for a in algos for k in ks]

    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n_starts)]

    def search(self) -> S.Search:
        return S.Search(tuple(self.seeds()), self.max_iter, self.bisecting_selection_max_iter,
                        self.min_segment_share, self.restart_margin, self.parallelism)

    def choose(self, candidates: list[S.Candidate]) -> tuple[S.Candidate | None, str]:
        """The selection rule with these settings' segment.selection_metric."""
        return S.choose(candidates, self.selection_metric)


@dataclass
class Fitted:
    """A fitted segmentation: the bundle (not yet saved), the candidates, and the assignment."""

    model: SegmentationModel | None  # None when no candidate produced two or more clusters
    candidates: list[S.Candidate]
    chosen: S.Candidate | None
    rule: str
    sample_rows: int
    silhouette: float | None = None
    cost: float | None = None
    predicted: DataFrame | None = None  # the customers with MLlib's cluster (reads the cached matrix)
    spend_rank: list[int] = field(default_factory=list)  # clusters by mean gross spend, highest first
    centers: list[list[float]] = field(default_factory=list)  # by cluster, clustered space
    centers_original: list[dict[str, float]] = field(default_factory=list)  # by cluster, original units
    cluster_sizes: list[int] = field(default_factory=list)  # by cluster
    _cached: list[DataFrame] = field(default_factory=list)

    def with_ids(self, cluster_to_segment: list[int]) -> None:
        """Give the model's clusters these segment ids (stable ids decided by the caller)."""
        assert self.model is not None
        self.model.meta = S_ids.relabel(self.model.meta, cluster_to_segment, self.centers, self.centers_original)

    @property
    def sizes(self) -> list[int]:
        """Customers per segment, in the model's segment_ids order."""
        assert self.model is not None
        by_id = dict(zip(self.model.meta.cluster_to_segment, self.cluster_sizes, strict=True))
        return [by_id[s] for s in self.model.meta.segment_ids]

    @property
    def predicted_df(self) -> DataFrame:
        assert self.predicted is not None
        return self.predicted

    @property
    def segments(self) -> DataFrame:
        """customer_id, segment_id, distance, with the model's current ids."""
        assert self.model is not None and self.predicted is not None
        return self.model.assign_predicted(self.predicted)

    def release(self) -> None:
        """Unpersist what the fit cached (after the segments are written)."""
        for df in self._cached:
            df.unpersist()
        self._cached.clear()


def _final(chosen: S.Candidate, model: Any, matrix: DataFrame, sampled: bool, fcol: str,
           p: FitParams) -> tuple[Any, S.Candidate]:
    """The chosen candidate's model for all customers.

    Selected on a sample: refitted on every customer from all its starts, at full iterations. Selected on
    every customer with fewer iterations (BisectingKMeans): its winning start refitted at full iterations,
    kept unless that refit no longer meets the rule (fewer clusters, a segment below the minimum share).
    """
    if sampled:
        return S.fit_and_score(chosen.algorithm, chosen.k, matrix, fcol, p.seeds(), p.max_iter, p.min_segment_share)
    if chosen.max_iter >= p.max_iter or chosen.seed is None:
        return model, chosen
    refit, final = S.fit_and_score(chosen.algorithm, chosen.k, matrix, fcol, [chosen.seed], p.max_iter,
                                   p.min_segment_share)
    if chosen.eligible and not final.eligible:
        log.warning("segment: the refit of %s k=%d at %d iterations %s: keeping the selection's fit (%d iterations)",
                    chosen.algorithm, chosen.k, p.max_iter, final.outcome, chosen.max_iter)
        return model, chosen
    log.info("segment: refitted %s k=%d at %d iterations: silhouette %.4f -> %s", chosen.algorithm, chosen.k,
             p.max_iter, chosen.silhouette or float("nan"),
             f"{final.silhouette:.4f}" if final.silhouette is not None else "-")
    return refit, final


def fit(features_df: DataFrame, n_customers: int, inputs: list[ModelInput], map_keys: dict[str, list[str]],
        p: FitParams, as_of: dt.date, run_id: str, features_version: int | None) -> Fitted:
    """Select and fit a model on `features_df` (one date's features); the caller writes and then releases."""
    fcol = P.clustering_column(p.pca_components)
    # the model's inputs only, hash-partitioned by customer and sorted: the preprocessing fit (medians, means,
    # deviations) and everything after it see the same partitions wherever the job runs
    needed = sorted({i.source for i in inputs} | {C.CUSTOMER_ID, C.GROSS_SPEND})
    laid_out = features_df.select(*needed).transform(
        P.with_canonical_layout(P.matrix_partitions(n_customers, p.rows_per_partition))).cache()
    try:
        prep = P.preprocessing_pipeline(inputs, p.pca_components).fit(laid_out)
        matrix = prep.transform(laid_out).select(C.CUSTOMER_ID, fcol, C.GROSS_SPEND).cache()
        matrix.count()
    finally:
        laid_out.unpersist()
    cached = [matrix]
    sampled = n_customers > p.selection_sample_rows
    train = matrix
    if sampled:
        # the sample in its own few partitions: the matrix may have many, and every MLlib iteration schedules
        # one task per partition
        train = P.selection_sample(matrix, n_customers, p.selection_sample_rows, p.seed, p.rows_per_partition).cache()
    n_train = train.count() if sampled else n_customers
    if sampled:
        log.info("segment: model selection on a seeded sample of %d of %d customers", n_train, n_customers)
    if p.k and p.algorithm:
        log.info("segment: algorithm and k fixed by config: %s k=%d", p.algorithm, p.k)
    t0 = time.perf_counter()
    try:
        candidates, models = S.search(train, p.grid(), n_train, fcol, p.search())
        log.info("segment: model selection: %d candidates on %d customers in %.1f s", len(candidates), n_train,
                 time.perf_counter() - t0)
    except BaseException:
        matrix.unpersist()
        raise
    finally:
        if sampled:
            train.unpersist()
    chosen, rule = p.choose(candidates)
    fitted_model = Fitted(None, candidates, chosen, rule, n_train, _cached=cached)
    if chosen is None:
        fitted_model.release()
        return fitted_model
    chosen.chosen = True
    log.info("segment: chose %s k=%d (%s)", chosen.algorithm, chosen.k, rule)
    if rule.startswith("no candidate met"):
        log.warning("segment: %s", rule)
    model, final = _final(chosen, models[(chosen.algorithm, chosen.k)], matrix, sampled, fcol, p)
    silhouette = final.silhouette
    centers = [list(map(float, c)) for c in model.clusterCenters()]
    predicted = model.transform(matrix)
    # clusters by mean gross spend, highest first (k rows): the order new ids are issued in
    means = {r[0]: r[1] for r in predicted.groupBy(PREDICTION).agg(F.avg(C.GROSS_SPEND)).collect()}
    ranked = sorted(range(len(centers)), key=lambda i: (-(means.get(i) or 0.0), i))
    relabel = [0] * len(centers)
    for rank, idx in enumerate(ranked):
        relabel[idx] = rank
    pipeline = PipelineModel(stages=[*prep.stages, model])
    used_maps = {i.source for i in inputs if i.key is not None}
    meta = BundleMeta(
        run_id=run_id, as_of_date=str(as_of), features_version=features_version, algorithm=chosen.algorithm,
        k=chosen.k, clustering_col=fcol, inputs=list(inputs), cluster_to_segment=relabel,
        map_keys={c: keys for c, keys in map_keys.items() if c in used_maps},
        metrics={"silhouette": silhouette, "cost": final.cost, "selection_rule": rule,
                 "selection_sample_rows": n_train, "customers": n_customers},
        custseg_version=__version__, created_at=dt.datetime.now(dt.UTC).isoformat())
    originals = [original_units(pipeline, inputs, c) for c in centers]
    bundle = SegmentationModel(pipeline, S_ids.relabel(meta, relabel, centers, originals))
    fitted_model.model, fitted_model.silhouette, fitted_model.cost = bundle, silhouette, final.cost
    fitted_model.spend_rank, fitted_model.centers, fitted_model.centers_original = ranked, centers, originals
    fitted_model.cluster_sizes = [int(n) for n in model.summary.clusterSizes]
    fitted_model.predicted = predicted
    return fitted_model


def check_customers(n_customers: int, as_of: dt.date) -> None:
    """At least two customers are needed to segment."""
    if n_customers < 2:
        raise SegmentationError(f"{n_customers} customer as of {as_of}: at least 2 are needed to segment")


def check_k(p: FitParams, n_customers: int, as_of: dt.date) -> None:
    """Refuse, before anything is fitted or written, a k that no candidate can reach: a model of k segments
    needs at least k customers (in model selection's sample, when it samples)."""
    smallest = min(k for _, k in p.grid())
    if p.k:
        key, asked = "segment.k", f"segment.k={p.k}"
    else:
        key, asked = "segment.k_range", f"segment.k_range=[{p.k_range[0]}, {p.k_range[1]}]"
    fix = f"set {key} to {'at most' if p.k else 'start at or below'}"
    if smallest > n_customers:
        raise SegmentationError(f"{asked} asks for at least {smallest} segments but there are only {n_customers} "
                                f"customers as of {as_of}: {fix} {n_customers}")
    if n_customers > p.selection_sample_rows and smallest > p.selection_sample_rows:
        raise SegmentationError(f"{asked} asks for at least {smallest} segments but model selection runs on a sample "
                                f"of about {p.selection_sample_rows} of the {n_customers} customers as of {as_of} "
                                f"(segment.selection_sample_rows): {fix} {p.selection_sample_rows}, or raise "
                                "segment.selection_sample_rows")
