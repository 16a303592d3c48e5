"""Report step: one self-contained HTML page of the date's segmentation, for people who will not query Delta tables,
at `<output.root>/reports/as_of_date=D/index.html`, with a small `summary.json` beside it.

It reads the segment profiles the profile stage recorded for the date, and everything else at the versions their
producers recorded (`data.Tables`): the segments and features of that profile run, the descriptions of the same
run, its model selection and bundle, the runs and lineage tables, the quarantine, and, when they exist, attribute
profiles, migration, drift and KPIs. Only small tables and bounded aggregates or samples reach the driver. The
figures are Plotly's, its JavaScript inlined once, so the file opens anywhere with no network. The stage writes no
table (its files are written atomically, `files.Folder`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession

from custseg import __version__
from custseg.core import columns as C
from custseg.core.errors import StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import models
from custseg.stages.report import data as D
from custseg.stages.report import history as H
from custseg.stages.report import page as P
from custseg.stages.report import sample as S
from custseg.stages.report import sections as X
from custseg.stages.report.figures import esc, template_json
from custseg.stages.report.files import Folder

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"


@dataclass
class ReportResult(StageResult):
    path: str
    size_bytes: int
    seconds: float
    sections: list[str] = field(default_factory=list)
    omitted: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"report.bytes": self.size_bytes}

    def details(self) -> dict[str, str]:
        return {"report.path": self.path}

    def describe(self) -> str:
        left = f"; left out: {', '.join(self.omitted)}" if self.omitted else ""
        return (f"{self.path} ({self.size_bytes / 1e6:.1f} MB, {self.seconds:.0f} s; sections: "
                f"{', '.join(self.sections)}{left})")


def report_folder(output_root: str, as_of: dt.date) -> str:
    """Where the report of `as_of` is written."""
    return f"{output_root.rstrip('/')}/{REPORTS_DIR}/as_of_date={as_of}"


def run(spark: SparkSession, ctx: StageContext) -> ReportResult:
    """Build the date's report from the tables and write index.html and summary.json."""
    t0 = time.perf_counter()
    cfg, as_of = ctx.cfg, ctx.date
    tables = D.Tables(spark, cfg, as_of)
    core = D.load_core(tables)
    log.info("report: segments of run %s (model %s), %d segments, %d customers", core.segments_run_id,
             core.model_run_id, len(core.segments), core.customers)
    info = D.run_info(tables, core, ctx.run_id, ctx.started)
    sel = D.selection(tables, core)
    segs, feats = D.segments_of(tables, core), D.features_of(tables, core)
    bundle = _bundle(tables, core)
    configured = list(cfg["report.features"])
    names = configured or (
        [i.name for i in bundle.meta.inputs] if not isinstance(bundle, D.Omitted) else
        sorted(core.population.get("centroid") or {}))
    columns, skipped = S.feature_columns(feats, names, bool(configured))
    dists = S.distributions(segs, feats, columns)
    log.info("report: quantiles of %d features per segment", len(dists))
    if isinstance(bundle, D.Omitted):
        map_data: S.MapData | D.Omitted = bundle
    else:
        drawn = S.map_sample(spark, cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES), segs, feats, bundle,
                             {s.segment_id: s.customers for s in core.segments}, int(cfg["report.map_points"]),
                             int(cfg["run.seed"]))
        map_data = D.Omitted("map", "Map of the customers", drawn) if isinstance(drawn, str) else drawn
    attrs = H.attributes(tables, core)
    profiles = tables.read(C.TABLE_SEGMENT_PROFILES, version=tables.reads[C.TABLE_SEGMENT_PROFILES])
    assert profiles is not None
    timeline = H.over_time(tables, core, S.earlier_dates(profiles, as_of))

    page = P.Page(f"Customer segments as of {as_of}")
    P.run_section(page, core, info, sel)
    P.segment_cards(page, core)
    X.profile_heatmap(page, core, names)
    X.distributions(page, core, dists, skipped)
    X.segment_map(page, core, map_data)
    X.model_selection(page, sel)
    X.attributes(page, core, attrs)
    X.over_time(page, core, timeline)
    import plotly
    from plotly.offline import get_plotlyjs

    generated = dt.datetime.now(dt.UTC)
    subtitle = (f"{core.customers:,} customers in {len(core.segments)} segments · segments run "
                f"{esc(core.segments_run_id)} · generated {P.when(generated)}")
    footer = (f"custseg {esc(__version__)} · figures by Plotly {esc(plotly.__version__)} (its JavaScript is inside "
              "this file: it needs no network) · every number comes from custseg's Delta tables under "
              f"{esc(cfg['output.root'])}")
    document = page.render(subtitle, get_plotlyjs(), template_json(), footer).encode("utf-8")
    sections = _sections(page)
    summary = _summary(core, sel, info, page, ctx, generated, len(document))
    folder = Folder(spark, report_folder(str(cfg["output.root"]), as_of))
    folder.write("summary.json", json.dumps(summary, indent=2, default=str).encode("utf-8"))
    path = folder.write("index.html", document)
    seconds = time.perf_counter() - t0
    log.info("report: %s (%.1f MB) in %.1f s", path, len(document) / 1e6, seconds)
    return ReportResult(path, len(document), round(seconds, 1), sections, [o.panel for o in page.omitted],
                        reads=dict(tables.reads))


def _bundle(tables: D.Tables, core: D.Core) -> models.SegmentationModel | D.Omitted:
    """The model bundle that assigned the segments (for the map); left out with its reason when it cannot be read."""
    try:
        path = models.find(tables.spark, tables.cfg.table_path(C.TABLE_MODELS), core.as_of, core.model_run_id)
        return models.load(tables.spark, path)
    except StageError as e:
        return D.Omitted("map", "Map of the customers", f"the model bundle cannot be read: {e}")


def _sections(page: P.Page) -> list[str]:
    """The sections present, with the over-time panels that have data."""
    out = [sid for sid, title, _ in page.sections if title]
    return out + [p for p in ("migration", "drift", "kpis") if "over-time" in out and p not in
                  {o.panel for o in page.omitted}]


def _summary(core: D.Core, sel: D.Selection | D.Omitted, info: D.RunInfo, page: P.Page, ctx: StageContext,
             generated: dt.datetime, size: int) -> dict[str, Any]:
    """summary.json: the report's key numbers, for a machine (or a quick look) without the page."""
    chosen = sel.chosen if isinstance(sel, D.Selection) and sel.chosen else {}
    return {
        "as_of_date": str(core.as_of), "generated_at": generated.isoformat(timespec="seconds"),
        "report_run_id": ctx.run_id, "segments_run_id": core.segments_run_id, "model_run_id": core.model_run_id,
        "config_hash": info.config_hash, "customers": core.customers,
        "model": {"algorithm": chosen.get("algorithm"), "k": chosen.get("k"), "silhouette": chosen.get("silhouette"),
                  "why": sel.why if isinstance(sel, D.Selection) else None},
        "ingest": info.ingest, "quarantine_by_reason": dict(info.quarantine),
        "stage_seconds": dict(info.stage_seconds), "stage_seconds_source": info.stage_source,
        "segments": [{"segment_id": s.segment_id, "name": s.name, "customers": s.customers, "share": s.share,
                      "revenue_share": s.revenue_share,
                      "action": (s.description or {}).get("action")} for s in core.segments],
        "sections": _sections(page),
        "omitted": {o.panel: o.reason for o in page.omitted},
        "charts": len(page.charts), "html_bytes": size,
    }
