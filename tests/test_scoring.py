"""The model bundle over time, on generated data: fit as of one date, then score (without refitting) the
same date, a later date with new customers, in a fresh session through the CLI, and a mismatched features
table; profile reads the feature version its segment run used.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F

from custseg import runner
from custseg.core import columns as C
from custseg.core import config
from custseg.core.errors import ModelMismatchError
from custseg.io import delta, models
from custseg.sample import step as sample

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
FIT_DATE = dt.date(2024, 9, 30)
LATER = dt.date(2024, 12, 31)  # the generator starts new customers within 90 days of its end date


def _settings(root: Path) -> list[str]:
    return [
        f"input.path={root}/log.csv", f"generate.path={root}/log.csv", f"generate.truth_path={root}/truth",
        f"output.root={root}/out", "generate.customers=800", "generate.seed=5",
        "input.columns.customer_id=CustomerID", "input.columns.timestamp=InvoiceDate",
        "input.columns.quantity=Quantity", "input.columns.unit_price=UnitPrice",
        "input.columns.transaction_id=InvoiceNo", "input.columns.category=Category",
        "input.columns.channel=Channel", "input.columns.country=Country",
        "segment.k=5", "segment.algorithm=kmeans", "segment.n_starts=1", "segment.max_iter=20",
    ]


@pytest.fixture(scope="module")
def fitted(spark, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("scoring")
    settings = _settings(root)
    cfg = config.load(None, settings)
    sample.run(spark, cfg)
    runner.run(spark, cfg, ["ingest", "features"], FIT_DATE)
    runner.run(spark, cfg, ["features"], LATER)
    summary = runner.run(spark, cfg, ["segment", "profile"], FIT_DATE)
    return {"cfg": cfg, "root": root, "settings": settings, "run_id": summary.run_id}


def _segments(spark, cfg: config.Config, as_of: dt.date) -> dict[str, tuple[int, float, str, str]]:  # type: ignore[no-untyped-def]
    rows = delta.read(spark, cfg.table_path(C.TABLE_SEGMENTS)).filter(F.col(C.AS_OF_DATE) == F.lit(as_of)).collect()
    return {r[C.CUSTOMER_ID]: (r[C.SEGMENT_ID], r[C.DISTANCE], r[C.MODEL_RUN_ID], r[C.ASSIGNMENT]) for r in rows}


def _scoring(cfg: config.Config, model: str = "latest") -> config.Config:
    return cfg.with_overrides({"segment.mode": "score", "segment.model": model})


def test_scoring_the_training_date_reproduces_every_fitted_segment(spark, fitted) -> None:  # type: ignore[no-untyped-def]
    cfg = fitted["cfg"]
    fit_rows = _segments(spark, cfg, FIT_DATE)
    assert {v[3] for v in fit_rows.values()} == {C.ASSIGNMENT_FITTED}
    result = runner.run_stage(spark, _scoring(cfg), "segment", FIT_DATE)
    assert result.mode == "score" and result.model_run_id == fitted["run_id"]  # type: ignore[attr-defined]
    scored = _segments(spark, cfg, FIT_DATE)
    assert scored.keys() == fit_rows.keys() and len(scored) > 500
    assert all(scored[c][0] == fit_rows[c][0] for c in fit_rows)  # the same segment for every customer
    assert all(scored[c][1] == pytest.approx(fit_rows[c][1], abs=1e-9) for c in fit_rows)
    assert {v[2:] for v in scored.values()} == {(fitted["run_id"], C.ASSIGNMENT_SCORED)}


def test_scoring_a_later_date_gives_new_customers_segments_and_keeps_everyone(spark, fitted, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cfg = fitted["cfg"]
    feats = delta.read(spark, cfg.table_path(C.TABLE_CUSTOMER_FEATURES))
    at_fit = {r[0] for r in feats.filter(F.col(C.AS_OF_DATE) == F.lit(FIT_DATE)).select(C.CUSTOMER_ID).collect()}
    later = {r[0] for r in feats.filter(F.col(C.AS_OF_DATE) == F.lit(LATER)).select(C.CUSTOMER_ID).collect()}
    new_customers = later - at_fit
    assert len(new_customers) > 10  # the generated log's new customers
    applied: list[int] = []
    checked: list[int] = []
    transform, map_keys = PipelineModel.transform, models.map_keys
    monkeypatch.setattr(PipelineModel, "transform",
                        lambda self, df, params=None: applied.append(1) or transform(self, df, params))
    monkeypatch.setattr(models, "map_keys", lambda df, cols: checked.append(1) or map_keys(df, cols))
    spark.catalog.clearCache()
    result = runner.run_stage(spark, _scoring(cfg), "segment", LATER)  # latest model on or before LATER
    monkeypatch.undo()
    # the model is applied once, and the features checked against it once (a pass over them each): the rows its
    # drift measure scored (cached) are the rows written, then released
    assert len(applied) == 1 and len(checked) == 1
    assert spark._jsparkSession.sharedState().cacheManager().isEmpty()
    scored = _segments(spark, cfg, LATER)
    assert scored.keys() == later  # everyone, once
    assert result.customers == len(later)  # type: ignore[attr-defined]
    assert {v[0] for v in scored.values()} <= set(range(5))
    assert {scored[c][0] for c in new_customers} and all(scored[c][1] >= 0 for c in new_customers)
    assert sum(result.segment_sizes) == len(later)  # type: ignore[attr-defined]


def test_a_saved_bundle_scores_identically_in_a_fresh_session_through_the_cli(spark, fitted) -> None:  # type: ignore[no-untyped-def]
    cfg = fitted["cfg"]
    runner.run_stage(spark, _scoring(cfg, fitted["run_id"]), "segment", LATER)
    in_process = _segments(spark, cfg, LATER)
    args = [sys.executable, "-m", "custseg.cli", "score", "--conf", str(REPO / "conf" / "local.toml"),
            "--as-of", str(LATER), "--model", fitted["run_id"], "--set", "spark.driver_memory=1g",
            "--set", "spark.conf.spark.ui.enabled=false", *[a for s in fitted["settings"] for a in ("--set", s)]]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"scored with model {fitted['run_id']}" in out.stdout
    fresh = _segments(spark, cfg, LATER)
    assert fresh.keys() == in_process.keys()
    assert all(fresh[c][0] == in_process[c][0] and fresh[c][1] == pytest.approx(in_process[c][1], abs=1e-12)
               for c in fresh)


def test_a_bundle_round_trips_and_names_a_mismatch(spark, fitted, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = fitted["cfg"]
    path = models.find(spark, cfg.table_path(C.TABLE_MODELS), LATER, "latest")
    bundle = models.load(spark, path)
    assert bundle.run_id == fitted["run_id"] and bundle.meta.as_of_date == str(FIT_DATE)
    assert bundle.meta.k == 5 and sorted(bundle.meta.cluster_to_segment) == list(range(5))
    assert [i.name for i in bundle.meta.inputs][:2] == [C.RECENCY_DAYS, C.TENURE_DAYS]
    assert len(bundle.meta.centroids_original) == 5 and bundle.meta.features_version is not None
    # segment ids follow the members' mean gross spend, highest first (the centre's gross spend is the mean in
    # the log-compressed model space mapped back, which need not be in the same order)
    fit_feats = delta.read(spark, cfg.table_path(C.TABLE_CUSTOMER_FEATURES)) \
        .filter(F.col(C.AS_OF_DATE) == F.lit(FIT_DATE))
    segs = delta.read(spark, cfg.table_path(C.TABLE_SEGMENTS)).filter(F.col(C.AS_OF_DATE) == F.lit(FIT_DATE))
    means = dict(segs.join(fit_feats, C.CUSTOMER_ID).groupBy(C.SEGMENT_ID).agg(F.avg(C.GROSS_SPEND)).collect())
    assert [means[s] for s in range(5)] == sorted(means.values(), reverse=True)
    feats = delta.read(spark, cfg.table_path(C.TABLE_CUSTOMER_FEATURES)).filter(F.col(C.AS_OF_DATE) == F.lit(LATER))
    with pytest.raises(ModelMismatchError, match=rf"cannot be scored with model {bundle.run_id}: missing column\(s\) "
                                                 rf"{C.RECENCY_DAYS}$"):
        bundle.check_features(feats.drop(C.RECENCY_DAYS), LATER)

    # a model fitted on category shares refuses features whose category keys differ
    shares = cfg.with_overrides({"output.root": f"{fitted['root']}/out_shares",
                                 "segment.features": [C.RECENCY_DAYS, C.CATEGORY_SPEND_SHARE], "segment.k": 3})
    delta.replace_partition(feats, shares.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES, LATER)
    runner.run_stage(spark, shares, "segment", LATER)
    fewer = feats.withColumn(C.CATEGORY_SPEND_SHARE, F.map_filter(C.CATEGORY_SPEND_SHARE, lambda k, v: k != "books"))
    delta.replace_partition(fewer.withColumn(C.AS_OF_DATE, F.lit(LATER + dt.timedelta(days=1))),
                            shares.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES,
                            LATER + dt.timedelta(days=1))
    with pytest.raises(ModelMismatchError, match="the category_spend_share keys differ from the model's "
                                                 r"\(missing: books; new: -\)"):
        runner.run_stage(spark, _scoring(shares), "segment", LATER + dt.timedelta(days=1))


def test_profile_reads_the_features_its_segment_run_used(spark, fitted) -> None:  # type: ignore[no-untyped-def]
    cfg = fitted["cfg"]
    runner.run_stage(spark, cfg, "profile", FIT_DATE)

    def profile() -> dict[int, Any]:
        rows = delta.read(spark, cfg.table_path(C.TABLE_SEGMENT_PROFILES)).filter(
            F.col(C.AS_OF_DATE) == F.lit(FIT_DATE))
        return {r[C.SEGMENT_ID]: r.asDict(recursive=True) for r in rows.drop(C.RUN_ID).collect()}

    before = profile()
    # features computed again for the date, with fewer top categories: other share keys than segment used
    runner.run_stage(spark, cfg.with_overrides({"features.top_categories": 2}), "features", FIT_DATE)
    runner.run_stage(spark, cfg, "profile", FIT_DATE)
    after = profile()
    assert after == before
    assert len(before[-1]["feature_mean"]) > 20
