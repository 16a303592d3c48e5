"""Segment step: fit a model on the date's features (segment.mode = fit) or assign segments with a saved
one (score), and write segments, model_selection and the model bundle.

Both modes read customer_features at the version the features stage recorded for the date, and give
every customer of that date exactly one segment.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import SegmentationError, StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, lineage, models
from custseg.io.models import ModelInput
from custseg.stages.segment import fit as FIT
from custseg.stages.segment import preprocess as P
from custseg.stages.segment.select import Candidate

log = logging.getLogger(__name__)


@dataclass
class SegmentResult(StageResult):
    mode: str
    customers: int
    algorithm: str
    k: int
    model_run_id: str
    model_path: str
    silhouette: float | None = None
    cost: float | None = None
    selection_rule: str = ""
    segment_sizes: list[int] = field(default_factory=list)
    selection_sample_rows: int = 0
    candidates: int = 0
    model_inputs: list[str] = field(default_factory=list)
    non_finite_values: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"segment.customers": self.customers}

    def run_fields(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "k": self.k, "silhouette": self.silhouette, "cost": self.cost,
                "model_path": self.model_path}

    def describe(self) -> str:
        if self.mode == "score":
            return (f"{self.customers:,} customers scored with model {self.model_run_id} "
                    f"({self.algorithm} k={self.k}), without refitting")
        sil = f"{self.silhouette:.3f}" if self.silhouette is not None else "n/a"
        return (f"{self.algorithm} k={self.k}, silhouette {sil}, chosen from {self.candidates} candidates "
                f"({self.selection_rule})")


def read_features(spark: SparkSession, cfg: Config, as_of: dt.date) -> tuple[DataFrame, int]:
    """One date's customer features at the version the features stage recorded, and that version."""
    path = cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
    version = lineage.input_version(spark, cfg, C.TABLE_CUSTOMER_FEATURES, "features", as_of)
    if version is None:
        raise StageError(f"no customer_features table at {path}: run `custseg features --as-of {as_of}` first")
    df = delta.read(spark, path, version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    if df.isEmpty():
        raise StageError(f"no customer features as of {as_of}: run `custseg features --as-of {as_of}` first")
    return df, version


def usable_inputs(feats: DataFrame, cfg: Config) -> tuple[list[ModelInput], dict[str, list[str]], dict[str, int]]:
    """Expand the configured features, drop the ones that do not vary, and count non-finite values."""
    requested = list(cfg["segment.features"]) or list(P.DEFAULT_FEATURES)
    unknown = [r for r in requested if r.partition(".")[0] not in feats.columns]
    if unknown:
        raise StageError(f"segment.features: not a column of customer_features: {', '.join(unknown)}")
    wanted_maps = [c for c in sorted(P.MAP_FEATURES) if c in requested or any(r.startswith(c + ".") for r in requested)]
    keys = models.map_keys(feats, wanted_maps)
    inputs = P.model_inputs(requested, keys) + attribute_inputs(feats, cfg)
    first = feats.agg(*P.non_finite_counts(inputs)).first()
    stats = first.asDict() if first is not None else {}
    non_finite = {i.name: int(n) for i in inputs if (n := stats.get(f"nonfinite__{i.model_col}"))}
    for name, n in non_finite.items():
        log.warning("segment: %d customers have a NaN or infinite %s: treated as missing and imputed", n, name)
    kept = []
    for i in inputs:
        std = stats.get(f"std__{i.model_col}")
        if std is None or not std > 1e-12:
            log.warning("segment: feature %s does not vary (std %s): left out of the model", i.name, std)
        else:
            kept.append(i)
    if not kept:
        raise SegmentationError("no feature varies across customers: nothing to cluster on")
    return kept, keys, non_finite


def attribute_inputs(feats: DataFrame, cfg: Config) -> list[ModelInput]:
    """The customer attributes of attributes.cluster_on as model inputs (joined to `feats` by `with_attributes`):
    a numeric attribute as itself, a categorical one as a 0/1 indicator per value, for its attributes.max_values
    most frequent values (a customer without the attribute, or with a rarer value, is 0 on every indicator)."""
    out: list[ModelInput] = []
    types = dict(feats.dtypes)
    for name in cfg["attributes.cluster_on"]:
        col = models.ATTRIBUTE_PREFIX + name
        if types[col] != "string":
            out.append(ModelInput(f"attribute.{name}", col))
            continue
        top = (feats.filter(F.col(col).isNotNull()).groupBy(col).count()
               .orderBy(F.desc("count"), F.col(col)).limit(int(cfg["attributes.max_values"])).collect())
        out += [ModelInput(f"attribute.{name}={r[0]}", col, equals=str(r[0])) for r in top]
    return out


def with_cluster_attributes(spark: SparkSession, cfg: Config, feats: DataFrame, names: list[str]) -> DataFrame:
    """`feats` with the customer attributes the model clusters on (none: `feats` as it is)."""
    return models.with_attributes(spark, cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES), feats, names)


