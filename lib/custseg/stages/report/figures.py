"""The report's figures, as Plotly specifications built from the small data the other modules gathered.

Every text that comes from data (segment names, features, attribute values) is escaped before it goes into a
figure (`text`): Plotly reads `<b>`, `<br>` and `<a>` in its labels and shows `&lt;`, `&gt;` and `&amp;` as the
characters they stand for. Labels are cut to `LABEL_CHARS` characters so that a long name cannot squash a figure
(the cards show names whole). The JSON is escaped for a `<script>` element by `plotly.io.to_json` (`<`, `>` and
`/` as \\u escapes).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from custseg.core import columns as C
from custseg.stages.report.data import Core, Selection
from custseg.stages.report.sample import Distribution, MapData

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
POPULATION_COLOUR = "#52606d"
LIFT_CLIP = 3.0  # the heatmap's colour saturates at 2**3 = 8 times (or an eighth of) the population's mean
LABEL_CHARS = 48
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif'


@dataclass(frozen=True)
class Chart:
    """One figure: its element id, its Plotly JSON (safe inside <script>), and a caption (already HTML)."""

    chart_id: str
    spec: str
    height: int
    caption: str = ""


def esc(value: object) -> str:
    """Data text for an HTML page (elements and attribute values): &, <, > and quotes as entities."""
    return html.escape(str(value), quote=True)


def text(value: object, limit: int = LABEL_CHARS) -> str:
    """Data text for a Plotly label or hover text: cut to `limit` characters, &, < and > as entities (Plotly shows
    no other entity as its character)."""
    raw = str(value)
    return html.escape(raw if len(raw) <= limit else raw[: limit - 1] + "…", quote=False)


def template_json() -> str:
    """The shared look of every figure (Plotly's `plotly_white`, the report's font), set once in the page."""
    template = pio.templates["plotly_white"].to_plotly_json()
    template["layout"]["font"] = {"family": FONT, "size": 12, "color": "#1f2933"}
    return safe_json(template)


def safe_json(value: object) -> str:
    """JSON that can sit inside a <script> element: <, > and & as \\u escapes (so no `</script>` can appear), and the
    two line separators JavaScript once refused in strings."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    for ch, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                     ("\u2029", "\\u2029")):
        text = text.replace(ch, code)
    return text


def colours(ids: Sequence[int], others: Sequence[int] = ()) -> dict[int, str]:
    """A colour per segment id, by the ids' order (ids need not be contiguous), then for `others` (ids of earlier
    dates only), the population's grey for -1."""
    mine = sorted(i for i in ids if i != C.POPULATION_SEGMENT_ID)
    rest = sorted(i for i in set(others) - set(mine) if i != C.POPULATION_SEGMENT_ID)
    out = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate([*mine, *rest])}
    out[C.POPULATION_SEGMENT_ID] = POPULATION_COLOUR
    return out


def plain_label(core: Core, segment_id: int) -> str:
    """`id · name` (not escaped), `All customers` for the population."""
    if segment_id == C.POPULATION_SEGMENT_ID:
        return "All customers"
    named = {s.segment_id: s.name for s in core.segments}
    return f"{segment_id} · {named[segment_id]}" if segment_id in named else f"segment {segment_id}"


def label(core: Core, segment_id: int, limit: int = LABEL_CHARS) -> str:
    """`plain_label` as a Plotly label (`text`)."""
    return text(plain_label(core, segment_id), limit)


def _chart(chart_id: str, fig: go.Figure, height: int, caption: str = "") -> Chart:
    spec = fig.to_plotly_json()
    spec["layout"].pop("template", None)  # the page sets one template for all figures
    spec["layout"].update(height=height, margin=spec["layout"].get("margin") or {"l": 60, "r": 20, "t": 40, "b": 50})
    return Chart(chart_id, str(pio.to_json({"data": spec["data"], "layout": spec["layout"]}, validate=False)), height,
                 caption)


def num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:,.0f}" if abs(x) >= 10 ** digits else f"{x:,.{digits}g}"


