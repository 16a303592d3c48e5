"""Segment, drift: how far a date's customers are from what a model was trained on.

At fit, the bundle keeps a baseline of its training customers (`baseline`): per model input the edges of
drift.bins quantile bins (in model units: transformed and imputed) and the share of customers in each bin;
per segment its share of customers, the mean distance to its centre and the 95th percentile of that
distance. For a later date (`measure`, `rows`) the same quantities give:
- per input, the population stability index over the training bins, sum((a - e) * ln(a / e));
- per segment, the change of its share (absolute points), the relative change of its mean distance, and
  the share of its customers farther from its centre than the training's 95th percentile (0.05 at
  training);
- overall, the worst status (ok / warn / retrain by the drift.* thresholds) and the reasons.
Both are one aggregation over the customers grouped by segment: only k rows reach the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.config import Config
from custseg.io.models import SegmentationModel

PSI_FLOOR = 1e-4  # a bin share of 0 counts as this much, so that the index stays finite
FAR_QUANTILE = 0.95
STATUS_ORDER = (C.STATUS_OK, C.STATUS_WARN, C.STATUS_RETRAIN)


@dataclass(frozen=True)
class Thresholds:
    """The drift.* (warn, retrain) thresholds of each measure."""

    psi: tuple[float, float]
    share_change: tuple[float, float]
    far_share: tuple[float, float]
    distance_change: tuple[float, float]

    @staticmethod
    def of(cfg: Config) -> Thresholds:
        def pair(name: str) -> tuple[float, float]:
            return float(cfg[f"drift.{name}_warn"]), float(cfg[f"drift.{name}_retrain"])

        return Thresholds(pair("psi"), pair("share_change"), pair("far_share"), pair("distance_change"))


def status(value: float | None, limits: tuple[float, float]) -> str:
    """retrain at or above the retrain threshold, warn at or above the warn threshold, else ok (None: ok)."""
    if value is None or math.isnan(value):
        return C.STATUS_OK
    if value >= limits[1]:
        return C.STATUS_RETRAIN
    return C.STATUS_WARN if value >= limits[0] else C.STATUS_OK


def worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=STATUS_ORDER.index, default=C.STATUS_OK)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two distributions over the same bins."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, PSI_FLOOR), max(a, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def scored(model: SegmentationModel, features_df: DataFrame) -> DataFrame:
    """customer_id, segment_id, distance and each input in model units, under `model`."""
    cols = [i.imputed_col for i in model.meta.inputs]
    return model.assign_predicted(model.pipeline.transform(features_df), keep=cols)


def _bin(x: Column, edges: Sequence[float]) -> Column:
    """The bin of x: the number of edges below it ((-inf, e1] is bin 0)."""
    return F.size(F.filter(F.array(*[F.lit(float(e)) for e in edges]), lambda e: e < x))


def measure(model: SegmentationModel, scored_df: DataFrame, edges: Mapping[str, Sequence[float]],
            p95: Mapping[int, float] | None, with_p95: bool = False) -> dict[str, Any]:
    """Per segment: customers, mean distance, customers beyond `p95` (when given), its own 95th percentile
    distance (`with_p95`) and, per input, the customers in each bin of `edges`. One aggregation; k rows
    collected. Returns the counts summed up:
    {customers, segments: {id: {customers, mean_distance, far, p95}}, bins: {input: [counts]}}."""
    aggs = [F.count(F.lit(1)).alias("n"), F.avg(C.DISTANCE).alias("mean_distance")]
    if with_p95:
        aggs.append(F.percentile_approx(C.DISTANCE, FAR_QUANTILE, 10_000).alias("p95"))
    if p95:
        limits = F.create_map(*[x for s, v in p95.items() for x in (F.lit(int(s)), F.lit(float(v)))])
        aggs.append(F.count_if(F.col(C.DISTANCE) > F.element_at(limits, F.col(C.SEGMENT_ID))).alias("far"))
    names = {i.name: i.imputed_col for i in model.meta.inputs if i.name in edges}
    for j, (name, col) in enumerate(sorted(names.items())):
        b = _bin(F.col(col), edges[name])
        aggs += [F.count_if(b == k).alias(f"b{j}_{k}") for k in range(len(edges[name]) + 1)]
    rows = scored_df.groupBy(C.SEGMENT_ID).agg(*aggs).collect()
    segments = {int(r[C.SEGMENT_ID]): {"customers": int(r["n"]), "mean_distance": float(r["mean_distance"]),
                                       "far": int(r["far"]) if p95 else None,
                                       "p95": float(r["p95"]) if with_p95 else None} for r in rows}
    bins = {name: [sum(int(r[f"b{j}_{k}"]) for r in rows) for k in range(len(edges[name]) + 1)]
            for j, (name, _) in enumerate(sorted(names.items()))}
    return {"customers": sum(s["customers"] for s in segments.values()), "segments": segments, "bins": bins}


def baseline(model: SegmentationModel, features_df: DataFrame, n_bins: int) -> dict[str, Any]:
    """The training baseline the bundle keeps (JSON-ready): bin edges and shares per input, share, mean and
    95th percentile distance per segment. Two passes over the customers (quantiles, then counts)."""
    rows = scored(model, features_df).cache()
    try:
        probs = [b / n_bins for b in range(1, n_bins)]
        inputs = model.meta.inputs
        q = rows.agg(*[F.percentile_approx(i.imputed_col, probs, 10_000).alias(f"q{j}")
                       for j, i in enumerate(inputs)]).first()
        assert q is not None
        edges = {i.name: sorted({float(v) for v in (q[f"q{j}"] or [])}) for j, i in enumerate(inputs)}
        m = measure(model, rows, edges, None, with_p95=True)
    finally:
        rows.unpersist()
    n = m["customers"]
    return {
        "bins": n_bins, "customers": n, "edges": edges,
        "bin_shares": {name: [c / n for c in counts] for name, counts in m["bins"].items()},
        "segment_shares": {str(s): v["customers"] / n for s, v in m["segments"].items()},
        "mean_distance": {str(s): v["mean_distance"] for s, v in m["segments"].items()},
        "p95_distance": {str(s): v["p95"] for s, v in m["segments"].items()},
    }


def rows(model: SegmentationModel, now: dict[str, Any], limits: Thresholds) -> tuple[list[dict[str, Any]], str,
                                                                                      list[str]]:
    """The drift rows of one date (scope input and segment) from `measure`'s counts, the overall status and
    its reasons (one per measure at warn or worse)."""
    train = model.meta.training
    out: list[dict[str, Any]] = []
    reasons: list[str] = []
    n = max(now["customers"], 1)
    for name, counts in sorted(now["bins"].items()):
        value = psi(train["bin_shares"][name], [c / n for c in counts])
        st = status(value, limits.psi)
        out.append({"scope": C.DRIFT_SCOPE_INPUT, "item": name, "psi": value, "status": st})
        if st != C.STATUS_OK:
            reasons.append(f"{name}: population stability index {value:.2f} ({st})")
    for s in model.meta.segment_ids:
        seg = now["segments"].get(s, {"customers": 0, "mean_distance": None, "far": 0})
        t_share, t_dist = train["segment_shares"].get(str(s), 0.0), train["mean_distance"].get(str(s))
        share = seg["customers"] / n
        dist = seg["mean_distance"]
        dist_change = (dist - t_dist) / t_dist if dist is not None and t_dist else None
        far = seg["far"] / seg["customers"] if seg["customers"] else None
        checks = [("share change", share - t_share, abs(share - t_share), limits.share_change, "{:+.1%}"),
                  ("mean distance change", dist_change, abs(dist_change) if dist_change is not None else None,
                   limits.distance_change, "{:+.0%}"),
                  ("customers beyond the training's 95th percentile distance", far, far, limits.far_share, "{:.1%}")]
        statuses = []
        for what, shown, value, lim, fmt in checks:
            st = status(value, lim)
            statuses.append(st)
            if st != C.STATUS_OK and shown is not None:
                reasons.append(f"segment {s}: {what} {fmt.format(shown)} ({st})")
        out.append({"scope": C.DRIFT_SCOPE_SEGMENT, "item": str(s), C.SEGMENT_ID: s, "training_share": t_share,
                    "share": share, "share_change": share - t_share, "training_mean_distance": t_dist,
                    "mean_distance": dist, "mean_distance_change": dist_change, "far_share": far,
                    "status": worst(statuses)})
    return out, worst([r["status"] for r in out]), reasons
