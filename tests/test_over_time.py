"""Segments over time: stable ids, the registry, drift and the refresh policy.

Unit tests on hand-made numbers (the assignment, matching, PSI, statuses, the policy, the registry, kept
names), then runs on generated logs: refits keep ids, and a planted change is flagged and refitted while an
unchanged log is scored.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custseg import runner
from custseg.core import columns as C
from custseg.core import config
from custseg.io import delta, registry
from custseg.io.models import BundleMeta
from custseg.sample import step as sample
from custseg.stages.explain import naming as N
from custseg.stages.explain import vocabulary as V
from custseg.stages.segment import drift as D
from custseg.stages.segment import refresh as R
from custseg.stages.segment import stable as S

REPO = Path(__file__).resolve().parents[1]


# --- the assignment and the matching ----------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_hungarian_finds_the_cheapest_assignment(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    n = 2 + seed % 5
    cost = [[rnd.random() * 10 for _ in range(n)] for _ in range(n)]
    got = S.hungarian(cost)
    best = min(itertools.permutations(range(n)), key=lambda p: sum(cost[i][p[i]] for i in range(n)))
    assert sorted(got) == list(range(n))
    assert sum(cost[i][got[i]] for i in range(n)) == pytest.approx(sum(cost[i][best[i]] for i in range(n)))


def test_match_is_one_to_one_optimal_and_bounded_by_the_distance() -> None:
    old = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]
    # new 0 is nearest old 0 and new 1 slightly nearer old 0 too, but the optimum gives new 1 old 1
    new = [[0.1, 0.0], [4.0, 0.0], [50.0, 50.0]]
    assert S.match(new, old, max_distance=7.0) == [0, 1, None]
    # beyond the maximum: no match even when it is the only candidate
    assert S.match([[0.0, 3.0]], [[0.0, 0.0]], max_distance=2.0) == [None]
    assert S.match([[0.0, 1.5]], [[0.0, 0.0]], max_distance=2.0) == [0]


def _meta(ids: list[int], centres: list[list[float]]) -> BundleMeta:
    return BundleMeta(run_id="prev", as_of_date="2024-01-31", features_version=1, algorithm="kmeans", k=len(ids),
                      clustering_col="scaled_features", inputs=[], cluster_to_segment=list(range(len(ids))),
                      centroids_model=centres, centroids_original=[{} for _ in ids], segment_ids=ids)


def test_stable_ids_keep_matched_ids_and_issue_new_ones_above_every_id_ever_issued() -> None:
    previous = _meta([0, 2, 5], [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    # clusters: 0 ~ old id 5, 1 new, 2 ~ old id 0, 3 new; spend order 3, 1, 2, 0
    new = [[0.0, 9.8], [30.0, 30.0], [0.2, 0.0], [-30.0, 0.0]]
    m = S.stable_ids(new, previous, spend_rank=[3, 1, 2, 0], max_distance=1.0, issued_max=7)
    assert m.cluster_to_segment == [5, 9, 0, 8]  # retired 6, 7 (and 2, unmatched) are never reused
    assert m.kept() == [0, 5] and m.new() == [8, 9]
    assert m.distances[0] == pytest.approx(0.2) and m.distances[1] is None
    assert S.first_ids([2, 0, 1], issued_max=-1) == [1, 2, 0]


# --- drift measures and the policy ----------------------------------------------------------------

def test_psi_and_statuses() -> None:
    assert D.psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    # (0.7 - 0.5) ln(0.7 / 0.5) + (0.3 - 0.5) ln(0.3 / 0.5)
    assert D.psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(0.2 * math.log(1.4) - 0.2 * math.log(0.6))
    assert D.psi([1.0, 0.0], [1.0, 0.0]) == pytest.approx(0.0)  # empty bins are floored, not infinite
    assert [D.status(v, (0.1, 0.25)) for v in (0.05, 0.1, 0.2, 0.25, None)] == ["ok", "warn", "warn", "retrain", "ok"]
    assert D.worst(["ok", "retrain", "warn"]) == "retrain" and D.worst([]) == "ok"


def test_measure_counts_bins_distances_and_each_segments_95th_percentile_in_one_pass(spark) -> None:  # type: ignore[no-untyped-def]
    from custseg.io.models import ModelInput

    x = ModelInput("x", "x")
    model: Any = type("M", (), {"meta": type("Meta", (), {"inputs": [x]})()})()
    # segment 0: distances 1..20, x 0.0 for the first ten and 1.0 for the rest; segment 1: one customer
    rows = [(f"c{i}", 0, float(i), 0.0 if i <= 10 else 1.0) for i in range(1, 21)] + [("d", 1, 5.0, 1.0)]
    df = spark.createDataFrame(rows, f"{C.CUSTOMER_ID} string, {C.SEGMENT_ID} int, {C.DISTANCE} double, "
                                     f"{x.imputed_col} double")
    m = D.measure(model, df, {"x": [0.5]}, None, with_p95=True)
    assert m["customers"] == 21 and m["bins"] == {"x": [10, 11]}  # x = 0 below the edge 0.5, x = 1 above
    # the 95th percentile of 1..20: the smallest value with at least 95% of them at or below it
    assert m["segments"] == {0: {"customers": 20, "mean_distance": 10.5, "far": None, "p95": 19.0},
                             1: {"customers": 1, "mean_distance": 5.0, "far": None, "p95": 5.0}}
    far = D.measure(model, df, {"x": [0.5]}, {0: 15.0, 1: 5.0})  # beyond the training's p95: 16..20
    assert far["segments"][0]["far"] == 5 and far["segments"][1]["far"] == 0 and far["segments"][0]["p95"] is None


def _evaluation(status: str | None, age: int, problems: list[str] | None = None) -> R.Evaluation:
    model: Any = type("M", (), {"run_id": "m1"})()
    return R.Evaluation(model, age, problems or [], [], status,
                        ["recency_days: population stability index 0.40 (retrain)", "segment 1: share change +6.0% "
                         "(warn)"] if status else [])


def test_the_refresh_policy() -> None:
    assert R.decide("fit", _evaluation("ok", 1), 90) == ("retrain", ["segment.mode=fit"])
    assert R.decide("score", _evaluation("retrain", 400), 90) == ("score", ["segment.mode=score"])
    assert R.decide("auto", None, 90) == ("retrain", ["no model fitted on or before the date yet"])
    assert R.decide("auto", _evaluation("ok", 1, ["the segment settings changed"]), 90) == (
        "retrain", ["the segment settings changed"])
    assert R.decide("auto", _evaluation("ok", 90), 90)[0] == "retrain"
    decision, reasons = R.decide("auto", _evaluation("retrain", 10), 90)
    assert decision == "retrain" and reasons == ["recency_days: population stability index 0.40 (retrain)"]
    decision, reasons = R.decide("auto", _evaluation("warn", 89), 90)
    assert decision == "score" and reasons[0] == "drift warn against model m1, 89 days old"


# --- the registry and kept names ------------------------------------------------------------------

def test_registry_keeps_every_id_with_its_dates_centres_and_names() -> None:
    d1, d2 = dt.date(2024, 1, 31), dt.date(2024, 2, 29)
    first = _meta([0, 1], [[0.0], [1.0]])
    first = BundleMeta(**{**first.__dict__, "centroids_original": [{"x": 1.0}, {"x": 2.0}]})
    rows = registry.after_fit({}, first, d1, "r1", {})
    rows = registry.with_names(rows, d1, "r1", {0: "champions", 1: "lost"})
    second = BundleMeta(**{**first.__dict__, "segment_ids": [0, 2], "centroids_original": [{"x": 1.1}, {"x": 5.0}]})
    rows = registry.after_fit(rows, second, d2, "r2", {0: 0.1, 2: None})
    assert sorted(rows) == [0, 1, 2]
    assert (rows[0]["status"], rows[0]["first_as_of"], rows[0]["last_as_of"]) == ("active", d1, d2)
    assert [h["match_distance"] for h in rows[0]["centre_history"]] == [None, 0.1]
    assert (rows[1]["status"], rows[1]["retired_as_of"], rows[1]["last_as_of"]) == ("retired", d2, d1)
    assert (rows[2]["created_as_of"], rows[2]["created_run_id"]) == (d2, "r2")
    assert registry.issued_max(rows) == 2
    assert registry.previous_names(rows, d2) == {0: "champions", 1: "lost"}
    assert registry.previous_names(rows, d1) == {}
    scored = registry.after_score(rows, second, dt.date(2024, 3, 31))
    assert scored[2]["last_as_of"] == dt.date(2024, 3, 31) and scored[1]["status"] == "retired"


def test_a_segment_keeps_its_name_while_its_rule_holds() -> None:
    naming = V.load_naming(str(REPO / "conf" / "naming.toml"))
    lost = next(r for r in naming.rules if r.name == "lost")
    seg = N.Segment(3, 100, 0.1, 0.05, {}, {}, {}, {"r": 1, "f": 1, "m": 1})
    assert lost.when.holds(seg.facts())
    assert N.kept_name("lost (lower spend)", seg, naming) == ("lost", lost)
    champion = N.Segment(3, 100, 0.1, 0.05, {}, {}, {}, {"r": 5, "f": 5, "m": 5})
    assert N.kept_name("lost", champion, naming) is None  # the profile clearly changed: named afresh
    assert N.kept_name(None, seg, naming) is None


# --- runs on generated logs -----------------------------------------------------------------------

D1, D2 = dt.date(2024, 6, 30), dt.date(2024, 7, 31)


def _config(root: Path, *extra: str) -> config.Config:
    return config.load(None, [
        f"input.path={root}/log.csv", f"generate.path={root}/log.csv", f"generate.truth_path={root}/truth",
        f"output.root={root}/out", "generate.seed=5", "generate.bad_row_fraction=0",
        "input.columns.customer_id=CustomerID", "input.columns.timestamp=InvoiceDate",
        "input.columns.quantity=Quantity", "input.columns.unit_price=UnitPrice",
        "input.columns.transaction_id=InvoiceNo", "input.columns.category=Category", "input.columns.channel=Channel",
        "input.columns.country=Country", "segment.k_range=[4, 7]", "segment.algorithms=['kmeans']",
        "segment.n_starts=2", "segment.max_iter=20", "segment.max_model_age_days=365", *extra])


def _segments(spark, cfg: config.Config, as_of: dt.date, version: int | None = None) -> dict[str, int]:  # type: ignore[no-untyped-def]
    df = delta.read(spark, cfg.table_path(C.TABLE_SEGMENTS), version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    return {r[0]: r[1] for r in df.select(C.CUSTOMER_ID, C.SEGMENT_ID).collect()}


def _same(a: dict[str, int], b: dict[str, int]) -> float:
    common = set(a) & set(b)
    return sum(a[c] == b[c] for c in common) / len(common)


@pytest.mark.e2e
def test_refits_keep_segment_ids(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path, "generate.customers=1000")
    sample.run(spark, cfg)
    first = runner.run(spark, cfg, ["ingest", "features", "segment"], D1).results["segment"]
    assert first.decision == "retrain" and first.kept_ids == []
    v1 = delta.version(spark, cfg.table_path(C.TABLE_SEGMENTS))
    before = _segments(spark, cfg, D1)

    # the same log refitted with another seed: at least 99% of the customers keep their segment id
    reseeded = runner.run_stage(spark, cfg.with_overrides({"segment.mode": "fit", "run.seed": 43}), "segment", D1)
    assert reseeded.kept_ids, reseeded.describe()
    assert _same(before, _segments(spark, cfg, D1)) >= 0.99

    # the same log with 10% more customers (customers 0..999 are the same ones): 95% of them keep their id
    grown = cfg.with_overrides({"generate.customers": 1100, "segment.mode": "fit"})
    sample.run(spark, grown)
    runner.run(spark, grown, ["ingest", "features", "segment"], D1)
    after = _segments(spark, grown, D1)
    assert len(after) > len(before)
    assert _same(before, after) >= 0.95
    reg = registry.read(spark, cfg.table_path(C.TABLE_SEGMENT_REGISTRY))
    assert set(after.values()) <= {s for s, r in reg.items() if r["status"] == "active"}
    assert all(len(r["centre_history"]) >= 1 for r in reg.values())
    assert _segments(spark, cfg, D1, v1) == before  # the first run's rows are still readable at its version


def _two_dates(spark, cfg: config.Config) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    sample.run(spark, cfg)
    runner.run(spark, cfg, ["ingest", "features", "segment"], D1)
    result = runner.run(spark, cfg, ["features", "segment"], D2).results["segment"]
    drift = (delta.read(spark, cfg.table_path(C.TABLE_SEGMENT_DRIFT)).filter(F.col(C.AS_OF_DATE) == F.lit(D2))
             .collect())
    return [{**r.asDict(), "decision_made": result.decision, "mode": result.mode} for r in drift]


@pytest.mark.e2e
def test_a_planted_change_is_flagged_and_refitted_an_unchanged_log_is_scored(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    changed = _two_dates(spark, _config(tmp_path / "changed", "generate.customers=1000",
                                        "generate.change_date=2024-07-01", "generate.arrivals=500"))
    overall = next(r for r in changed if r["scope"] == "overall")
    assert overall["status"] == "retrain" and overall["decision"] == "retrain", overall
    assert changed[0]["mode"] == "fit" and "(retrain)" in overall["reasons"]
    assert {r["item"] for r in changed if r["scope"] == "input"} >= {C.RECENCY_DAYS, C.TENURE_DAYS}

    unchanged = _two_dates(spark, _config(tmp_path / "unchanged", "generate.customers=1000"))
    overall = next(r for r in unchanged if r["scope"] == "overall")
    assert overall["status"] in ("ok", "warn") and overall["decision"] == "score", overall
    assert unchanged[0]["mode"] == "score"
    assert all(r["psi"] < 0.25 for r in unchanged if r["scope"] == "input")
    worst_psi = {name: max(r["psi"] for r in rows if r["scope"] == "input") for name, rows in
                 (("changed", changed), ("unchanged", unchanged))}
    assert worst_psi["changed"] > worst_psi["unchanged"], worst_psi