def heatmap(core: Core, features: Sequence[str]) -> Chart | None:
    """Segments x features, coloured by log2 of the lift against the population mean; the values on hover."""
    pop_mean = core.population.get("feature_mean") or {}
    feats = [f for f in features if f in pop_mean]
    if not feats or not core.segments:
        return None
    z, cells, hover = [], [], []
    for s in core.segments:
        mean, median, lift = (s.profile.get(m) or {} for m in ("feature_mean", "feature_median", "feature_lift"))
        row_z, row_t, row_h = [], [], []
        for f in feats:
            li = lift.get(f)
            ok = isinstance(li, float) and math.isfinite(li) and li > 0
            row_z.append(max(-LIFT_CLIP, min(LIFT_CLIP, math.log2(li))) if isinstance(li, float) and ok else None)
            row_t.append(f"{li:.2f}×" if ok else "n/a")
            row_h.append(f"<b>{label(core, s.segment_id, 80)}</b><br>{text(f, 80)}<br>mean {num(mean.get(f))} "
                         f"(all customers: {num(pop_mean.get(f))})<br>median {num(median.get(f))}<br>lift {row_t[-1]}")
        z.append(row_z)
        cells.append(row_t)
        hover.append(row_h)
    ticks = [-3, -2, -1, 0, 1, 2, 3]
    fig = go.Figure(go.Heatmap(
        z=z, x=[text(f) for f in feats], y=[label(core, s.segment_id) for s in core.segments], text=cells,
        customdata=hover, texttemplate="%{text}", textfont={"size": 11}, zmid=0, zmin=-LIFT_CLIP, zmax=LIFT_CLIP,
        colorscale="RdBu", reversescale=True, xgap=2, ygap=2, hovertemplate="%{customdata}<extra></extra>",
        colorbar={"title": {"text": "lift"}, "tickvals": ticks,
                  "ticktext": ["⅛×", "¼×", "½×", "1×", "2×", "4×", "8×"]}))
    fig.update_layout(xaxis={"side": "top", "tickangle": -30}, yaxis={"autorange": "reversed"},
                      margin={"l": 200, "r": 20, "t": 110, "b": 20})
    return _chart("heatmap", fig, 140 + 42 * len(core.segments))


def distribution(core: Core, dist: Distribution, index: int) -> Chart:
    """Box plot of one feature per segment from Spark's quantiles: box q1-q3, median line, mean dashed, whiskers
    at the 5th and 95th percentiles."""
    colour = colours(core.ids)
    fig = go.Figure()
    lows = []
    for seg in [*core.ids, C.POPULATION_SEGMENT_ID]:
        st = dist.stats.get(seg)
        if st is None or st["median"] is None:
            continue
        lows.append(st["p05"])
        short = "all" if seg == C.POPULATION_SEGMENT_ID else f"#{seg}"  # the cards' numbers; the names on hover
        fig.add_trace(go.Box(
            x=[short], q1=[st["q1"]], median=[st["median"]], q3=[st["q3"]], lowerfence=[st["p05"]],
            upperfence=[st["p95"]], mean=[st["mean"]], name=label(core, seg), marker_color=colour[seg],
            boxmean=True, showlegend=False, hoverinfo="y+name"))
    highs = [st["p95"] for st in dist.stats.values() if st["p95"] is not None]
    positive = lows and highs and all(v is not None and v > 0 for v in lows)
    log_axis = bool(positive and max(highs) / min(v for v in lows if v is not None) > 50)
    fig.update_layout(title={"text": text(dist.feature, 60), "x": 0.01, "font": {"size": 14}},
                      yaxis={"type": "log" if log_axis else "linear", "zeroline": False},
                      xaxis={"type": "category"}, margin={"l": 60, "r": 10, "t": 40, "b": 30})
    return _chart(f"dist-{index}", fig, 300, "log scale" if log_axis else "")


