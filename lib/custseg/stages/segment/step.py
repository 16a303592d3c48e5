"""Segment step: fit a model on the date's features or assign segments with a saved one, as segment.mode and the
refresh policy decide (`refresh`); write segments, model_selection, segment_drift, segment_registry and the
model bundle. A refit's segments keep the ids of the previous model's segments they match (`stable`).

Both modes read customer_features at the version the features stage recorded for the date, and give
every customer of that date exactly one segment.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import SegmentationError, StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, lineage, models, registry
from custseg.io.models import ModelInput, SegmentationModel
from custseg.stages.segment import drift as DR
from custseg.stages.segment import fit as FIT
from custseg.stages.segment import preprocess as P
from custseg.stages.segment import refresh as R
from custseg.stages.segment import stable as S_ids
from custseg.stages.segment.select import Candidate
from custseg.stages.segment.undo import Undo

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
    segment_ids: list[int] = field(default_factory=list)  # in segment_sizes' order
    kept_ids: list[int] = field(default_factory=list)  # a refit's ids matched to the previous model's
    new_ids: list[int] = field(default_factory=list)
    decision: str = ""  # the refresh policy's: score or retrain
    decision_reasons: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"segment.customers": self.customers}

    def run_fields(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "k": self.k, "silhouette": self.silhouette, "cost": self.cost,
                "model_path": self.model_path}

    def details(self) -> dict[str, str]:
        return {"segment.decision": self.decision, "segment.decision_reasons": "; ".join(self.decision_reasons),
                "segment.kept_ids": ",".join(map(str, self.kept_ids)),
                "segment.new_ids": ",".join(map(str, self.new_ids))}

    def describe(self) -> str:
        why = f"\n    why: {'; '.join(self.decision_reasons)}" if self.decision_reasons else ""
        if self.mode == "score":
            return (f"{self.customers:,} customers scored with model {self.model_run_id} "
                    f"({self.algorithm} k={self.k}), without refitting{why}")
        sil = f"{self.silhouette:.3f}" if self.silhouette is not None else "n/a"
        ids = (f"; ids kept {', '.join(map(str, self.kept_ids)) or '-'}, new {', '.join(map(str, self.new_ids)) or '-'}"
               if self.kept_ids else "")
        return (f"{self.algorithm} k={self.k}, silhouette {sil}, chosen from {self.candidates} candidates "
                f"({self.selection_rule}){ids}{why}")


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
    """Score with a saved model or refit, as segment.mode and the refresh policy say (`refresh`)."""
    cfg, as_of = ctx.cfg, ctx.date
    feats, features_version = read_features(spark, cfg, as_of)
    mode = cfg["segment.mode"]
    model = R.latest_model(spark, cfg, as_of, cfg["segment.model"] if mode == "score" else "latest")
    if mode == "score" and model is None:  # `find` names what is missing
        models.find(spark, cfg.table_path(C.TABLE_MODELS), as_of, cfg["segment.model"])
    ev, model_feats = None, feats
    if model is not None:
        try:
            model_feats = with_cluster_attributes(spark, cfg, feats, models.attribute_names(model.meta.inputs))
        except StageError as e:
            if mode == "score":
                raise
            ev = R.Evaluation(model, (as_of - dt.date.fromisoformat(model.meta.as_of_date)).days, [str(e)])
        else:
            ev = R.evaluate(model, model_feats, cfg, as_of, keep_scored=mode != "fit")  # fit never scores
    try:  # the evaluation's cached scored rows: written when scoring, released before a refit
        decision, reasons = R.decide(mode, ev, cfg["segment.max_model_age_days"])
        log.info("segment: %s (%s)", "scoring with the saved model" if decision == C.DECISION_SCORE else "fitting",
                 "; ".join(reasons))
        drift = R.drift_rows(spark, as_of, ctx.run_id, ev, decision, reasons)
        if decision == C.DECISION_SCORE:
            assert model is not None and ev is not None
            result = score(spark, ctx, model_feats, features_version, model, drift, ev.scored)
    finally:
        R.release(ev)
    if decision != C.DECISION_SCORE:
        fit_feats = with_cluster_attributes(spark, cfg, feats, list(cfg["attributes.cluster_on"]))
        result = fit(spark, ctx, fit_feats, features_version, feats, model, drift)
    result.decision, result.decision_reasons = decision, reasons
    return result


def _stable_ids(spark: SparkSession, cfg: Config, fitted: FIT.Fitted, base_feats: DataFrame,
                previous: SegmentationModel | None, issued_max: int) -> S_ids.Matched | None:
    """The refit's ids matched to `previous`'s segments (None: nothing to match, or `previous` cannot read
    today's features: every segment gets a new id)."""
    if previous is None:
        return None
    try:
        prev_feats = with_cluster_attributes(spark, cfg, base_feats, models.attribute_names(previous.meta.inputs))
        previous.check_features(prev_feats, previous.meta.as_of_date)
    except StageError as e:
        log.warning("segment: the segments cannot be matched to model %s's (%s): every segment gets a new id",
                    previous.run_id, e)
        return None
    centres = S_ids.centres_in_previous_space(previous, prev_feats, fitted.predicted_df, len(fitted.centers))
    matched = S_ids.stable_ids(centres, previous.meta, fitted.spend_rank, cfg["segment.match_max_distance"],
                               issued_max)
    log.info("segment: matched to model %s: kept ids %s, new ids %s (distances %s)", previous.run_id,
             matched.kept() or "-", matched.new() or "-",
             ", ".join(f"{d:.3f}" if d is not None else "new" for d in matched.distances))
    return matched


def fit(spark: SparkSession, ctx: StageContext, feats: DataFrame, features_version: int, base_feats: DataFrame,
        previous: SegmentationModel | None, drift: DataFrame) -> SegmentResult:
    """Select and fit a model, give its segments stable ids, save its bundle, write segments (fitted),
    model_selection, segment_drift and segment_registry.

    Everything that can refuse the run (too few customers, a k no candidate can reach, no usable model) is
    decided before the first write. The writes then go largest first (the bundle, then segments, whose
    assignment is the one computation left), the small tables last; when one of them fails, the ones
    already made for the date are undone (`Undo`), so a failed run leaves that date as it was.
    """
    cfg, as_of = ctx.cfg, ctx.date
    n_customers = feats.count()
    FIT.check_customers(n_customers, as_of)
    FIT.check_k(_params(cfg, None), n_customers, as_of)
    inputs, keys, non_finite = usable_inputs(feats, cfg)
    log.info("segment: %d customers, %d model inputs: %s", n_customers, len(inputs), ", ".join(i.name for i in inputs))
    fitted = FIT.fit(feats, n_customers, inputs, keys, _params(cfg, len(inputs)), as_of, ctx.run_id, features_version)
    undo = Undo(spark, as_of)
    try:
        if fitted.model is None or fitted.chosen is None:
            raise SegmentationError(f"{fitted.rule}: no segmentation as of {as_of} "
                                    f"({_outcomes(fitted.candidates)}); nothing written")
        reg_path = cfg.table_path(C.TABLE_SEGMENT_REGISTRY)
        reg = registry.read(spark, reg_path)
        matched = _stable_ids(spark, cfg, fitted, base_feats, previous, registry.issued_max(reg))
        fitted.with_ids(matched.cluster_to_segment if matched else
                        S_ids.first_ids(fitted.spend_rank, registry.issued_max(reg)))
        bundle = fitted.model
        bundle.meta = replace(bundle.meta, settings=R.settings_fingerprint(cfg),
                              training=DR.baseline(bundle, feats, cfg["drift.bins"]))
        distances = dict(zip(fitted.model.meta.cluster_to_segment, matched.distances, strict=True)) if matched else {}
        selection = _model_selection_rows(spark, ctx, fitted.candidates, fitted.sample_rows)
        bundle.path = models.bundle_path(model_root(cfg), as_of, ctx.run_id)
        obs = Observation("segments")
        rows = _segments_rows(fitted.segments, ctx, ctx.run_id, C.ASSIGNMENT_FITTED).observe(
            obs, F.count(F.lit(1)).alias("rows"))
        writes: dict[str, int] = {}
        try:
            undo.directory(bundle.path)
            bundle.save(spark)
            writes.update(_write_dated(spark, cfg, undo, ctx, rows, selection, drift))
            undo.table(reg_path, C.TABLE_SEGMENT_REGISTRY)
            writes[C.TABLE_SEGMENT_REGISTRY] = registry.write(
                spark, reg_path, registry.after_fit(reg, bundle.meta, as_of, ctx.run_id, distances), ctx.run_id)
            # the last write: the bundle becomes findable (score, profile) only once everything else is in place
            writes[C.TABLE_MODELS] = models.register(spark, cfg.table_path(C.TABLE_MODELS), bundle, n_customers)
        except BaseException:
            undo.run()
            raise
        sizes = fitted.sizes
    finally:
        fitted.release()
    chosen = fitted.chosen
    result = SegmentResult(
        "fit", int(obs.get["rows"]), chosen.algorithm, chosen.k, ctx.run_id, bundle.path, fitted.silhouette,
        fitted.cost, fitted.rule, sizes, fitted.sample_rows, len(fitted.candidates), [i.name for i in inputs],
        non_finite, segment_ids=list(bundle.meta.segment_ids),
        kept_ids=matched.kept() if matched else [], new_ids=matched.new() if matched else list(bundle.meta.segment_ids),
        reads={C.TABLE_CUSTOMER_FEATURES: features_version}, writes=writes)
    log.info("segment: %s k=%d, silhouette %.4f, sizes %s", result.algorithm, result.k,
             result.silhouette if result.silhouette is not None else float("nan"),
             dict(zip(result.segment_ids, result.segment_sizes, strict=True)))
    return result


def _write_dated(spark: SparkSession, cfg: Config, undo: Undo, ctx: StageContext, segments: DataFrame,
                 selection: DataFrame | None, drift: DataFrame) -> dict[str, int]:
    """Replace the date's partitions of segments, model_selection (fits only) and segment_drift, in that order,
    each registered with `undo` first."""
    writes: dict[str, int] = {}
    tables = ((C.TABLE_SEGMENTS, segments), (C.TABLE_MODEL_SELECTION, selection), (C.TABLE_SEGMENT_DRIFT, drift))
    for name, df in tables:
        if df is not None:
            path = cfg.table_path(name)
            undo.partition(path, name)
            writes[name] = delta.replace_partition(df, path, name, ctx.date, ctx.run_id)
    return writes


def _outcomes(candidates: list[Candidate]) -> str:
    """The candidates' outcomes, for the one-line error of a selection that found nothing."""
    text = "; ".join(f"{c.algorithm} k={c.k}: {c.outcome}" for c in candidates) or "no candidates"
    return text if len(text) <= 300 else text[:297] + "..."


def score(spark: SparkSession, ctx: StageContext, feats: DataFrame, features_version: int,
          bundle: SegmentationModel, drift: DataFrame, scored: DataFrame | None = None) -> SegmentResult:
    """Assign every customer of the date to a segment with a saved bundle (or take `scored`, its drift measure's
    rows), without refitting; write segments, segment_drift and the registry's dates (undone together on failure)."""
    cfg, as_of = ctx.cfg, ctx.date
    if scored is None:  # else the drift measure checked these features against this bundle before scoring them
        bundle.check_features(feats, as_of)
    log.info("segment: scoring customers as of %s with model %s (%s k=%d, fitted as of %s)", as_of, bundle.run_id,
             bundle.meta.algorithm, bundle.meta.k, bundle.meta.as_of_date)
    obs, ids = Observation("scored"), bundle.meta.segment_ids
    assigned = scored if scored is not None else bundle.assign(feats)
    rows = _segments_rows(assigned, ctx, bundle.run_id, C.ASSIGNMENT_SCORED).observe(
        obs, F.count(F.lit(1)).alias("rows"), *[F.count_if(F.col(C.SEGMENT_ID) == s).alias(f"s{s}") for s in ids])
    undo = Undo(spark, as_of)
    try:
        writes = _write_dated(spark, cfg, undo, ctx, rows, None, drift)
        reg_path = cfg.table_path(C.TABLE_SEGMENT_REGISTRY)
        reg = registry.read(spark, reg_path)
        undo.table(reg_path, C.TABLE_SEGMENT_REGISTRY)
        after = registry.after_score(reg, bundle.meta, as_of)
        writes[C.TABLE_SEGMENT_REGISTRY] = registry.write(spark, reg_path, after, ctx.run_id)
    except BaseException:
        undo.run()
        raise
    counts = obs.get
    return SegmentResult(
        "score", int(counts["rows"]), bundle.meta.algorithm, bundle.meta.k, bundle.run_id, bundle.path,
        segment_sizes=[int(counts[f"s{s}"]) for s in ids], model_inputs=[i.name for i in bundle.meta.inputs],
        segment_ids=list(ids), reads={C.TABLE_CUSTOMER_FEATURES: features_version}, writes=writes)


def _model_selection_rows(spark: SparkSession, ctx: StageContext, candidates: list[Candidate],
                          n_train: int) -> DataFrame:
    rows = [(ctx.date, ctx.run_id, c.algorithm, c.k, c.seed, c.cost, c.silhouette, c.cluster_sizes, c.n_clusters,
             c.min_share, c.fit_seconds, c.starts, c.eligible, c.chosen, c.outcome, n_train, c.max_iter,
             c.davies_bouldin, c.calinski_harabasz)
            for c in candidates]
    return spark.createDataFrame(rows, catalog.MODEL_SELECTION_SCHEMA)