def _params(cfg: Config, n_inputs: int | None) -> FIT.FitParams:
    """The fit's settings; with `n_inputs`, segment.pca_components is capped at the number of inputs."""
    pca = cfg["segment.pca_components"]
    if pca and n_inputs is not None and pca > n_inputs:
        log.warning("segment: segment.pca_components=%d but only %d features: using %d", pca, n_inputs, n_inputs)
        pca = n_inputs
    return FIT.FitParams(
        seed=cfg["run.seed"], n_starts=cfg["segment.n_starts"], max_iter=cfg["segment.max_iter"],
        min_segment_share=cfg["segment.min_segment_share"], selection_sample_rows=cfg["segment.selection_sample_rows"],
        rows_per_partition=cfg["segment.rows_per_partition"], pca_components=pca, k=cfg["segment.k"],
        algorithm=cfg["segment.algorithm"], k_range=(cfg["segment.k_range"][0], cfg["segment.k_range"][1]),
        algorithms=tuple(cfg["segment.algorithms"]),
        bisecting_selection_max_iter=cfg["segment.bisecting_selection_max_iter"],
        restart_margin=cfg["segment.restart_margin"], parallelism=cfg["segment.parallelism"],
        selection_metric=cfg["segment.selection_metric"])


def model_root(cfg: Config) -> str:
    """Where bundles are saved: segment.model_root, or <output.root>/models."""
    return str(cfg["segment.model_root"] or f"{str(cfg['output.root']).rstrip('/')}/models")


def _segments_rows(assigned: DataFrame, ctx: StageContext, model_run_id: str, assignment: str) -> DataFrame:
    return assigned.select(F.lit(ctx.date).alias(C.AS_OF_DATE), C.CUSTOMER_ID, C.SEGMENT_ID, C.DISTANCE,
                           F.lit(ctx.run_id).alias(C.RUN_ID), F.lit(model_run_id).alias(C.MODEL_RUN_ID),
                           F.lit(assignment).alias(C.ASSIGNMENT))


def run(spark: SparkSession, ctx: StageContext) -> SegmentResult:
    """Fit or score, as segment.mode says."""
    feats, features_version = read_features(spark, ctx.cfg, ctx.date)
    if ctx.cfg["segment.mode"] == "score":
        return score(spark, ctx, feats, features_version)
    feats = with_cluster_attributes(spark, ctx.cfg, feats, list(ctx.cfg["attributes.cluster_on"]))
    return fit(spark, ctx, feats, features_version)


def fit(spark: SparkSession, ctx: StageContext, feats: DataFrame, features_version: int) -> SegmentResult:
    """Select and fit a model, save its bundle, write segments (fitted) and model_selection.

    Everything that can refuse the run (too few customers, a k no candidate can reach, no usable model) is
    decided before the first write. The writes then go largest first (the bundle, then segments, whose
    assignment is the one computation left), the small tables last; when one of them fails, the ones
    already made for the date are undone (`_Undo`), so a failed run leaves that date as it was.
    """
    cfg, as_of = ctx.cfg, ctx.date
    n_customers = feats.count()
    FIT.check_customers(n_customers, as_of)
    FIT.check_k(_params(cfg, None), n_customers, as_of)
    inputs, keys, non_finite = usable_inputs(feats, cfg)
    log.info("segment: %d customers, %d model inputs: %s", n_customers, len(inputs), ", ".join(i.name for i in inputs))
    fitted = FIT.fit(feats, n_customers, inputs, keys, _params(cfg, len(inputs)), as_of, ctx.run_id, features_version)
    undo = _Undo(spark, as_of)
    try:
        if fitted.model is None or fitted.chosen is None or fitted.segments is None:
            raise SegmentationError(f"{fitted.rule}: no segmentation as of {as_of} "
                                    f"({_outcomes(fitted.candidates)}); nothing written")
        selection = _model_selection_rows(spark, ctx, fitted.candidates, fitted.sample_rows)
        bundle = fitted.model
        bundle.path = models.bundle_path(model_root(cfg), as_of, ctx.run_id)
        obs = Observation("segments")
        rows = _segments_rows(fitted.segments, ctx, ctx.run_id, C.ASSIGNMENT_FITTED).observe(
            obs, F.count(F.lit(1)).alias("rows"))
        writes: dict[str, int] = {}
        try:
            undo.directory(bundle.path)
            bundle.save(spark)
            seg_path = cfg.table_path(C.TABLE_SEGMENTS)
            undo.partition(seg_path, C.TABLE_SEGMENTS)
            writes[C.TABLE_SEGMENTS] = delta.replace_partition(rows, seg_path, C.TABLE_SEGMENTS, as_of, ctx.run_id)
            ms_path = cfg.table_path(C.TABLE_MODEL_SELECTION)
            undo.partition(ms_path, C.TABLE_MODEL_SELECTION)
            writes[C.TABLE_MODEL_SELECTION] = delta.replace_partition(selection, ms_path, C.TABLE_MODEL_SELECTION,
                                                                      as_of, ctx.run_id)
            # the last write: the bundle becomes findable (score, profile) only once everything else is in place
            writes[C.TABLE_MODELS] = models.register(spark, cfg.table_path(C.TABLE_MODELS), bundle, n_customers)
        except BaseException:
            undo.run()
            raise
    finally:
        fitted.release()
    chosen = fitted.chosen
    result = SegmentResult(
        "fit", int(obs.get["rows"]), chosen.algorithm, chosen.k, ctx.run_id, bundle.path, fitted.silhouette,
        fitted.cost, fitted.rule, fitted.sizes, fitted.sample_rows, len(fitted.candidates), [i.name for i in inputs],
        non_finite, reads={C.TABLE_CUSTOMER_FEATURES: features_version}, writes=writes)
    log.info("segment: %s k=%d, silhouette %.4f, sizes %s", result.algorithm, result.k,
             result.silhouette if result.silhouette is not None else float("nan"), result.segment_sizes)
    return result


