"""Segment, the refresh policy: score with the latest model or refit, and the drift that decides it.

segment.mode = auto scores the date's customers with the latest model fitted on or before the date while
that model can score them (same inputs and share-map keys, the same segment settings, a drift baseline),
is younger than segment.max_model_age_days, and its drift (`drift`) stays below every retrain threshold;
otherwise it refits, and the refit keeps the ids of the segments it matches (`stable`). fit always refits,
score always scores. Whatever the mode, the drift against the model that was evaluated is written to
segment_drift, with the decision and its reasons on the overall row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import StageError
from custseg.io import models
from custseg.io.models import SegmentationModel
from custseg.stages.segment import drift as D

log = logging.getLogger(__name__)

# the settings a model's segments depend on: a model fitted with others is not the model these settings ask for
SETTINGS_KEYS = ("segment.features", "segment.k_range", "segment.algorithms", "segment.k", "segment.algorithm",
                 "segment.pca_components", "segment.selection_metric", "segment.min_segment_share",
                 "attributes.cluster_on")


def settings_fingerprint(cfg: Config) -> str:
    text = json.dumps({k: cfg[k] for k in SETTINGS_KEYS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def latest_model(spark: SparkSession, cfg: Config, as_of: dt.date, which: str = "latest") -> SegmentationModel | None:
    """The saved model `which` (a run id, or the latest fitted on or before `as_of`); None when there is none
    and `which` is latest."""
    try:
        path = models.find(spark, cfg.table_path(C.TABLE_MODELS), as_of, which)
    except StageError:
        if which != "latest":
            raise
        return None
    return models.load(spark, path)


@dataclass
class Evaluation:
    """A saved model against the date's customers."""

    model: SegmentationModel
    age_days: int
    problems: list[str] = field(default_factory=list)  # why the model cannot (or should not) score them
    rows: list[dict[str, Any]] = field(default_factory=list)  # drift rows, scope input and segment
    status: str | None = None  # None: drift not measured (a problem prevented it)
    reasons: list[str] = field(default_factory=list)  # the measures at warn or worse
    # the date's customers as the model assigns them (cached when the drift was measured): scoring writes these
    # rows instead of applying the model a second time; `release` drops them
    scored: DataFrame | None = None


def release(ev: Evaluation | None) -> None:
    """Drop `ev`'s cached scored rows (once written, or when the stage refits instead)."""
    if ev is not None and ev.scored is not None:
        ev.scored.unpersist()
        ev.scored = None


def evaluate(model: SegmentationModel, features_df: DataFrame, cfg: Config, as_of: dt.date,
             keep_scored: bool = True) -> Evaluation:
    """Check that `model` can score `features_df` (the date's features with the attributes it reads) and
    measure the drift (one aggregation over the scored rows; with `keep_scored`, when the stage may score, they
    stay cached in `scored` for the write)."""
    ev = Evaluation(model, (as_of - dt.date.fromisoformat(model.meta.as_of_date)).days)
    try:
        model.check_features(features_df, as_of)
    except StageError as e:
        ev.problems.append(str(e))
        return ev
    if model.meta.settings != settings_fingerprint(cfg):
        ev.problems.append("the segment settings (" + ", ".join(SETTINGS_KEYS) + ") changed since the model was "
                           "fitted")
    if not model.meta.training:
        ev.problems.append("the model has no drift baseline (fitted by an earlier custseg)")
        return ev
    training = model.meta.training
    p95 = {int(s): float(v) for s, v in training["p95_distance"].items()}
    scored = D.scored(model, features_df)
    if keep_scored:
        ev.scored = scored = scored.cache()
    try:
        now = D.measure(model, scored, training["edges"], p95)
    except BaseException:
        release(ev)
        raise
    ev.rows, ev.status, ev.reasons = D.rows(model, now, D.Thresholds.of(cfg))
    log.info("segment: drift against model %s (fitted as of %s, %d days before): %s%s", model.run_id,
             model.meta.as_of_date, ev.age_days, ev.status, f" ({'; '.join(ev.reasons)})" if ev.reasons else "")
    return ev


def decide(mode: str, ev: Evaluation | None, max_age_days: int) -> tuple[str, list[str]]:
    """(score or retrain, the reasons) for segment.mode `mode`."""
    if mode == "score":
        return C.DECISION_SCORE, ["segment.mode=score"]
    if mode == "fit":
        return C.DECISION_RETRAIN, ["segment.mode=fit"]
    if ev is None:
        return C.DECISION_RETRAIN, ["no model fitted on or before the date yet"]
    if ev.problems:
        return C.DECISION_RETRAIN, ev.problems
    if ev.age_days >= max_age_days:
        return C.DECISION_RETRAIN, [f"the model is {ev.age_days} days old (segment.max_model_age_days="
                                    f"{max_age_days})"]
    if ev.status == C.STATUS_RETRAIN:
        return C.DECISION_RETRAIN, [r for r in ev.reasons if r.endswith(f"({C.STATUS_RETRAIN})")]
    return C.DECISION_SCORE, [f"drift {ev.status} against model {ev.model.run_id}, {ev.age_days} days old",
                              *ev.reasons]


def drift_rows(spark: SparkSession, as_of: dt.date, run_id: str, ev: Evaluation | None, decision: str,
               reasons: list[str]) -> DataFrame:
    """The date's segment_drift rows: the evaluation's, and the overall row with the decision (no model to
    evaluate: the overall row alone)."""
    common: dict[str, Any] = {C.AS_OF_DATE: as_of, C.RUN_ID: run_id}
    if ev is not None:
        common.update({C.MODEL_RUN_ID: ev.model.run_id, "model_age_days": ev.age_days,
                       "model_as_of_date": dt.date.fromisoformat(ev.model.meta.as_of_date)})
    overall_status = (ev.status if ev is not None and ev.status is not None
                      else C.STATUS_RETRAIN if ev is not None and ev.problems else None)
    overall = {"scope": C.DRIFT_SCOPE_OVERALL, "item": "all", "status": overall_status,
               "reasons": "; ".join(reasons), "decision": decision}
    rows = [*(ev.rows if ev is not None else []), overall]
    fields = catalog.SEGMENT_DRIFT_SCHEMA.fields
    data = [tuple({**common, **r}.get(f.name) for f in fields) for r in rows]
    return spark.createDataFrame(data, catalog.SEGMENT_DRIFT_SCHEMA)