def segment_map(core: Core, data: MapData) -> Chart:
    """The sampled customers on two principal components, coloured by segment, the centres marked."""
    colour = colours(core.ids)
    fig = go.Figure()
    for seg in core.ids:
        idx = [i for i, s in enumerate(data.segment) if s == seg]
        if not idx:
            continue
        fig.add_trace(go.Scatter(
            x=[round(data.x[i], 4) for i in idx], y=[round(data.y[i], 4) for i in idx], mode="markers",
            name=label(core, seg), marker={"size": 5, "color": colour[seg], "opacity": 0.55},
            hovertemplate="%{fullData.name}<extra></extra>"))
    if data.centres:
        ids = [s for s in core.ids if s in data.centres]
        fig.add_trace(go.Scatter(
            x=[data.centres[s][0] for s in ids], y=[data.centres[s][1] for s in ids], mode="markers+text",
            name="centres", text=[str(s) for s in ids], textposition="top center", customdata=[label(core, s)
                                                                                             for s in ids],
            marker={"symbol": "x-thin", "size": 16, "line": {"width": 3, "color": "#111827"}},
            textfont={"size": 13, "color": "#111827"}, hovertemplate="centre of %{customdata}<extra></extra>"))

    def axis(i: int) -> str:
        return f"PC{i + 1}: {data.explained[i]:.0%} of the variance"

    caption = "; ".join(f"PC{i + 1} grows with " + ", ".join(f"{esc(n)} ({'+' if w > 0 else '−'})" for n, w in load)
                        for i, load in enumerate(data.loadings) if load)
    fig.update_layout(xaxis={"title": {"text": axis(0)}, "zeroline": False},
                      yaxis={"title": {"text": axis(1)}, "zeroline": False},
                      legend={"orientation": "v", "itemsizing": "constant"},
                      margin={"l": 60, "r": 20, "t": 20, "b": 50})
    return _chart("map", fig, 560, caption)


METRICS = (("silhouette", "Silhouette (higher is better)"), ("davies_bouldin", "Davies-Bouldin (lower is better)"),
           ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
           ("cost", "Cost: within-cluster sum of squares"))


def selection(sel: Selection) -> Chart:
    """Each validity measure and the cost against k, one line per algorithm, the chosen model starred."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in METRICS], horizontal_spacing=0.1,
                        vertical_spacing=0.16)
    algos = sorted({r["algorithm"] for r in sel.candidates})
    for n, (metric, _) in enumerate(METRICS):
        row, col = n // 2 + 1, n % 2 + 1
        for a, algo in enumerate(algos):
            rows = [r for r in sel.candidates if r["algorithm"] == algo and r.get(metric) is not None]
            fig.add_trace(go.Scatter(
                x=[r["k"] for r in rows], y=[r[metric] for r in rows], mode="lines+markers", name=text(algo),
                legendgroup=algo, showlegend=n == 0, line={"color": PALETTE[a % len(PALETTE)], "width": 2},
                customdata=[[text(algo), text(r["outcome"] or "", 120)] for r in rows],
                hovertemplate="%{customdata[0]} k=%{x}<br>%{y:.4~g}<br>%{customdata[1]}<extra></extra>"),
                row=row, col=col)
        if sel.chosen is not None and sel.chosen.get(metric) is not None:
            fig.add_trace(go.Scatter(
                x=[sel.chosen["k"]], y=[sel.chosen[metric]], mode="markers", name="chosen", legendgroup="chosen",
                showlegend=n == 0, marker={"symbol": "star", "size": 16, "color": "#111827"},
                hovertemplate="chosen: k=%{x}<br>%{y:.4~g}<extra></extra>"), row=row, col=col)
        fig.update_xaxes(title_text="k", dtick=1, row=row, col=col)
    fig.update_layout(legend={"orientation": "h", "y": -0.12}, margin={"l": 60, "r": 20, "t": 40, "b": 60})
    return _chart("selection", fig, 620)


def attribute_shares(core: Core, attribute: str, rows: list[dict[str, Any]], index: int) -> Chart:
    """One categorical attribute: each segment's customers by value (100% stacked bars), lift on hover."""
    segs = [s for s in [*core.ids, C.POPULATION_SEGMENT_ID] if any(r[C.SEGMENT_ID] == s for r in rows)]
    values = sorted({str(r[C.ATTRIBUTE_VALUE]) for r in rows},
                    key=lambda v: -sum(r["customers"] or 0 for r in rows if str(r[C.ATTRIBUTE_VALUE]) == v))
    by = {(r[C.SEGMENT_ID], str(r[C.ATTRIBUTE_VALUE])): r for r in rows}
    fig = go.Figure()
    for i, value in enumerate(values):
        cells = [by.get((s, value)) for s in segs]
        fig.add_trace(go.Bar(
            y=[label(core, s) for s in segs], x=[(c or {}).get("share") or 0 for c in cells], orientation="h",
            name=text(value), marker_color=PALETTE[i % len(PALETTE)],
            customdata=[[f"{(c or {}).get('customers') or 0:,}", num((c or {}).get("lift")),
                         num((c or {}).get("p_value")), text(f"{attribute} = {value}", 80)] for c in cells],
            hovertemplate=("%{y}<br>%{customdata[3]}: %{x:.1%} (%{customdata[0]} customers)"
                           "<br>lift %{customdata[1]}, p-value %{customdata[2]}<extra></extra>")))
    fig.update_layout(barmode="stack", xaxis={"tickformat": ".0%", "range": [0, 1]}, yaxis={"autorange": "reversed"},
                      title={"text": text(attribute, 60), "x": 0.01, "font": {"size": 14}},
                      legend={"orientation": "h", "y": -0.15}, margin={"l": 200, "r": 20, "t": 40, "b": 40})
    return _chart(f"attr-{index}", fig, 120 + 34 * len(segs))


