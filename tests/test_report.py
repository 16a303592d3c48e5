"""The report stage, structurally: the page has the sections its data supports and one line for each panel it
cannot show, its numbers are the tables', hostile strings stay text, and a run with one segment or one date
degrades cleanly. The file is written atomically.

One pipeline run over two dates (600 generated customers) serves the module; `pipeline_run`, `over_time_report`
and `one_segment_report` cache what they build, so tests/test_report_browser.py (which imports them) reuses the
same run when both modules run in one session.
"""

from __future__ import annotations

import datetime as dt
import html as html_module
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custseg import runner
from custseg.core import catalog, config
from custseg.core import columns as C
from custseg.core.errors import StageError
from custseg.io import delta, lineage
from custseg.sample import step as sample
from custseg.stages.report import sample as S
from custseg.stages.report.files import Folder
from custseg.stages.report.step import report_folder

pytestmark = pytest.mark.e2e

AS_OF_1, AS_OF_2 = dt.date(2024, 9, 30), dt.date(2024, 12, 31)
N_CUSTOMERS, MAP_POINTS = 600, 300
STAGES = ["ingest", "attributes", "features", "segment", "profile", "explain", "report"]
HOSTILE = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">"\'&amp;%{x}'
_BUILT: dict[str, dict[str, Any]] = {}  # what the builders made, once per test session


def _config(root: Path, *extra: str) -> config.Config:
    return config.load(None, [
        f"input.path={root}/log.csv", f"generate.path={root}/log.csv", f"generate.truth_path={root}/truth",
        f"output.root={root}/out", f"generate.customers={N_CUSTOMERS}", "generate.seed=11",
        "generate.bad_row_fraction=0.002", "input.columns.customer_id=CustomerID",
        "input.columns.timestamp=InvoiceDate", "input.columns.quantity=Quantity", "input.columns.unit_price=UnitPrice",
        "input.columns.transaction_id=InvoiceNo", "input.columns.category=Category", "input.columns.channel=Channel",
        "input.columns.country=Country", "segment.k_range=[3, 5]", "segment.n_starts=1", "segment.max_iter=15",
        "segment.mode=fit", f"report.map_points={MAP_POINTS}", *extra])


def _html(cfg: config.Config, as_of: dt.date) -> tuple[Path, str, dict[str, Any]]:
    folder = Path(report_folder(str(cfg["output.root"]), as_of))
    return (folder / "index.html", (folder / "index.html").read_text(encoding="utf-8"),
            json.loads((folder / "summary.json").read_text(encoding="utf-8")))


def _rows(spark, cfg: config.Config, table: str, as_of: dt.date) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    df = delta.read(spark, cfg.table_path(table))
    return [r.asDict(recursive=True) for r in df.filter(F.col(C.AS_OF_DATE) == F.lit(as_of)).collect()]


def pipeline_run(spark, factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """ingest, attributes, features, segment, profile, explain and report for two dates; the tables as they were."""
    if "run" in _BUILT:
        return _BUILT["run"]
    root = factory.mktemp("report")
    cfg = _config(root, f"attributes.path={root}/attributes", "attributes.categorical=['region']",
                  "attributes.numeric=['age']")
    sample.run(spark, cfg)
    cid = F.col(C.CUSTOMER_ID)
    regions = F.array(*[F.lit(r) for r in ("north", "south", "east", "west")])
    (spark.read.parquet(cfg["generate.truth_path"])
     .select(cid, F.element_at(regions, (F.abs(F.hash(cid)) % 4 + 1).cast("int")).alias("region"),
             (20 + F.abs(F.hash(cid, F.lit("age"))) % 50).alias("age"))
     .coalesce(1).write.csv(str(root / "attributes"), header=True))
    first = runner.run(spark, cfg, STAGES, AS_OF_1)
    out: dict[str, Any] = {"cfg": cfg, "first": first, "html_1": _html(cfg, AS_OF_1)}
    out["transactions"] = delta.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS)).count()
    out["quarantine"] = {r[0]: r[1] for r in delta.read(spark, cfg.table_path(C.TABLE_QUARANTINE))
                         .groupBy(C.REASON).count().collect()}
    second = runner.run(spark, cfg, STAGES[2:], AS_OF_2)
    out |= {"second": second, "html_2": _html(cfg, AS_OF_2),
            "profiles": _rows(spark, cfg, C.TABLE_SEGMENT_PROFILES, AS_OF_2),
            "descriptions": _rows(spark, cfg, C.TABLE_SEGMENT_DESCRIPTIONS, AS_OF_2),
            "selection": _rows(spark, cfg, C.TABLE_MODEL_SELECTION, AS_OF_2),
            "runs": {r[C.RUN_ID]: r.asDict() for r in delta.read(spark, cfg.table_path(C.TABLE_RUNS)).collect()}}
    _BUILT["run"] = out
    return out