def _outcomes(candidates: list[Candidate]) -> str:
    """The candidates' outcomes, for the one-line error of a selection that found nothing."""
    text = "; ".join(f"{c.algorithm} k={c.k}: {c.outcome}" for c in candidates) or "no candidates"
    return text if len(text) <= 300 else text[:297] + "..."


class _Undo:
    """Puts back what a failing fit had already written for its date, newest first.

    A table's partition gets the rows it had before the run (read at the version before the run's
    write; removed when there was none); a bundle directory the run created is deleted. Each step is
    best effort: a failure to undo is logged, and the original error is what the run reports.
    """

    def __init__(self, spark: SparkSession, as_of: dt.date) -> None:
        self.spark = spark
        self.as_of = as_of
        self.steps: list[tuple[str, Callable[[], object]]] = []

    def partition(self, path: str, name: str) -> None:
        """Call before writing table `name`'s partition for the date."""
        before = delta.version(self.spark, path)

        def restore() -> None:
            if delta.version(self.spark, path) == before:  # the write did not commit
                return
            if before is None:
                delta.delete_where(self.spark, path, f"{C.AS_OF_DATE} = '{self.as_of}'")
                return
            # the date's rows at the version before (none: the replacement just removes the run's rows)
            old = delta.read(self.spark, path, before).filter(F.col(C.AS_OF_DATE) == F.lit(self.as_of))
            delta.replace_partition(old, path, name, self.as_of)

        self.steps.append((f"{name} as of {self.as_of}", restore))

    def directory(self, path: str) -> None:
        """Call before saving a bundle at `path`: it is deleted on undo unless it was there before."""
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        fs = hpath.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration())
        if fs.exists(hpath):
            return
        self.steps.append((f"model bundle {path}", lambda: fs.delete(hpath, True)))

    def run(self) -> None:
        for what, step in reversed(self.steps):
            try:
                step()
                log.warning("segment: the run failed: put back %s as it was", what)
            except Exception:
                log.error("segment: the run failed and %s could not be put back", what, exc_info=True)
        self.steps.clear()


def score(spark: SparkSession, ctx: StageContext, feats: DataFrame, features_version: int) -> SegmentResult:
    """Assign every customer of the date to a segment with a saved bundle, without refitting."""
    cfg, as_of = ctx.cfg, ctx.date
    path = models.find(spark, cfg.table_path(C.TABLE_MODELS), as_of, cfg["segment.model"])
    bundle = models.load(spark, path)
    feats = with_cluster_attributes(spark, cfg, feats, models.attribute_names(bundle.meta.inputs))
    bundle.check_features(feats, as_of)
    log.info("segment: scoring customers as of %s with model %s (%s k=%d, fitted as of %s)", as_of, bundle.run_id,
             bundle.meta.algorithm, bundle.meta.k, bundle.meta.as_of_date)
    obs = Observation("scored")
    rows = _segments_rows(bundle.assign(feats), ctx, bundle.run_id, C.ASSIGNMENT_SCORED).observe(
        obs, F.count(F.lit(1)).alias("rows"), *[F.count_if(F.col(C.SEGMENT_ID) == s).alias(f"s{s}")
                                                for s in range(bundle.meta.k)])
    written = delta.replace_partition(rows, cfg.table_path(C.TABLE_SEGMENTS), C.TABLE_SEGMENTS, as_of, ctx.run_id)
    counts = obs.get
    return SegmentResult(
        "score", int(counts["rows"]), bundle.meta.algorithm, bundle.meta.k, bundle.run_id, bundle.path,
        segment_sizes=[int(counts[f"s{s}"]) for s in range(bundle.meta.k)],
        model_inputs=[i.name for i in bundle.meta.inputs],
        reads={C.TABLE_CUSTOMER_FEATURES: features_version}, writes={C.TABLE_SEGMENTS: written})


def _model_selection_rows(spark: SparkSession, ctx: StageContext, candidates: list[Candidate],
                          n_train: int) -> DataFrame:
    rows = [(ctx.date, ctx.run_id, c.algorithm, c.k, c.seed, c.cost, c.silhouette, c.cluster_sizes, c.n_clusters,
             c.min_share, c.fit_seconds, c.starts, c.eligible, c.chosen, c.outcome, n_train, c.max_iter,
             c.davies_bouldin, c.calinski_harabasz)
            for c in candidates]
    return spark.createDataFrame(rows, catalog.MODEL_SELECTION_SCHEMA)
