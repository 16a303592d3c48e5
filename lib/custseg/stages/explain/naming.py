"""Names, reasons, distinguishing features and actions for a handful of segments: pure Python over the profile's
k + 1 rows (never over customers). Deterministic: the same profile gives the same names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from custseg.stages.explain.vocabulary import SCORES, Action, Naming, Playbook

OTHER_KEY = "other"  # the share maps' bucket for everything outside the top keys: never a qualifier


@dataclass
class Segment:
    """What naming needs of one segment: its profile (means, medians, lifts by feature) and size."""

    segment_id: int
    customers: int
    share: float
    revenue_share: float | None
    mean: dict[str, float | None]
    median: dict[str, float | None]
    lift: dict[str, float | None]
    scores: dict[str, int] = field(default_factory=dict)  # r, f, m

    def facts(self) -> dict[str, float | None]:
        """The condition language's names -> values for this segment."""
        out: dict[str, float | None] = {s: float(v) for s, v in self.scores.items()}
        out["share"] = self.share
        for prefix, values in (("lift", self.lift), ("median", self.median), ("mean", self.mean)):
            out.update({f"{prefix}.{k}": v for k, v in values.items()})
        return out


@dataclass(frozen=True)
class Named:
    name: str  # unique within the run
    rule: str  # the naming rule's name (the base name, before qualifiers)
    reasons: str


