"""The business vocabulary of the explain stage: naming rules and the action playbook, read from TOML files in
conf/ and checked before Spark starts. This module imports no Spark.

Both files use one small condition language over a segment's profile:

    r, f, m          1-5 scores: where the segment's median recency, orders and spend fall among the population's
                     quintiles (5 = most recent, most orders, highest spend)
    share            the segment's share of the customers
    lift.X           the segment's mean of feature X over the population's mean (1 = like everyone)
    median.X         the segment's median of feature X, in the feature's units
    mean.X           the segment's mean of feature X

X is a column of customer_features (recency_days, total_spend, return_rate, ...) or a share-map key such as
category_spend_share.electronics. A condition combines comparisons (<, <=, >, >=, ==, !=) with `and`, `or`,
`not` and parentheses: `r <= 2 and f >= 3`, `lift.return_rate >= 2`. A feature the run does not have makes
the comparison false (a log line says so), so one file serves logs with and without, say, channels.
"""

from __future__ import annotations

import ast
import logging
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custseg.core.errors import ConfigError

log = logging.getLogger(__name__)

SCORES = ("r", "f", "m")
SCALARS = (*SCORES, "share")
STATS = ("lift", "median", "mean")

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: lambda a, b: a < b, ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b, ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b,
}


class Missing(Exception):
    """A condition named a feature this run does not have."""


@dataclass(frozen=True)
class Condition:
    """A parsed, checked condition; `holds(facts)` evaluates it for one segment."""

    text: str
    tree: ast.Expression

    def names(self) -> list[str]:
        """The facts the condition reads, in order of appearance: 'r', 'lift.return_rate', ..."""
        out: list[str] = []
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Name, ast.Attribute)) and not isinstance(getattr(node, "_parent", None),
                                                                              ast.Attribute):
                name = _dotted(node)
                if name and name not in out:
                    out.append(name)
        return out

    def holds(self, facts: Mapping[str, float | None]) -> bool:
        """True when the condition holds; False when a fact it needs is missing (or null)."""
        try:
            return bool(_eval(self.tree.body, facts))
        except Missing as e:
            log.debug("condition %r: %s is not available: false", self.text, e)
            return False


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _eval(node: ast.AST, facts: Mapping[str, float | None]) -> Any:
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, facts) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, facts)
        return (not v) if isinstance(node.op, ast.Not) else -v
    if isinstance(node, ast.Compare):
        left = _eval(node.left, facts)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _eval(right_node, facts)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Constant):
        return node.value
    name = _dotted(node)
    if name is None:  # refused by parse_condition
        raise AssertionError(f"unexpected node {ast.dump(node)}")
    value = facts.get(name)
    if value is None:
        raise Missing(name)
    return value


def parse_condition(text: str, where: str) -> Condition:
    """Parse and check a condition; a ConfigError names `where` (the file and entry) and the problem."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: `when` must be a non-empty condition")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise ConfigError(f"{where}: `when` is not a valid condition: {text!r}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            for child in ast.iter_child_nodes(node):
                child._parent = node  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.Load, ast.Not,
                             ast.USub, *_COMPARE)):
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ConfigError(f"{where}: `when` may compare with numbers only: {text!r}")
            continue
        if isinstance(node, (ast.Name, ast.Attribute)):
            if isinstance(getattr(node, "_parent", None), ast.Attribute):
                continue  # the inner part of a dotted name
            name = _dotted(node)
            root = (name or "").split(".", 1)[0]
            ok = name in SCALARS or (root in STATS and name is not None and "." in name)
            if not ok:
                raise ConfigError(f"{where}: `when` names {name or ast.unparse(node)!r}: use r, f, m, share, "
                                  f"lift.FEATURE, median.FEATURE or mean.FEATURE")
            continue
        raise ConfigError(f"{where}: `when` may only compare (<, <=, >, >=, ==, !=) and combine with and, or, "
                          f"not: {text!r}")
    return Condition(text.strip(), tree)


# --- naming rules --------------------------------------------------------------------------------

@dataclass(frozen=True)
class NameRule:
    name: str
    when: Condition


@dataclass(frozen=True)
class Naming:
    """The naming rules: the first rule whose condition holds names the segment."""

    rules: tuple[NameRule, ...]
    scores: dict[str, str]  # r/f/m -> the feature scored
    labels: dict[str, str]  # feature -> the word people use for it in reasons
    qualifier_min_lift: float
    qualifier_min_share: float
    qualifier_maps: tuple[str, ...]  # share-map features whose leading key qualifies a name
    fallback: str
    source: str = ""

    def label(self, feature: str) -> str:
        """A feature's word in reasons: its label, else the feature name itself."""
        return self.labels.get(feature, feature)


