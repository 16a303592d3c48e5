"""End to end on generated data with planted groups: generate -> ingest -> features -> segment -> profile.

One pipeline run (module fixture) serves most assertions; the determinism test runs segment and profile
a second time with the same configuration.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custseg import pipeline, runner
from custseg.core import columns as C
from custseg.core import config
from custseg.core.errors import SegmentationError
from custseg.io import delta as tables
from custseg.sample import step as sample
from custseg.stages.segment import select as segment
from custseg.stages.segment import validity

pytestmark = pytest.mark.e2e

AS_OF = dt.date(2024, 12, 31)
N_CUSTOMERS = 1500


def _config(root: Path, *extra: str) -> config.Config:
    return config.load(
        None,
        [
            f"input.path={root}/log.csv",
            f"generate.path={root}/log.csv",
            f"generate.truth_path={root}/truth",
            f"output.root={root}/out",
            f"generate.customers={N_CUSTOMERS}",
            "generate.seed=11",
            "generate.bad_row_fraction=0.002",
            "input.columns.customer_id=CustomerID",
            "input.columns.timestamp=InvoiceDate",
            "input.columns.quantity=Quantity",
            "input.columns.unit_price=UnitPrice",
            "input.columns.transaction_id=InvoiceNo",
            "input.columns.category=Category",
            "input.columns.channel=Channel",
            "input.columns.country=Country",
            "segment.k_range=[4, 8]",
            "segment.n_starts=2",
            "segment.max_iter=20",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def sample_run(spark, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("e2e")
    cfg = _config(root, f"attributes.path={root}/attributes", "attributes.categorical=['region']",
                  "attributes.numeric=['age']")
    sample.run(spark, cfg)
    _write_attributes(spark, cfg, root)
    summary = runner.run(spark, cfg, pipeline.STAGES, AS_OF)
    return {"cfg": cfg, "summary": summary, "root": root}


REGIONS = ("north", "south", "east", "west")


def _write_attributes(spark, cfg: config.Config, root: Path) -> None:  # type: ignore[no-untyped-def]
    """A customer attributes file: every champion lives in the north, everyone else anywhere; an age; one
    customer in ten has no row."""
    cid = F.col(C.CUSTOMER_ID)
    anywhere = F.element_at(F.array(*[F.lit(r) for r in REGIONS]), (F.abs(F.hash(cid, F.lit("r"))) % 4 + 1).cast("int"))
    (spark.read.parquet(cfg["generate.truth_path"])
     .filter(F.abs(F.hash(cid, F.lit("has"))) % 10 != 0)
     .select(cid, F.when(F.col("planted_group") == "champions", F.lit("north")).otherwise(anywhere).alias("region"),
             (20 + F.abs(F.hash(cid, F.lit("age"))) % 50).alias("age"))
     .coalesce(1).write.csv(str(root / "attributes"), header=True))


def _read(spark, cfg: config.Config, table: str):  # type: ignore[no-untyped-def]
    return tables.read(spark, cfg.table_path(table))


def test_segments_recover_the_planted_groups(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    truth = spark.read.parquet(cfg["generate.truth_path"])
    cont = (_read(spark, cfg, C.TABLE_SEGMENTS).join(truth, C.CUSTOMER_ID)
            .groupBy(C.SEGMENT_ID, "planted_group").count().collect())
    ari = validity.adjusted_rand_index([(r[0], r[1], r[2]) for r in cont])
    assert ari >= 0.8, f"adjusted Rand index {ari:.3f}"


def test_every_customer_with_features_has_exactly_one_segment(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    feats = _read(spark, cfg, C.TABLE_CUSTOMER_FEATURES).select(C.CUSTOMER_ID)
    segs = _read(spark, cfg, C.TABLE_SEGMENTS)
    assert segs.count() == feats.count() == segs.select(C.CUSTOMER_ID).distinct().count()
    assert feats.join(segs, C.CUSTOMER_ID, "left_anti").count() == 0
    assert segs.filter(F.col(C.DISTANCE).isNull() | (F.col(C.DISTANCE) < 0)).count() == 0


def test_model_selection_scores_both_algorithms_and_records_the_choice(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    ms = _read(spark, cfg, C.TABLE_MODEL_SELECTION).collect()
    assert {r["algorithm"] for r in ms} == {"kmeans", "bisecting_kmeans"}
    assert sorted({r["k"] for r in ms}) == [4, 5, 6, 7, 8]
    assert len(ms) == 10
    chosen = [r for r in ms if r["chosen"]]
    assert len(chosen) == 1
    for r in ms:
        assert r["silhouette"] is not None and -1.0 <= r["silhouette"] <= 1.0 and math.isfinite(r["silhouette"])
        assert r["cost"] > 0 and sum(r["cluster_sizes"]) == r["sample_rows"]
        assert r["max_iter"] == (10 if r["algorithm"] == "bisecting_kmeans" else 20)  # fewer while selecting
    best_eligible = max((r for r in ms if r["eligible"]), key=lambda r: r["silhouette"])
    assert chosen[0]["silhouette"] == best_eligible["silhouette"]
    # the second start went only to the candidates within segment.restart_margin of the best first start,
    # the chosen one among them; the others kept their first start
    assert chosen[0]["starts"] == 2
    assert {r["starts"] for r in ms} == {1, 2}
    assert all(r["seed"] == 42 for r in ms if r["starts"] == 1)
    seg = sample_run["summary"].results["segment"]
    assert (seg.algorithm, seg.k) == (chosen[0]["algorithm"], chosen[0]["k"])


def test_profiles_add_up_to_the_population(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    prof = _read(spark, cfg, C.TABLE_SEGMENT_PROFILES).collect()
    n_features = _read(spark, cfg, C.TABLE_CUSTOMER_FEATURES).count()
    segs = [r for r in prof if not r["is_population"]]
    pop = [r for r in prof if r["is_population"]]
    assert len(pop) == 1 and pop[0][C.SEGMENT_ID] == -1
    assert sum(r["customers"] for r in segs) == pop[0]["customers"] == n_features
    assert sum(r["customer_share"] for r in segs) == pytest.approx(1.0)
    assert sum(r["revenue_share"] for r in segs) == pytest.approx(1.0)
    total_spend = _read(spark, cfg, C.TABLE_CUSTOMER_FEATURES).agg(F.sum(C.TOTAL_SPEND)).first()[0]
    assert pop[0]["revenue"] == pytest.approx(total_spend)
    assert pop[0]["feature_lift"][C.GROSS_SPEND] == pytest.approx(1.0)
    # segment 0 is the most valuable: its mean gross spend is the highest
    by_id = sorted(segs, key=lambda r: r[C.SEGMENT_ID])
    means = [r["feature_mean"][C.GROSS_SPEND] for r in by_id]
    assert means == sorted(means, reverse=True)
    # weighted segment means give back the population mean
    weighted = sum(r["feature_mean"][C.RECENCY_DAYS] * r["customers"] for r in segs) / pop[0]["customers"]
    assert weighted == pytest.approx(pop[0]["feature_mean"][C.RECENCY_DAYS])
    assert set(pop[0]["centroid"]) >= {C.RECENCY_DAYS, C.GROSS_SPEND}


LAPSED_NAMES = ("at risk", "can't lose them", "hibernating", "lost")


def test_segment_names_match_the_planted_groups_they_hold(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    truth = spark.read.parquet(cfg["generate.truth_path"])
    held = (_read(spark, cfg, C.TABLE_SEGMENTS).join(truth, C.CUSTOMER_ID)
            .groupBy("planted_group", C.SEGMENT_ID).count().collect())
    most = {g: max((r for r in held if r[0] == g), key=lambda r: r[2])[1] for g in {r[0] for r in held}}
    described = {r[C.SEGMENT_ID]: r for r in _read(spark, cfg, C.TABLE_SEGMENT_DESCRIPTIONS).collect()}
    names = {i: r["name_rule"] for i, r in described.items()}
    assert names[most["lapsed"]] in LAPSED_NAMES, names
    assert names[most["new_customers"]] == "new customers", names
    assert "return" in names[most["bargain_returners"]], names
    # every segment once, with a unique name, rules measured on its customers, and one action with its reason
    segments = {r[0] for r in _read(spark, cfg, C.TABLE_SEGMENT_PROFILES).filter("segment_id >= 0")
                .select(C.SEGMENT_ID).collect()}
    assert set(described) == segments
    assert len({r[C.SEGMENT_NAME] for r in described.values()}) == len(described)
    for r in described.values():
        assert r["rules"] and all(0 <= x["coverage"] <= 1 and 0 <= x["precision"] <= 1 for x in r["rules"])
        assert r["action"] and r["action_reason"] and r["top_features"]
        assert r["rule_quality"] in ("good", "partial", "poor")
    assert len({r["tree_fidelity"] for r in described.values()}) == 1
    assert list(described.values())[0]["tree_fidelity"] >= 0.7


def test_attributes_are_profiled_by_segment(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    sizes = {r[0]: r[1] for r in _read(spark, cfg, C.TABLE_SEGMENTS).groupBy(C.SEGMENT_ID).count().collect()}
    rows = _read(spark, cfg, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES).collect()
    region = [r for r in rows if r[C.ATTRIBUTE] == "region"]
    for seg, size in sizes.items():  # every member counted once, those without attributes as unknown
        assert sum(r["customers"] for r in region if r[C.SEGMENT_ID] == seg) == size
    assert {r[C.ATTRIBUTE_VALUE] for r in region} == {*REGIONS, C.UNKNOWN_VALUE}
    truth = spark.read.parquet(cfg["generate.truth_path"])
    held = (_read(spark, cfg, C.TABLE_SEGMENTS).join(truth, C.CUSTOMER_ID).filter("planted_group = 'champions'")
            .groupBy(C.SEGMENT_ID).count().orderBy(F.desc("count")).first())
    north = next(r for r in region if r[C.SEGMENT_ID] == held[0] and r[C.ATTRIBUTE_VALUE] == "north")
    assert north["lift"] > 1.5 and north["p_value"] < 1e-6, north
    age = [r for r in rows if r[C.ATTRIBUTE] == "age" and r[C.ATTRIBUTE_VALUE] is None]
    assert len(age) == len(sizes) + 1 and all(20 <= r["mean"] < 70 for r in age)
    assert _read(spark, cfg, C.TABLE_CUSTOMER_ATTRIBUTES).count() == pytest.approx(0.9 * N_CUSTOMERS, rel=0.05)


def test_runs_table_describes_the_run(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    run_id = sample_run["summary"].run_id
    row = _read(spark, cfg, C.TABLE_RUNS).filter(F.col(C.RUN_ID) == run_id).first()
    assert row["outcome"] == "succeeded" and row["error"] is None
    assert row[C.AS_OF_DATE] == AS_OF and row["config_hash"] == cfg.digest() and row["seed"] == cfg["run.seed"]
    assert set(row["stage_seconds"]) == set(pipeline.STAGES)
    assert row["counts"]["ingest.input"] == (row["counts"]["ingest.clean"] + row["counts"]["ingest.quarantined"]
                                             + row["counts"]["ingest.duplicates"])
    assert row["algorithm"] in ("kmeans", "bisecting_kmeans") and row["table_versions"][C.TABLE_SEGMENTS] >= 0
    assert Path(row["model_path"]).is_dir()


def test_rerun_same_date_gives_same_segments_and_adds_no_rows(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    cfg = sample_run["cfg"]
    before = {t: _read(spark, cfg, t).count() for t in
              (C.TABLE_SEGMENTS, C.TABLE_SEGMENT_PROFILES, C.TABLE_MODEL_SELECTION, C.TABLE_CUSTOMER_FEATURES)}
    first = {r[0]: (r[1], r[2]) for r in _read(spark, cfg, C.TABLE_SEGMENTS)
             .select(C.CUSTOMER_ID, C.SEGMENT_ID, C.DISTANCE).collect()}
    rerun = runner.run(spark, cfg, ["features", "segment", "profile"], AS_OF)
    after = {t: _read(spark, cfg, t).count() for t in before}
    assert after == before
    second = {r[0]: (r[1], r[2]) for r in _read(spark, cfg, C.TABLE_SEGMENTS)
              .select(C.CUSTOMER_ID, C.SEGMENT_ID, C.DISTANCE).collect()}
    assert second.keys() == first.keys()
    assert all(second[c][0] == first[c][0] for c in first)
    assert all(second[c][1] == pytest.approx(first[c][1], abs=1e-9) for c in first)
    assert _read(spark, cfg, C.TABLE_SEGMENTS).select(C.RUN_ID).distinct().first()[0] == rerun.run_id


def test_bisecting_kmeans_is_not_decided_by_rounding_residue(spark, sample_run) -> None:  # type: ignore[no-untyped-def]
    # MLlib splits a cluster from its centre +- 1e-4 x the centre's norm. On centred data the root centre is
    # ~1e-16 from zero, and on this log a relative change of 1e-15 in one feature (what summing in another
    # order on a cluster does) changed every BisectingKMeans candidate (cost 7104.8 -> 4833.4 at k = 4). The
    # scaled space is not centred, so the same change moves the costs in their last digits only.
    from custseg.stages.segment import preprocess
    from custseg.stages.segment.step import usable_inputs

    cfg = sample_run["cfg"]
    feats = _read(spark, cfg, C.TABLE_CUSTOMER_FEATURES).filter(F.col(C.AS_OF_DATE) == F.lit(AS_OF))
    inputs, _, _ = usable_inputs(feats, cfg)

    def candidates(df) -> list[tuple[int, list[int], float]]:  # type: ignore[no-untyped-def]
        laid_out = df.transform(preprocess.with_canonical_layout(2))
        matrix = preprocess.preprocessing_pipeline(inputs).fit(laid_out).transform(laid_out) \
            .select(C.SCALED_VECTOR).cache()
        out = []
        for k in (4, 5, 6):
            _, c = segment.fit_and_score("bisecting_kmeans", k, matrix, C.SCALED_VECTOR, [42], 20, 0.0)
            out.append((k, c.cluster_sizes, c.cost or 0.0))
        matrix.unpersist()
        return out

    base = candidates(feats)
    nudged = candidates(feats.withColumn(C.GROSS_SPEND, F.col(C.GROSS_SPEND) * (1 + 1e-15)))
    assert [(k, sizes) for k, sizes, _ in nudged] == [(k, sizes) for k, sizes, _ in base]
    assert [c for _, _, c in nudged] == pytest.approx([c for _, _, c in base], rel=1e-9)
    assert all(min(sizes) > 0 for _, sizes, _ in base)  # no empty leaf


# --- guards, each on a purpose-built features table ------------------------------------------------

def _features_table(spark, root: Path, rows: list[tuple], *extra: str) -> config.Config:  # type: ignore[no-untyped-def]
    cfg = _config(root, "segment.features=[\"recency_days\", \"return_rate\"]", *extra)
    df = spark.createDataFrame(
        rows, f"{C.CUSTOMER_ID} string, {C.RECENCY_DAYS} int, {C.RETURN_RATE} double, {C.GROSS_SPEND} double"
    ).withColumn(C.AS_OF_DATE, F.lit(AS_OF))
    tables.replace_partition(df, cfg.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES, AS_OF)
    return cfg


def test_guard_fewer_customers_than_k(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _features_table(spark, tmp_path, [("a", 1, 0.0, 10.0), ("b", 2, 0.0, 20.0), ("c", 400, 0.5, 5.0)],
                          "segment.k_range=[2, 4]", "segment.algorithms=[\"kmeans\"]", "segment.min_segment_share=0.0")
    result = runner.run_stage(spark, cfg, "segment", AS_OF)
    ms = {r["k"]: r for r in _read(spark, cfg, C.TABLE_MODEL_SELECTION).collect()}
    assert ms[4]["outcome"].startswith("skipped: fewer customers (3) than k")
    assert ms[4]["silhouette"] is None and ms[2]["silhouette"] is not None
    assert result.k in (2, 3)


def test_guard_one_customer_is_a_clear_error(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _features_table(spark, tmp_path, [("a", 1, 0.0, 10.0)])
    with pytest.raises(SegmentationError, match="at least 2 are needed"):
        runner.run_stage(spark, cfg, "segment", AS_OF)
    assert not tables.exists(spark, cfg.table_path(C.TABLE_SEGMENTS))


def test_guard_no_varying_feature_is_a_clear_error(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _features_table(spark, tmp_path, [(c, 5, 0.1, 10.0) for c in "abcd"])
    with pytest.raises(SegmentationError, match="no feature varies"):
        runner.run_stage(spark, cfg, "segment", AS_OF)


def test_guard_zero_variance_feature_is_dropped_and_non_finite_values_imputed(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [("a", 1, 0.0, 1.0), ("b", 2, 0.0, 1.0), ("c", 300, float("nan"), 1.0), ("d", 310, float("inf"), 1.0)]
    cfg = _features_table(spark, tmp_path, rows, "segment.k=2", "segment.algorithm=kmeans",
                          "segment.min_segment_share=0.0")
    result = runner.run_stage(spark, cfg, "segment", AS_OF)
    # return_rate: NaN and inf become missing, imputed with the median of [0.0, 0.0] -> constant -> dropped
    assert result.non_finite_values == {C.RETURN_RATE: 2}
    assert result.model_inputs == [C.RECENCY_DAYS]
    segs = {r[0]: r[1] for r in _read(spark, cfg, C.TABLE_SEGMENTS).select(C.CUSTOMER_ID, C.SEGMENT_ID).collect()}
    assert segs["a"] == segs["b"] != segs["c"] == segs["d"]


def test_guard_small_segments_are_recorded_and_not_chosen(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # two groups of 10 and a pair beyond the second (log recency 0.7-1.4, 4.6 and 6.0): k=2 splits the groups
    # (10 and 12 customers: eligible), k=3 isolates the pair (share 2/22 < 0.2), at any start
    rows = [(f"a{i}", 1 + i % 3, 0.0, 10.0) for i in range(10)] + [(f"b{i}", 100 + i % 3, 0.0, 10.0)
                                                                    for i in range(10)]
    rows += [("x1", 400, 0.0, 1.0), ("x2", 401, 0.0, 1.0)]
    cfg = _features_table(spark, tmp_path, rows, "segment.k_range=[2, 3]", "segment.algorithms=[\"kmeans\"]",
                          "segment.min_segment_share=0.2")
    runner.run_stage(spark, cfg, "segment", AS_OF)
    ms = {r["k"]: r for r in _read(spark, cfg, C.TABLE_MODEL_SELECTION).collect()}
    assert not ms[3]["eligible"] and "below 20.0%" in ms[3]["outcome"]
    assert ms[3]["min_share"] == pytest.approx(2 / 22)
    assert [k for k, r in ms.items() if r["chosen"]] == [2]


def test_guard_single_cluster_is_degenerate_not_a_crash(spark) -> None:  # type: ignore[no-untyped-def]
    from pyspark.ml.linalg import Vectors

    df = spark.createDataFrame([(Vectors.dense([1.0, 1.0]),)] * 6, [C.SCALED_VECTOR]).cache()
    _, cand = segment.fit_and_score("kmeans", 3, df, C.SCALED_VECTOR, [1], 5, 0.0)
    assert cand.n_clusters == 1 and cand.silhouette is None and not cand.eligible
    assert cand.outcome == "degenerate: a single cluster"
    df.unpersist()


def test_customer_attributes_as_clustering_inputs_fit_score_profile_and_explain(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # recency interleaves the two regions, so only the attributes tell them apart
    north, south = "abcd", "efgh"
    rows = [(c, r, 0.0, 10.0, 10.0) for c, r in zip(north + south, (1, 3, 5, 7, 2, 4, 6, 8), strict=True)]
    cfg = _config(tmp_path, "segment.features=[\"recency_days\", \"return_rate\"]", "segment.k=2",
                  "segment.algorithm=kmeans", "segment.min_segment_share=0.0", f"attributes.path={tmp_path}/a.csv",
                  "attributes.cluster_on=['region', 'age']")
    feats = spark.createDataFrame(rows, f"{C.CUSTOMER_ID} string, {C.RECENCY_DAYS} int, {C.RETURN_RATE} double, "
                                        f"{C.GROSS_SPEND} double, {C.TOTAL_SPEND} double").withColumn(C.AS_OF_DATE,
                                                                                                   F.lit(AS_OF))
    tables.replace_partition(feats, cfg.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES, AS_OF)
    attrs = spark.createDataFrame([(c, "north", 30.0 + i) for i, c in enumerate(north)]
                                  + [(c, "south", 60.0 + i) for i, c in enumerate(south[:3])],
                                  f"{C.CUSTOMER_ID} string, region string, age double")  # h: no attributes
    tables.overwrite(attrs, cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES), C.TABLE_CUSTOMER_ATTRIBUTES)
    fitted = runner.run_stage(spark, cfg, "segment", AS_OF)
    assert fitted.model_inputs == [C.RECENCY_DAYS, "attribute.region=north", "attribute.region=south", "attribute.age"]
    segs = {r[0]: r[1] for r in _read(spark, cfg, C.TABLE_SEGMENTS).select(C.CUSTOMER_ID, C.SEGMENT_ID).collect()}
    # h, without attributes, is 0 on both region indicators: it may go either way
    assert len({segs[c] for c in north}) == 1 and len({segs[c] for c in "efg"}) == 1
    assert segs["a"] != segs["e"]
    scored = runner.run_stage(spark, cfg.with_overrides({"segment.mode": "score"}), "segment", AS_OF)
    assert scored.model_inputs == fitted.model_inputs
    again = {r[0]: r[1] for r in _read(spark, cfg, C.TABLE_SEGMENTS).select(C.CUSTOMER_ID, C.SEGMENT_ID).collect()}
    assert again == segs
    runner.run(spark, cfg, ["profile", "explain"], AS_OF)
    centre = {r[C.SEGMENT_ID]: r["centroid"] for r in _read(spark, cfg, C.TABLE_SEGMENT_PROFILES).collect()}
    # the north segment's share of northerners: 4 of 4, or 4 of 5 when h (no attributes) joined it
    assert centre[segs["a"]]["attribute.region=north"] == pytest.approx(4 / (4 + (segs["h"] == segs["a"])))
    assert centre[segs["e"]]["attribute.region=north"] == pytest.approx(0.0)
    described = _read(spark, cfg, C.TABLE_SEGMENT_DESCRIPTIONS).collect()
    assert {r["tree_fidelity"] for r in described} == {1.0}
    assert all("attribute." in r["rules"][0]["condition"] for r in described), [r["rules"] for r in described]


def test_clustering_on_attributes_without_attributes_is_a_config_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(config.ConfigError, match=r"^attributes.cluster_on: needs customer attributes: set "
                                                 r"attributes.path$"):
        _config(tmp_path, "attributes.cluster_on=['region']")