def over_time_report(spark, factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The second date's report again (the report stage alone), after writing migration and KPIs for the date (no
    monitor stage ran) and putting hostile strings in a segment's name, action and rule and in an attribute value."""
    if "over_time" in _BUILT:
        return _BUILT["over_time"]
    run = pipeline_run(spark, factory)
    cfg = run["cfg"]
    segs = delta.read(spark, cfg.table_path(C.TABLE_SEGMENTS)).select(C.AS_OF_DATE, C.CUSTOMER_ID, C.SEGMENT_ID)
    before = segs.filter(F.col(C.AS_OF_DATE) == AS_OF_1).select(C.CUSTOMER_ID, F.col(C.SEGMENT_ID).alias("f"))
    after = segs.filter(F.col(C.AS_OF_DATE) == AS_OF_2).select(C.CUSTOMER_ID, F.col(C.SEGMENT_ID).alias("t"))
    moves = [(r["f"], r["t"], r["count"]) for r in before.join(after, C.CUSTOMER_ID, "full").groupBy("f", "t").count()
             .collect()]
    migration = [(AS_OF_2, AS_OF_1, f, t, "entered" if f is None else "left" if t is None else
                  "stayed" if f == t else "moved", n, None, None, "hand") for f, t, n in moves]
    _write(spark, cfg, C.TABLE_SEGMENT_MIGRATION, catalog.SEGMENT_MIGRATION_SCHEMA, migration)
    kpis = [(d, r[C.SEGMENT_ID], kpi, float(r[col]), None, None, None, None, "hand", "hand")
            for d in (AS_OF_1, AS_OF_2) for r in _rows(spark, cfg, C.TABLE_SEGMENT_PROFILES, d)
            for kpi, col in (("customers", "customers"), ("revenue", "revenue"))]
    for d in (AS_OF_1, AS_OF_2):
        _write(spark, cfg, C.TABLE_SEGMENT_KPIS, catalog.SEGMENT_KPIS_SCHEMA, [k for k in kpis if k[0] == d], d)
    described = sorted(_rows(spark, cfg, C.TABLE_SEGMENT_DESCRIPTIONS, AS_OF_2), key=lambda r: r[C.SEGMENT_ID])
    target = described[0]
    target |= {C.SEGMENT_NAME: "Big <b>spenders</b> " + HOSTILE, "action": HOSTILE}
    target["rules"][0]["condition"] = HOSTILE
    schema = catalog.SEGMENT_DESCRIPTIONS_SCHEMA
    writes = {C.TABLE_SEGMENT_DESCRIPTIONS: _write(spark, cfg, C.TABLE_SEGMENT_DESCRIPTIONS, schema,
                                                   [tuple(r[f] for f in schema.names) for r in described])}
    attrs = _rows(spark, cfg, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, AS_OF_2)
    for r in attrs:
        if r[C.ATTRIBUTE_VALUE] == "north":
            r[C.ATTRIBUTE_VALUE] = HOSTILE
    schema = catalog.SEGMENT_ATTRIBUTE_PROFILES_SCHEMA
    writes[C.TABLE_SEGMENT_ATTRIBUTE_PROFILES] = _write(spark, cfg, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, schema,
                                                        [tuple(r[f] for f in schema.names) for r in attrs])
    # as the explain stage would: its lineage names these versions, which the report reads
    explained = lineage.latest(spark, cfg, "explain", AS_OF_2)
    assert explained is not None
    lineage.record(spark, cfg, lineage.Entry("explain", "hand", AS_OF_2, explained.reads, writes))
    result = runner.run_stage(spark, cfg, "report", AS_OF_2)
    path, html, summary = _html(cfg, AS_OF_2)
    _BUILT["over_time"] = {"cfg": cfg, "result": result, "path": path, "html": html, "summary": summary,
                           "migration": migration, "kpis": kpis, "hostile_segment": target[C.SEGMENT_ID]}
    return _BUILT["over_time"]