def _read_toml(path: str, what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what}: no such file: {path}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {path}: not valid TOML: {e}") from None


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    if unknown := sorted(set(table) - allowed):
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _text(table: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
    value = table.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: `{key}` must be a non-empty text")
    return value.strip()


def _number(table: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: `{key}` must be a number")
    return float(value)


def load_naming(path: str) -> Naming:
    """Read and check the naming rules file (explain.naming_rules)."""
    doc = _read_toml(path, "explain.naming_rules")
    _only(doc, {"scores", "labels", "qualifier", "rule", "fallback"}, path)
    scores = doc.get("scores", {})
    _only(scores, {"recency", "frequency", "monetary"}, f"{path}: [scores]")
    score_map = {"r": str(scores.get("recency", "recency_days")), "f": str(scores.get("frequency", "n_transactions")),
                 "m": str(scores.get("monetary", "total_spend"))}
    labels = doc.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError(f"{path}: [labels] must map feature names to texts")
    qual = doc.get("qualifier", {})
    _only(qual, {"min_lift", "min_share", "maps"}, f"{path}: [qualifier]")
    maps = qual.get("maps", ["channel_spend_share", "category_spend_share"])
    if not isinstance(maps, list) or not all(isinstance(x, str) for x in maps):
        raise ConfigError(f"{path}: [qualifier] `maps` must be a list of share-map feature names")
    rules = doc.get("rule", [])
    if not isinstance(rules, list) or not rules:
        raise ConfigError(f"{path}: no [[rule]] entries: at least one naming rule is needed")
    parsed: list[NameRule] = []
    seen: set[str] = set()
    for i, entry in enumerate(rules, 1):
        where = f"{path}: rule {i}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table with `name` and `when`")
        where = f"{path}: rule {i} ({entry.get('name', '?')!r})"
        _only(entry, {"name", "when"}, where)
        name = _text(entry, "name", where)
        if name.lower() in seen:
            raise ConfigError(f"{where}: the name {name!r} is used by an earlier rule")
        seen.add(name.lower())
        parsed.append(NameRule(name, parse_condition(entry.get("when", ""), where)))
    fallback = doc.get("fallback", "segment")
    if not isinstance(fallback, str) or not fallback.strip():
        raise ConfigError(f"{path}: `fallback` must be a non-empty text")
    return Naming(tuple(parsed), score_map, dict(labels), _number(qual, "min_lift", 2.0, f"{path}: [qualifier]"),
                  _number(qual, "min_share", 0.15, f"{path}: [qualifier]"), tuple(maps), fallback.strip(), path)


# --- the playbook ------------------------------------------------------------------------------------

ACTION_FIELDS = ("goal", "channel", "offer", "message")


@dataclass(frozen=True)
class Action:
    """One playbook entry: which segments it serves (by name or condition) and what to do."""

    action: str
    goal: str
    channel: str
    offer: str
    message: str
    priority: int
    names: tuple[str, ...] = ()
    when: Condition | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Playbook:
    """Entries in file order (the first that matches a segment gives its action) and the default."""

    entries: tuple[Action, ...]
    default: Action
    source: str = ""


def _action(entry: Mapping[str, Any], where: str, default: bool) -> Action:
    allowed = {"action", "goal", "channel", "offer", "message", "priority"} | (set() if default
                                                                               else {"names", "when"})
    _only(entry, allowed, where)
    priority = entry.get("priority", 5)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 9:
        raise ConfigError(f"{where}: `priority` must be a whole number from 1 (first) to 9")
    names = entry.get("names", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{where}: `names` must be a list of segment names")
    when = parse_condition(entry["when"], where) if "when" in entry else None
    if not default and not names and when is None:
        raise ConfigError(f"{where}: give `names` (segment names it serves) or `when` (a condition), or both")
    goal, channel, offer, message = (_text(entry, k, where) for k in ACTION_FIELDS)
    return Action(_text(entry, "action", where), goal, channel, offer, message, priority,
                  tuple(n.strip().lower() for n in names), when)


def load_playbook(path: str) -> Playbook:
    """Read and check the playbook file (explain.playbook)."""
    doc = _read_toml(path, "explain.playbook")
    _only(doc, {"default", "action"}, path)
    if not isinstance(doc.get("default"), dict):
        raise ConfigError(f"{path}: a [default] action is required (for segments no entry matches)")
    default = _action(doc["default"], f"{path}: [default]", default=True)
    entries = doc.get("action", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `action` must be a list of [[action]] tables")
    parsed = []
    for i, entry in enumerate(entries, 1):
        label = entry.get("action", "?") if isinstance(entry, dict) else "?"
        where = f"{path}: action {i} ({label!r})"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a table")
        parsed.append(_action(entry, where, default=False))
    return Playbook(tuple(parsed), default, path)
