"""Sections 3 to 8 of the report: the profile heatmap, distributions, the 2-D map, model selection, customer
attributes and the segments over time. Each adds its section to the page, or one line saying why it is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from custseg.core import columns as C
from custseg.stages.report import figures as G
from custseg.stages.report.data import Core, Omitted, Selection
from custseg.stages.report.figures import esc
from custseg.stages.report.history import Attributes, OverTime
from custseg.stages.report.page import Page, count, pct, table
from custseg.stages.report.sample import Distribution, MapData


def profile_heatmap(page: Page, core: Core, features: Sequence[str]) -> None:
    """3. Segments x features, coloured by lift against the population."""
    chart = G.heatmap(core, features)
    if chart is None:
        page.add("", "", page.omit(Omitted("profile", "Profile heatmap", "the profiles hold none of the features")))
        return
    lead = ('<p class="lead">Each cell is the segment\'s mean of a feature against all customers\' mean (the lift); '
            'red: higher, blue: lower, on a log scale that saturates at 8 times. Hover for the mean, the median and '
            'the population\'s mean.</p>')
    page.add("profile", "Profile heatmap", lead + page.chart(chart))


def distributions(page: Page, core: Core, dists: Sequence[Distribution], skipped: Sequence[str]) -> None:
    """4. Box plots of the key features per segment, from quantiles computed in Spark."""
    if not dists:
        page.add("", "", page.omit(Omitted("distributions", "Distributions", "no numeric feature to show")))
        return
    lead = ('<p class="lead">Per segment and for all customers: the box spans the 25th to the 75th percentile, the '
            'line is the median, the dashed line the mean, the whiskers the 5th and 95th percentiles (approximate '
            'quantiles computed in Spark).</p>')
    charts = "".join(page.chart(G.distribution(core, d, i)) for i, d in enumerate(dists))
    note = (f'<p class="small">Not shown (not a numeric feature of customer_features): {esc(", ".join(skipped))}.</p>'
            if skipped else "")
    page.add("distributions", "Distributions of the key features", f'{lead}<div class="grid2">{charts}</div>{note}')


def segment_map(page: Page, core: Core, data: MapData | Omitted) -> None:
    """5. The customers on two principal components, coloured by segment, the centres marked."""
    if isinstance(data, Omitted):
        page.add("", "", page.omit(data))
        return
    rates = ", ".join(f"{s}: {data.fractions.get(s, 0.0):.1%}" for s in core.ids)
    lead = (f'<p class="lead" data-fact="map_points" data-value="{data.drawn}">{data.drawn:,} of {data.total:,} '
            'customers, a seeded sample stratified by segment (small segments are drawn at a higher rate, so the map '
            'shows where the segments lie, not their sizes), in the model\'s scaled space projected on its first two '
            'principal components (fitted on the sample); the crosses are the segment centres.</p>')
    page.add("map", "Map of the customers",
             lead + page.chart(G.segment_map(core, data)) + f'<p class="small">Sampling rate by segment: {rates}.</p>')


def model_selection(page: Page, sel: Selection | Omitted) -> None:
    """6. The validity measures and cost against k per algorithm, the chosen model marked; every candidate."""
    if isinstance(sel, Omitted):
        page.add("", "", page.omit(sel))
        return

    def f(x: float | None, digits: int = 4) -> str:
        return "n/a" if x is None else f"{x:.{digits}g}"

    rows = [(r["algorithm"], r["k"], f(r["silhouette"]), f(r["davies_bouldin"]), f(r["calinski_harabasz"]),
             f(r["cost"]), pct(r["min_share"]), "yes" if r["eligible"] else "no", r["outcome"] or "")
            for r in sel.candidates]
    classes = ["chosen" if r["chosen"] else "" for r in sel.candidates]
    candidates = table(["algorithm", "k", "silhouette", "Davies-Bouldin", "Calinski-Harabasz", "cost",
                        "smallest segment", "eligible", "outcome"], rows, numeric=[1, 2, 3, 4, 5, 6], row_class=classes)
    body = (f'<p class="why">{esc(sel.why)}.</p>' + page.chart(G.selection(sel))
            + f'<h3>Every candidate</h3>{candidates}<p class="small">Measured on the selection sample '
            f'({count(sel.candidates[0].get("sample_rows"))} customers); the chosen row is highlighted.</p>')
    page.add("selection", "Model selection", body)


def attributes(page: Page, core: Core, attrs: Attributes | Omitted) -> None:
    """7. Customer attributes by segment: shares of each categorical value, numeric means and medians."""
    if isinstance(attrs, Omitted):
        page.add("", "", page.omit(attrs))
        return
    parts = [page.chart(G.attribute_shares(core, a, rows, i)) for i, (a, rows) in enumerate(attrs.categorical.items())]
    for a, rows in attrs.numeric.items():
        known = [r for r in rows if r[C.ATTRIBUTE_VALUE] is None]
        parts.append(f"<h3>{esc(a)}</h3>" + table(
            ["segment", "customers with a value", "mean", "median", "lift of the mean"],
            [(G.plain_label(core, r[C.SEGMENT_ID]), count(r["customers"]), G.num(r["mean"]), G.num(r["median"]),
              G.num(r["lift"])) for r in known], numeric=[1, 2, 3, 4]))
    lead = '<p class="lead">Each segment\'s customers by attribute value; hover for the lift and the p-value.</p>'
    page.add("attributes", "Customer attributes by segment", lead + "".join(parts))


def over_time(page: Page, core: Core, data: OverTime) -> None:
    """8. Migration since the previous date, drift against the model's training, KPI trends."""
    if not data.earlier:
        page.add("", "", page.omit(Omitted("over_time", "Over time", f"{core.as_of} is the first as-of date with "
                                                                     "segment profiles: nothing earlier to compare")))
        return
    parts = [f'<p class="lead" data-fact="earlier_dates" data-value="{len(data.earlier)}">Earlier as-of dates: '
             f'{esc(", ".join(str(d) for d in data.earlier[-6:]))}'
             f'{" and " + str(len(data.earlier) - 6) + " more" if len(data.earlier) > 6 else ""}.</p>']
    omitted = {o.panel: o for o in data.omitted}
    if data.migration is not None:
        parts.append(f'<h3 id="migration" data-section="migration">Migration since {esc(data.previous_as_of)}</h3>'
                     + page.chart(G.migration(core, data.migration)))
    else:
        parts.append(page.omit(omitted["migration"]))
    if data.drift is not None:
        parts.append(_drift(data.drift))
    else:
        parts.append(page.omit(omitted["drift"]))
    if data.kpis is not None:
        charts = "".join(page.chart(c) for c in G.kpi_trends(core, data.kpis))
        parts.append(f'<h3 id="kpis" data-section="kpis">KPI trends</h3><div class="grid2">{charts}</div>')
    else:
        parts.append(page.omit(omitted["kpis"]))
    page.add("over-time", "Over time", "".join(parts))


