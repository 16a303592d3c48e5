"""The report page: one self-contained HTML document (styles, Plotly's JavaScript and every figure's data inline).

Every value that comes from data is escaped (`esc`); figure specifications sit in `<script type="application/json">`
elements, JSON with `<`, `>` and `/` escaped, and are drawn by one small loader once the page has loaded. A panel
without data is one line saying why (`Omitted`). Sections and facts carry `data-` attributes with the raw values,
so a test can compare them with the tables.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from custseg.stages.report.data import Core, Omitted, RunInfo, Selection
from custseg.stages.report.figures import Chart, colours, esc

STYLE = """
:root{--fg:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f5f7fa;--card:#fff;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:linear-gradient(120deg,#0f172a,#1e3a8a);color:#fff;padding:28px 40px 22px}
header h1{margin:0 0 4px;font-size:28px;font-weight:650;letter-spacing:-.01em}
header p{margin:0;color:#cbd5e1}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);padding:8px 40px;
font-size:13px;display:flex;flex-wrap:wrap;gap:4px 18px}
nav a{color:var(--accent);text-decoration:none}
main{max-width:1240px;margin:0 auto;padding:8px 40px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:20px 26px;margin:22px 0;
box-shadow:0 1px 2px rgba(15,23,42,.04)}
h2{margin:0 0 12px;font-size:20px}
h3{margin:18px 0 8px;font-size:15px}
.lead{color:var(--muted);margin:0 0 14px;font-size:14px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-bottom:16px}
.tile{border:1px solid var(--line);border-radius:10px;padding:10px 14px;background:#fafbfc}
.tile .v{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums}
.tile .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:10px 28px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;margin:0;font-size:14px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;word-break:break-all}
.why{background:#eff6ff;border-left:4px solid var(--accent);padding:10px 14px;border-radius:6px;font-size:14px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:16px}
.card{border:1px solid var(--line);border-top:6px solid var(--c);border-radius:10px;padding:14px 16px;
background:#fff;display:flex;flex-direction:column;gap:8px;overflow-wrap:anywhere;min-width:0}
.card h3{margin:0;font-size:17px}.card .id{color:var(--muted);font-weight:500;font-size:13px}
.meter{font-size:13px;color:var(--muted)}.meter b{color:var(--fg);font-variant-numeric:tabular-nums}
.bar{height:6px;border-radius:3px;background:#edf0f3;overflow:hidden;margin-top:2px}
.bar i{display:block;height:100%;background:var(--c)}
.action{background:#f8fafc;border:1px solid var(--line);border-radius:8px;padding:8px 10px;font-size:13px}
.action b{font-size:14px}
code.rule{display:block;background:#f1f5f9;border-radius:6px;padding:6px 8px;font-size:12px;white-space:pre-wrap;
word-break:break-word}
.small{font-size:12px;color:var(--muted)}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:12px}
.chart{width:100%;min-height:200px}
figure{margin:0}figcaption{font-size:12px;color:var(--muted);margin:2px 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0 10px}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
td{overflow-wrap:anywhere}
th{font-weight:600;color:var(--muted);background:#fafbfc}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.chosen td{background:#fefce8;font-weight:600}
.omitted{color:var(--muted);font-style:italic;margin:8px 0}
.badge{display:inline-block;padding:2px 10px;border-radius:999px;font-size:12px;font-weight:650;
text-transform:uppercase}
.badge.ok{background:#dcfce7;color:#166534}.badge.warn{background:#fef9c3;color:#854d0e}
.badge.retrain{background:#fee2e2;color:#991b1b}
footer{max-width:1240px;margin:0 auto;padding:0 40px 40px;font-size:12px;color:var(--muted)}
@media print{nav{display:none}section{break-inside:avoid;box-shadow:none}header{background:#0f172a}}
"""

LOADER = """
(function () {
  var template = JSON.parse(document.getElementById('plotly-template').textContent);
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ['select2d', 'lasso2d'],
                toImageButtonOptions: {scale: 2}};
  var pending = [];
  document.querySelectorAll('div.chart').forEach(function (div) {
    var spec = JSON.parse(document.getElementById(div.id + '-spec').textContent);
    spec.layout.template = template;
    pending.push(Plotly.newPlot(div, spec.data, spec.layout, config).then(function () {
      div.setAttribute('data-rendered', 'true');
    }));
  });
  Promise.all(pending).then(function () { document.body.setAttribute('data-charts', 'rendered'); },
    function (e) { document.body.setAttribute('data-charts', 'failed'); console.error('a chart failed', e); });
})();
"""


@dataclass
class Page:
    """The page being built: its sections (HTML), its charts, and the panels present and left out."""

    title: str
    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (id, title, html)
    charts: list[Chart] = field(default_factory=list)
    omitted: list[Omitted] = field(default_factory=list)

    def chart(self, chart: Chart) -> str:
        """The figure's place in the page (the spec goes at the end of the page)."""
        self.charts.append(chart)
        caption = f"<figcaption>{chart.caption}</figcaption>" if chart.caption else ""
        return (f'<figure><div class="chart" id="chart-{chart.chart_id}" data-chart="{chart.chart_id}" '
                f'style="height:{chart.height}px"></div>{caption}</figure>')

    def omit(self, item: Omitted) -> str:
        """One line saying why a panel is left out (and the panel recorded as omitted)."""
        self.omitted.append(item)
        return (f'<p class="omitted" data-omitted="{esc(item.panel)}"><strong>{esc(item.title)}</strong> '
                f'left out: {esc(item.reason)}.</p>')

    def add(self, section_id: str, title: str, body: str) -> None:
        self.sections.append((section_id, title, body))

    def render(self, subtitle: str, plotly_js: str, template: str, footer: str) -> str:
        nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in self.sections if title)
        body = "\n".join(f'<section id="{sid}" data-section="{sid}"><h2>{esc(title)}</h2>{html}</section>'
                         if title else html for sid, title, html in self.sections)
        specs = "\n".join(f'<script type="application/json" id="chart-{c.chart_id}-spec">{c.spec}</script>'
                          for c in self.charts)
        js = plotly_js.replace("</script", "<\\/script")
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<title>{esc(self.title)}</title><style>{STYLE}</style><script>{js}</script></head>\n'
                f'<body data-charts="pending"><header><h1>{esc(self.title)}</h1><p>{subtitle}</p></header>'
                f'<nav>{nav}</nav><main>\n{body}\n</main><footer>{footer}</footer>\n'
                f'<script type="application/json" id="plotly-template">{template}</script>\n{specs}\n'
                f'<script>{LOADER}</script></body></html>\n')


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def count(x: int | None) -> str:
    return "n/a" if x is None else f"{x:,}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          row_class: Sequence[str] | None = None) -> str:
    """An HTML table; every cell escaped; the `numeric` columns right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        cells = "".join(f'<td class="n">{esc(v)}</td>' if j in numeric else f"<td>{esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def tile(key: str, value: str, raw: Any, caption: str = "") -> str:
    return (f'<div class="tile" data-fact="{esc(key)}" data-value="{esc(raw)}"><div class="v">{esc(value)}</div>'
            f'<div class="k">{esc(caption or key.replace("_", " "))}</div></div>')


def run_section(page: Page, core: Core, info: RunInfo, sel: Selection | Omitted) -> None:
    """1. The run: date, counts, quarantine by reason, customers, model and why, ids, config hash, stage times."""
    chosen = sel.chosen if isinstance(sel, Selection) else None
    ing = info.ingest
    tiles = [tile("as_of_date", str(core.as_of), core.as_of), tile("customers", count(core.customers), core.customers),
             tile("segments", str(len(core.segments)), len(core.segments))]
    if chosen is not None:
        tiles.append(tile("chosen_k", f"{chosen['k']} ({chosen['algorithm']})", chosen["k"]))
        if chosen.get("silhouette") is not None:
            tiles.append(tile("silhouette", f"{chosen['silhouette']:.3f}", chosen["silhouette"]))
    for key, caption in (("input", "input rows"), ("clean", "clean rows"), ("quarantined", "quarantined rows"),
                         ("duplicates", "duplicate rows")):
        if ing:
            value = ing.get(f"ingest.{key}")
            tiles.append(tile(f"{key}_rows", count(value), "" if value is None else value, caption))
    facts = [("report run id", info.report_run_id), ("segments run id", core.segments_run_id),
             ("model run id", core.model_run_id), ("assignment", core.assignment or "n/a"),
             ("config hash", info.config_hash)]
    dl = "".join(f'<dt>{esc(k)}</dt><dd data-fact="{esc(k.replace(" ", "_"))}">{esc(v)}</dd>' for k, v in facts)
    why = (f'<p class="why" data-fact="model_choice"><b>Model chosen:</b> {esc(sel.why)}.</p>'
           if isinstance(sel, Selection) else page.omit(sel))
    ingest = (f'<p class="small">Ingest counts: {esc(info.ingest_source)}.</p>' if ing else
              page.omit(Omitted("ingest", "Ingest counts", "no ingest is recorded in the lineage table")))
    quarantine = (table(["reason", "rows"], [(r, f"{n:,}") for r, n in info.quarantine], numeric=[1])
                  + f'<p class="small">From {esc(info.quarantine_source)}.</p>' if info.quarantine else
                  '<p class="small">No quarantined rows.</p>' if info.quarantine_source else "")
    times = (table(["stage", "seconds"], [(s, f"{t:,.1f}") for s, t in info.stage_seconds], numeric=[1])
             + f'<p class="small">Times of {esc(info.stage_source)}.</p>' if info.stage_seconds else
             page.omit(Omitted("stage_times", "Stage times", "no lineage record of this run and no completed run "
                                                             "for the date in the runs table")))
    body = (f'<div class="tiles">{"".join(tiles)}</div>{why}{ingest}<div class="cols"><div><h3>Identifiers</h3>'
            f'<dl class="facts">{dl}</dl></div><div><h3>Quarantined rows by reason</h3>{quarantine}</div>'
            f'<div><h3>Stage times</h3>{times}</div></div>')
    page.add("run", "The run", body)


def segment_cards(page: Page, core: Core) -> None:
    """2. One card per segment: name, size and share, revenue share, the action, the rule that recognises it."""
    colour = colours(core.ids)
    cards = []
    for s in core.segments:
        d = s.description or {}
        rules = d.get("rules") or []
        rule = (f'<div><div class="small">Rule that recognises its members ({esc(d.get("rule_quality") or "")}: '
                f'covers {pct(rules[0]["coverage"])} of them, {pct(rules[0]["precision"])} precise)</div>'
                f'<code class="rule">{esc(rules[0]["condition"])}</code></div>' if rules else "")
        action = (f'<div class="action"><div class="small">Recommended action</div><b>{esc(d["action"])}</b>'
                  f'<div>{esc(d.get("action_channel") or "")} · {esc(d.get("action_offer") or "")}</div>'
                  f'<div class="small">{esc(d.get("action_reason") or "")}</div></div>' if d.get("action") else "")
        reasons = f'<div class="small">{esc(d["reasons"])}</div>' if d.get("reasons") else ""
        rev = s.revenue_share
        rev_raw = "" if rev is None else repr(rev)
        cards.append(
            f'<article class="card" style="--c:{colour[s.segment_id]}" data-segment-id="{s.segment_id}" '
            f'data-customers="{s.customers}" data-share="{s.share!r}" data-revenue-share="{rev_raw}">'
            f'<h3><span class="id">#{s.segment_id}</span> <span class="name">{esc(s.name)}</span></h3>{reasons}'
            f'<div class="meter"><b class="customers">{count(s.customers)}</b> customers · <b class="share">'
            f'{pct(s.share)}</b> of all<div class="bar"><i style="width:{100 * s.share:.1f}%"></i></div></div>'
            f'<div class="meter"><b class="revenue-share">{pct(rev)}</b> of revenue<div class="bar"><i '
            f'style="width:{100 * max(0.0, min(1.0, rev or 0.0)):.1f}%"></i></div></div>{action}{rule}</article>')
    notes = "".join(page.omit(n) for n in core.notes)
    page.add("segments", "Segments at a glance", f'{notes}<div class="cards">{"".join(cards)}</div>')


def when(value: dt.date | dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if isinstance(value, dt.datetime) else str(value)