def rfm_score(value: float | None, cuts: Sequence[float], lower_is_better: bool) -> int:
    """1-5: how many of the population's quintile cuts (20/40/60/80%) `value` exceeds, turned into a score
    where 5 is best (most recent for recency, most for frequency and spend). None scores 1 (worst) for
    frequency and spend, and for recency (a segment without a purchase is not recent)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 1
    above = sum(1 for c in cuts if value > c)
    return 5 - above if lower_is_better else 1 + above


def score_segments(segments: Sequence[Segment], naming: Naming, cuts: Mapping[str, Sequence[float]]) -> None:
    """Fill each segment's r, f, m from its medians and the population's quintile cuts per scored feature (a
    feature without cuts, absent from the features table, leaves its score unset)."""
    for seg in segments:
        for score in SCORES:
            feature = naming.scores[score]
            if feature in cuts:  # else unset: a condition on it does not hold
                seg.scores[score] = rfm_score(seg.median.get(feature), cuts[feature], lower_is_better=score == "r")


def _fmt_lift(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2g}x" if abs(v) < 10 else f"{v:.0f}x"


def _label(naming: Naming, feature: str) -> str:
    if "." in feature:  # a share-map key: category_spend_share.electronics -> "electronics share"
        return f"{feature.split('.', 1)[1]} share"
    return naming.label(feature)


def qualifier(seg: Segment, naming: Naming) -> tuple[str, list[str]]:
    """The channel / category the segment leans to (its words, and the features behind them)."""
    words, used = [], []
    for map_name in naming.qualifier_maps:
        best: tuple[float, str] | None = None
        prefix = f"{map_name}."
        for feature, lift in seg.lift.items():
            if not feature.startswith(prefix) or lift is None:
                continue
            key = feature[len(prefix):]
            share = seg.mean.get(feature)
            if key == OTHER_KEY or share is None or share < naming.qualifier_min_share:
                continue
            if lift >= naming.qualifier_min_lift and (best is None or (lift, key) > best):
                best = (lift, key)
        if best is not None:
            words.append(best[1])
            used.append(prefix + best[1])
    return " ".join(words), used


TIER = re.compile(r" \((?:higher spend|lower spend|spend tier \d+)\)$")


def kept_name(previous: str | None, seg: Segment, naming: Naming) -> tuple[str, Any] | None:
    """(`previous` without its spend tier, its rule) when the naming rule behind `previous` still holds for the
    segment: a segment whose profile has not clearly changed keeps its name (qualifier included)."""
    if not previous:
        return None
    base = TIER.sub("", previous)
    rules = sorted((r for r in naming.rules if base == r.name or base.startswith(r.name + " - ")),
                   key=lambda r: -len(r.name))
    if rules and rules[0].when.holds(seg.facts()):
        return base, rules[0]
    return None


def name_segments(segments: Sequence[Segment], naming: Naming,
                  previous: Mapping[int, str] | None = None) -> dict[int, Named]:
    """Each segment's name (first rule that holds, plus its qualifier), unique within the run, with reasons.

    A segment with a name from an earlier date (`previous`, by stable segment id) keeps it while the rule
    behind it still holds."""
    base: dict[int, tuple[str, str, list[str]]] = {}
    for seg in segments:
        facts = seg.facts()
        kept = kept_name((previous or {}).get(seg.segment_id), seg, naming)
        rule = kept[1] if kept else next((r for r in naming.rules if r.when.holds(facts)), None)
        rule_name = rule.name if rule else naming.fallback
        qual, qual_features = qualifier(seg, naming)
        name = f"{rule_name} - {qual}" if qual else rule_name
        if kept:
            name = kept[0]
        elif rule is None:
            name = f"{naming.fallback} {seg.segment_id}"
        features = [naming.scores[s] for s in SCORES]
        for fact in (rule.when.names() if rule else []):
            stat, _, feature = fact.partition(".")
            if stat == "lift" and feature not in features:
                features.append(feature)
        features += [f for f in qual_features if f not in features]
        reasons = []
        for i, feature in enumerate(features):
            reasons.append(f"{_label(naming, feature)} {_fmt_lift(seg.lift.get(feature))}"
                           + (" population" if i == 0 else ""))
        if rule is None:
            reasons.append("no naming rule holds")
        if kept:
            reasons.append("name kept from the previous date (its rule still holds)")
        base[seg.segment_id] = (name, rule_name, reasons)
    by_id = {s.segment_id: s for s in segments}
    names = {i: b[0] for i, b in base.items()}
    for name in sorted(set(names.values())):
        same = sorted((i for i, n in names.items() if n == name),
                      key=lambda i: (-(by_id[i].lift.get(naming.scores["m"]) or 0.0), i))
        if len(same) < 2:
            continue
        tiers = ["higher spend", "lower spend"] if len(same) == 2 else [f"spend tier {j}" for j in
                                                                         range(1, len(same) + 1)]
        for i, tier in zip(same, tiers, strict=True):
            names[i] = f"{name} ({tier})"
    return {i: Named(names[i], base[i][1], ", ".join(base[i][2])) for i in names}


def top_features(seg: Segment, population_mean: Mapping[str, float | None], population_std: Mapping[str, float | None],
                 n: int) -> list[dict[str, Any]]:
    """The n features whose segment mean differs most from the population's, in population standard deviations
    (standardised mean difference); features that do not vary are skipped."""
    rows: list[dict[str, Any]] = []
    for feature, mean in seg.mean.items():
        pop, std = population_mean.get(feature), population_std.get(feature)
        if mean is None or pop is None or not std or not math.isfinite(std) or std <= 0:
            continue
        smd = (mean - pop) / std
        rows.append({"feature": feature, "direction": "higher" if smd > 0 else "lower", "smd": smd,
                     "lift": seg.lift.get(feature), "segment_mean": mean, "population_mean": pop})
    rows.sort(key=lambda r: (-abs(float(r["smd"])), str(r["feature"])))
    return rows[:n]


def pick_action(seg: Segment, named: Named, playbook: Playbook) -> tuple[Action, str, bool]:
    """The first playbook entry serving the segment (by its base name, or a condition that holds), the reason,
    and whether it is the default (nothing matched)."""
    facts = seg.facts()
    for entry in playbook.entries:
        if named.rule.lower() in entry.names:
            return entry, f"playbook entry {entry.action!r} serves segments named {named.rule!r}", False
        if entry.when is not None and entry.when.holds(facts):
            values = ", ".join(f"{k}={_fmt(facts.get(k))}" for k in entry.when.names())
            return entry, f"playbook entry {entry.action!r}: {entry.when.text} holds ({values})", False
    return playbook.default, f"no playbook entry serves {named.rule!r}: the default action", True


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:g}" if float(v).is_integer() else f"{v:.3g}"