def _drift(rows: list[dict[str, object]]) -> str:
    overall = next((r for r in rows if r["scope"] == C.DRIFT_SCOPE_OVERALL), None)
    status = str((overall or {}).get("status") or "n/a")
    head = (f'<h3 id="drift" data-section="drift">Drift against the model\'s training <span class="badge '
            f'{esc(status)}" data-fact="drift_status">{esc(status)}</span></h3>')
    if overall is not None:
        head += (f'<p class="why">Decision: <b>{esc(overall.get("decision") or "n/a")}</b>. '
                 f'{esc(overall.get("reasons") or "")}</p>')

    def n(x: object, fmt: str) -> str:
        return "n/a" if not isinstance(x, int | float) else format(x, fmt)

    segs = [r for r in rows if r["scope"] == C.DRIFT_SCOPE_SEGMENT]
    inputs = [r for r in rows if r["scope"] == C.DRIFT_SCOPE_INPUT]
    out = head
    if segs:
        out += table(["segment", "training share", "share", "change", "mean distance change", "far share", "status"],
                     [(r[C.SEGMENT_ID], n(r["training_share"], ".1%"), n(r["share"], ".1%"),
                       n(r["share_change"], "+.1%"), n(r["mean_distance_change"], "+.1%"), n(r["far_share"], ".1%"),
                       r["status"]) for r in segs], numeric=[1, 2, 3, 4, 5])
    if inputs:
        out += table(["model input", "population stability index", "status"],
                     [(r["item"], n(r["psi"], ".3f"), r["status"]) for r in inputs], numeric=[1])
    return out