def _write(spark, cfg: config.Config, table: str, schema: Any, rows: list[tuple],  # type: ignore[no-untyped-def]
           as_of: dt.date = AS_OF_2) -> int:
    return delta.replace_partition(spark.createDataFrame(rows, schema), cfg.table_path(table), table, as_of)


def one_segment_report(spark, factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A report from hand-written tables: one segment (id 7), one date, no descriptions, model, runs or lineage."""
    if "one" in _BUILT:
        return _BUILT["one"]
    root = factory.mktemp("one-segment")
    cfg = _config(root)
    feats = spark.createDataFrame([(f"c{i}", i % 30, 10.0 + i, (i % 3) / 3) for i in range(40)],
                                  f"{C.CUSTOMER_ID} string, {C.RECENCY_DAYS} int, {C.GROSS_SPEND} double, "
                                  f"{C.RETURN_RATE} double").withColumn(C.AS_OF_DATE, F.lit(AS_OF_2))
    delta.replace_partition(feats, cfg.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES, AS_OF_2)
    segs = feats.select(F.lit(AS_OF_2).alias(C.AS_OF_DATE), C.CUSTOMER_ID, F.lit(7).alias(C.SEGMENT_ID),
                        F.lit(0.5).alias(C.DISTANCE), F.lit("hand").alias(C.RUN_ID),
                        F.lit("hand-model").alias(C.MODEL_RUN_ID), F.lit("fitted").alias(C.ASSIGNMENT))
    delta.replace_partition(segs, cfg.table_path(C.TABLE_SEGMENTS), C.TABLE_SEGMENTS, AS_OF_2)
    means = {C.RECENCY_DAYS: 14.25, C.GROSS_SPEND: 29.5, C.RETURN_RATE: 0.325}
    rows = [(AS_OF_2, seg, seg == -1, 40, 1.0, 1180.0, 1.0, means, means, {k: 1.0 for k in means}, means, "hand",
             "hand-model") for seg in (7, -1)]
    _write(spark, cfg, C.TABLE_SEGMENT_PROFILES, catalog.SEGMENT_PROFILES_SCHEMA, rows)
    result = runner.run_stage(spark, cfg, "report", AS_OF_2)
    path, html, summary = _html(cfg, AS_OF_2)
    _BUILT["one"] = {"cfg": cfg, "result": result, "path": path, "html": html, "summary": summary}
    return _BUILT["one"]


# --- reading the page ----------------------------------------------------------------------------------------

class Doc(HTMLParser):
    """The page's elements (tag, attributes, text inside), in order; script and style content as text."""

    VOID = {"meta", "link", "br", "img", "hr", "input", "source", "area", "base", "col", "embed", "wbr"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self._open: list[dict[str, Any]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.elements.append(el)
        if tag not in self.VOID:
            self._open.append(el)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el["text"] += data

    def all(self, **attrs: str | None) -> list[dict[str, Any]]:
        return [e for e in self.elements if all((e["attrs"].get(k.replace("_", "-")) == v) if v is not None
                                                else k.replace("_", "-") in e["attrs"] for k, v in attrs.items())]

    def values(self, attr: str) -> list[str]:
        return [str(e["attrs"][attr]) for e in self.elements if attr in e["attrs"]]

    def fact(self, name: str) -> dict[str, Any]:
        (el,) = self.all(data_fact=name)
        return el

    def spec(self, chart_id: str) -> dict[str, Any]:
        (el,) = self.all(id=f"chart-{chart_id}-spec")
        return dict(json.loads(el["text"]))


# --- the tests -------------------------------------------------------------------------------------------------

def test_the_report_has_every_section_its_data_supports(spark, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    run = pipeline_run(spark, tmp_path_factory)
    path, html, summary = run["html_2"]
    doc = Doc(html)
    drift = [s for s in doc.values("data-section") if s == "drift"]
    assert doc.values("data-section") == ["run", "segments", "profile", "distributions", "map", "selection",
                                          "attributes", "over-time", *drift]
    omitted = {e["attrs"]["data-omitted"]: e["text"] for e in doc.all(data_omitted=None)}
    assert {"migration", "kpis"} <= set(omitted)  # no monitor stage ran
    assert ("drift" in omitted) != bool(drift)  # drift: a section when the segment stage wrote it, else a line
    assert "the segment_migration table does not exist yet" in omitted["migration"]
    assert "the segment_kpis table does not exist yet" in omitted["kpis"]
    assert summary["omitted"] == {k: re.sub(r"\s+", " ", v).split(" left out: ", 1)[1].rstrip(".")
                                  for k, v in omitted.items()}
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.html", "summary.json"]  # no temporary file left
    assert 1_000_000 < path.stat().st_size < 8_000_000 and summary["html_bytes"] == path.stat().st_size
    # self-contained: nothing is loaded from anywhere (links are the page's own anchors)
    assert doc.values("src") == [] and all(h.startswith("#") for h in doc.values("href"))


def test_the_numbers_equal_the_tables(spark, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    run = pipeline_run(spark, tmp_path_factory)
    _, html, summary = run["html_2"]
    doc = Doc(html)
    profiles = {r[C.SEGMENT_ID]: r for r in run["profiles"]}
    names = {r[C.SEGMENT_ID]: r[C.SEGMENT_NAME] for r in run["descriptions"]}
    cards = doc.all(data_segment_id=None)
    assert [int(c["attrs"]["data-segment-id"]) for c in cards] == sorted(names)
    for card in cards:
        p = profiles[int(card["attrs"]["data-segment-id"])]
        assert int(card["attrs"]["data-customers"]) == p["customers"]
        assert float(card["attrs"]["data-share"]) == p["customer_share"]
        assert float(card["attrs"]["data-revenue-share"]) == p["revenue_share"]
        assert f"{p['customers']:,} customers · {p['customer_share']:.1%} of all" in card["text"]
        assert f"{p['revenue_share']:.1%} of revenue" in card["text"]
        assert names[p[C.SEGMENT_ID]] in card["text"]
    pop = profiles[-1]
    assert int(doc.fact("customers")["attrs"]["data-value"]) == pop["customers"] == summary["customers"]
    assert int(doc.fact("segments")["attrs"]["data-value"]) == len(cards)
    (chosen,) = [r for r in run["selection"] if r["chosen"]]
    assert int(doc.fact("chosen_k")["attrs"]["data-value"]) == chosen["k"] == summary["model"]["k"] == len(cards)
    assert float(doc.fact("silhouette")["attrs"]["data-value"]) == chosen["silhouette"]
    why = doc.fact("model_choice")["text"]
    assert f"{chosen['algorithm']} with k = {chosen['k']} has the highest silhouette" in why
    assert len([e for e in doc.all() if e["tag"] == "tr"]) >= len(run["selection"]) + 1
    ingest = run["runs"][run["first"].run_id]["counts"]
    for key in ("input", "clean", "quarantined", "duplicates"):
        assert int(doc.fact(f"{key}_rows")["attrs"]["data-value"]) == ingest[f"ingest.{key}"]
    assert summary["quarantine_by_reason"] == run["quarantine"]
    assert [s["customers"] for s in summary["segments"]] == [profiles[i]["customers"] for i in sorted(names)]
    # the heatmap: one row per segment, one column per model input; the map: a bounded, stratified sample
    heat = doc.spec("heatmap")["data"][0]
    assert len(heat["y"]) == len(cards) and len(heat["z"][0]) == len(heat["x"]) == 8
    drawn = int(doc.fact("map_points")["attrs"]["data-value"])
    traces = doc.spec("map")["data"]
    assert sum(len(t["x"]) for t in traces if t["name"] != "centres") == drawn
    assert MAP_POINTS * 0.8 <= drawn <= MAP_POINTS
    assert len(traces) == len(cards) + 1  # one trace per segment, and the centres
    (centres,) = [t for t in traces if t["name"] == "centres"]
    assert sorted(int(x) for x in centres["text"]) == sorted(names)
    # stage times of this invocation, from the lineage table
    assert "this run" in html and all(f"<td>{s}</td>" in html for s in ("features", "segment", "profile", "explain"))


def test_a_first_date_report_says_so_and_counts_this_runs_ingest(spark, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    run = pipeline_run(spark, tmp_path_factory)
    doc = Doc(run["html_1"][1])
    (over,) = doc.all(data_omitted="over_time")
    assert "2024-09-30 is the first as-of date" in over["text"]
    assert "over-time" not in doc.values("data-section")
    # ingest ran in this invocation, whose runs row is written at its end: the Delta commits' counts
    assert int(doc.fact("clean_rows")["attrs"]["data-value"]) == run["transactions"]
    assert int(doc.fact("quarantined_rows")["attrs"]["data-value"]) == sum(run["quarantine"].values())
    assert doc.fact("input_rows")["attrs"]["data-value"] == "" and "n/a" in doc.fact("input_rows")["text"]


def test_over_time_panels_show_migration_drift_and_kpis(spark, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    rep = over_time_report(spark, tmp_path_factory)
    doc = Doc(rep["html"])
    assert {"over-time", "migration", "kpis"} <= set(doc.values("data-section"))
    assert not {"migration", "kpis"} & set(doc.values("data-omitted"))
    cells = doc.spec("migration")["data"][0]["text"]
    assert sum(int(c.replace(",", "")) for row in cells for c in row) == sum(m[5] for m in rep["migration"])
    # drift: the segment stage's rows for the date, at the version it recorded, when it wrote any
    cfg = rep["cfg"]
    version = lineage.input_version(spark, cfg, C.TABLE_SEGMENT_DRIFT, "segment", AS_OF_2)
    drift = [] if version is None else [r for r in delta.read(spark, cfg.table_path(C.TABLE_SEGMENT_DRIFT), version)
                                        .filter(F.col(C.AS_OF_DATE) == AS_OF_2).collect()]
    if drift:
        (overall,) = [r for r in drift if r["scope"] == C.DRIFT_SCOPE_OVERALL]
        assert doc.fact("drift_status")["text"] == overall["status"] and "drift" in doc.values("data-section")
    else:
        assert "drift" in doc.values("data-omitted")
    kpi_charts = [c for c in doc.values("data-chart") if c.startswith("kpi-")]
    assert len(kpi_charts) == 2
    revenue = doc.spec("kpi-1")["data"]
    assert sum(len(t["y"]) for t in revenue) == len([k for k in rep["kpis"] if k[2] == "revenue"])
    # the report ran alone: its stage times are those of the completed run that made the profiles
    assert "completed (the runs table" in rep["html"]


def test_hostile_strings_stay_text(spark, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    rep = over_time_report(spark, tmp_path_factory)
    html, doc = rep["html"], Doc(rep["html"])
    tags = [e["tag"] for e in doc.elements]
    assert tags.count("script") == len(doc.values("data-chart")) + 3  # Plotly, its template, the specs, the loader
    assert "img" not in tags
    (card,) = doc.all(data_segment_id=str(rep["hostile_segment"]))
    assert "Big <b>spenders</b> " + HOSTILE in card["text"]  # shown as the characters they are
    assert html_module.escape("Big <b>spenders</b> " + HOSTILE) in html
    assert rep["summary"]["segments"][0]["name"] == "Big <b>spenders</b> " + HOSTILE
    attrs = [c for c in doc.values("data-chart") if c.startswith("attr-")]
    assert any("&lt;/script&gt;" in json.dumps(doc.spec(c)) for c in attrs)  # escaped for Plotly's labels too


def test_one_segment_and_no_model_degrade_to_lines(spark, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    rep = one_segment_report(spark, tmp_path_factory)
    doc = Doc(rep["html"])
    assert doc.values("data-section") == ["run", "segments", "profile", "distributions"]
    omitted = set(doc.values("data-omitted"))
    assert omitted == {"ingest", "stage_times", "descriptions", "map", "selection", "attributes", "over_time"}
    (card,) = doc.all(data_segment_id=None)
    assert card["attrs"]["data-segment-id"] == "7" and "40 customers · 100.0% of all" in card["text"]
    assert "segment 7" in card["text"]
    assert doc.spec("heatmap")["data"][0]["y"] == ["7 · segment 7"]
    assert rep["summary"]["segments"] == [{"segment_id": 7, "name": "segment 7", "customers": 40, "share": 1.0,
                                           "revenue_share": 1.0, "action": None}]


def test_no_profiles_is_a_clear_error(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = _config(tmp_path)
    with pytest.raises(StageError, match=r"no segment profiles as of 2024-12-31: run `custseg profile"):
        runner.run_stage(spark, cfg, "report", AS_OF_2)
    assert not Path(report_folder(str(cfg["output.root"]), AS_OF_2)).exists()


def test_stratified_fractions_bound_the_sample_and_keep_small_segments_visible() -> None:
    sizes = {0: 90_000, 1: 9_000, 3: 900, 7: 100}  # ids need not be contiguous
    fractions = S.stratified_fractions(sizes, 3000)
    expected = {s: n * fractions[s] for s, n in sizes.items()}
    assert sum(expected.values()) == pytest.approx(3000)
    assert expected[7] == 100 and expected[3] >= 3000 // 16  # a floor of max_points / 4k each
    assert expected[0] > expected[1] > expected[3]
    assert S.stratified_fractions({0: 10, 5: 20}, 3000) == {0: 1.0, 5: 1.0}


def test_a_failed_write_leaves_the_previous_file(spark, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder = Folder(spark, str(tmp_path / "r"))
    folder.write("index.html", b"old")

    def fail(*args: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(Folder, "_publish", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        folder.write("index.html", b"new")
    assert (tmp_path / "r" / "index.html").read_bytes() == b"old"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["index.html"]
    monkeypatch.undo()
    folder.write("index.html", b"new")
    assert (tmp_path / "r" / "index.html").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["index.html"]


def test_report_features_must_name_columns(spark) -> None:  # type: ignore[no-untyped-def]
    df = spark.createDataFrame([("a", 1.0, {"web": 0.5})], "customer_id string, x double, shares map<string,double>")
    cols, skipped = S.feature_columns(df, ["x", "shares.web", "attribute.region=north"], configured=False)
    assert [n for n, _ in cols] == ["x", "shares.web"] and skipped == ["attribute.region=north"]
    with pytest.raises(StageError, match="report.features: 'nope' is not a column"):
        S.feature_columns(df, ["nope"], configured=True)