def migration(core: Core, rows: list[dict[str, Any]]) -> Chart:
    """Customers from each segment of the previous date (rows; `entered`: new) to each segment of this date
    (columns; `left`: gone), coloured by the share of the row, the count in each cell."""
    def side(value: int | None, empty: str) -> str:
        return empty if value is None else label(core, int(value))

    froms = sorted({r[C.FROM_SEGMENT_ID] for r in rows}, key=lambda v: (v is None, v if v is not None else 0))
    tos = sorted({r[C.TO_SEGMENT_ID] for r in rows}, key=lambda v: (v is None, v if v is not None else 0))
    cell = {(r[C.FROM_SEGMENT_ID], r[C.TO_SEGMENT_ID]): r for r in rows}
    z, text = [], []
    for f in froms:
        row = [cell.get((f, t)) for t in tos]
        total = sum((c or {}).get("customers") or 0 for c in row)
        z.append([((c or {}).get("customers") or 0) / total if total else None for c in row])
        text.append([f"{(c or {}).get('customers') or 0:,}" for c in row])
    fig = go.Figure(go.Heatmap(
        z=z, x=[side(t, "left") for t in tos], y=[side(f, "entered") for f in froms], text=text,
        texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1, xgap=2, ygap=2,
        colorbar={"title": {"text": "share of row"}, "tickformat": ".0%"},
        hovertemplate="from %{y}<br>to %{x}<br>%{text} customers (%{z:.1%} of the row)<extra></extra>"))
    fig.update_layout(xaxis={"side": "top", "tickangle": -30, "title": {"text": "this date"}},
                      yaxis={"autorange": "reversed", "title": {"text": "previous date"}},
                      margin={"l": 220, "r": 20, "t": 130, "b": 20})
    return _chart("migration", fig, 170 + 40 * len(froms))


def kpi_trends(core: Core, rows: list[dict[str, Any]]) -> list[Chart]:
    """One line chart per KPI: its value per segment (and all customers, dashed) across the dates."""
    colour = colours(core.ids, [int(r[C.SEGMENT_ID]) for r in rows])
    charts = []
    for n, kpi in enumerate(sorted({str(r[C.KPI]) for r in rows})):
        mine = sorted((r for r in rows if r[C.KPI] == kpi), key=lambda r: r[C.AS_OF_DATE])
        fig = go.Figure()
        segs = sorted({int(r[C.SEGMENT_ID]) for r in mine}, key=lambda s: (s == C.POPULATION_SEGMENT_ID, s))
        for seg in segs:
            pts = [r for r in mine if r[C.SEGMENT_ID] == seg]
            fig.add_trace(go.Scatter(
                x=[str(r[C.AS_OF_DATE]) for r in pts], y=[r["value"] for r in pts], mode="lines+markers",
                name=label(core, seg), line={"color": colour[seg], "width": 2,
                                             "dash": "dash" if seg == C.POPULATION_SEGMENT_ID else "solid"},
                hovertemplate="%{fullData.name}<br>%{x}: %{y:,.4~g}<extra></extra>"))
        fig.update_layout(title={"text": text(kpi, 60), "x": 0.01, "font": {"size": 14}},
                          xaxis={"type": "category"}, legend={"orientation": "h", "y": -0.2},
                          margin={"l": 60, "r": 10, "t": 40, "b": 40})
        charts.append(_chart(f"kpi-{n}", fig, 300 + 20 * len(segs)))
    return charts
