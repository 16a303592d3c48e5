"""Rules that recognise a segment's members: a surrogate decision tree (MLlib `DecisionTreeClassifier`) trained on
the clustering inputs in their original units to predict the segment, read back as one readable rule per leaf.

The tree is trained and scored distributed; only its handful of nodes and one k-row aggregation come back to
the driver. A rule's thresholds are rounded for people to read, and its coverage (the share of the segment's
customers it matches) and precision (the share of the customers it matches that are in the segment) are
measured with the rounded thresholds, so a rule means exactly what it says. The tree's fidelity is its own
agreement with the segments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.ml.classification import DecisionTreeClassificationModel, DecisionTreeClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from custseg.core import columns as C

TREE_FEATURES = "tree_features"
TREE_LABEL = "tree_label"
TREE_PREDICTION = "tree_prediction"
MAX_BINS = 64


@dataclass(frozen=True)
class Bound:
    """One feature's range on a path: lower < x <= upper (either may be open)."""

    feature: str
    lower: float | None = None
    upper: float | None = None

    def text(self) -> str:
        lo, hi = self.lower, self.upper
        if lo is not None and hi is not None:
            return f"{_num(lo)} < {self.feature} <= {_num(hi)}"
        if hi is not None:
            return f"{self.feature} <= {_num(hi)}"
        return f"{self.feature} > {_num(lo)}" if lo is not None else self.feature

    def column(self, value: Column) -> Column:
        cond = F.lit(True)
        if self.lower is not None:
            cond = cond & (value > F.lit(self.lower))
        if self.upper is not None:
            cond = cond & (value <= F.lit(self.upper))
        return cond


@dataclass(frozen=True)
class Leaf:
    """A root-to-leaf path of the tree: its bounds (in path order of first use) and the segment it predicts."""

    bounds: tuple[Bound, ...]
    segment_id: int

    def text(self) -> str:
        return " and ".join(b.text() for b in self.bounds) or "every customer"

    def column(self, values: dict[str, Column]) -> Column:
        cond = F.lit(True)
        for b in self.bounds:
            cond = cond & b.column(values[b.feature])
        return cond


def readable(x: float) -> float:
    """A threshold rounded for people: whole numbers from 100 up, two decimals from 1, else 3 significant digits."""
    if abs(x) >= 100:
        return float(round(x))
    if abs(x) >= 1:
        return round(x, 2)
    return float(f"{x:.3g}")


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:g}"


def assemble(df: DataFrame, features: Sequence[str]) -> DataFrame:
    """`df` (the `features` columns, numeric and non-null, and segment_id) with the tree's vector and label."""
    return VectorAssembler(inputCols=list(features), outputCol=TREE_FEATURES).transform(df) \
        .withColumn(TREE_LABEL, F.col(C.SEGMENT_ID).cast("double"))


def fit_tree(assembled: DataFrame, depth: int, seed: int) -> DecisionTreeClassificationModel:
    """Train the surrogate tree on `assemble`'s output (cache it: the tree reads it once per level)."""
    tree = DecisionTreeClassifier(featuresCol=TREE_FEATURES, labelCol=TREE_LABEL, predictionCol=TREE_PREDICTION,
                                  maxDepth=depth, maxBins=MAX_BINS, seed=seed, rawPredictionCol="tree_raw",
                                  probabilityCol="tree_probability")
    return tree.fit(assembled)  # type: ignore[no-any-return]


def leaves(model: DecisionTreeClassificationModel, features: Sequence[str]) -> list[Leaf]:
    """The tree's paths, left to right, with thresholds made readable and bounds merged per feature."""
    out: list[Leaf] = []

    def walk(node: Any, path: list[tuple[int, bool, float]]) -> None:
        if node.getClass().getSimpleName() != "InternalNode":
            out.append(Leaf(_merge(path, features), int(round(node.prediction()))))
            return
        split = node.split()
        index, threshold = int(split.featureIndex()), readable(float(split.threshold()))
        walk(node.leftChild(), [*path, (index, True, threshold)])
        walk(node.rightChild(), [*path, (index, False, threshold)])

    java_model: Any = model._java_obj
    walk(java_model.rootNode(), [])
    return out


def _merge(path: Sequence[tuple[int, bool, float]], features: Sequence[str]) -> tuple[Bound, ...]:
    order: list[int] = []
    lower: dict[int, float] = {}
    upper: dict[int, float] = {}
    for index, is_left, threshold in path:
        if index not in order:
            order.append(index)
        if is_left:  # x <= threshold
            upper[index] = min(threshold, upper.get(index, threshold))
        else:
            lower[index] = max(threshold, lower.get(index, threshold))
    return tuple(Bound(features[i], lower.get(i), upper.get(i)) for i in order)


def leaf_counts(scored: DataFrame, tree_leaves: Sequence[Leaf], values: dict[str, Column]) -> DataFrame:
    """One row per segment: its customers, how many the tree predicts right, and per leaf how many of the segment's
    customers the leaf's rule (as written) matches (`leaf_0`, `leaf_1`, ...). One aggregation."""
    aggs = [F.count(F.lit(1)).alias("customers"),
            F.sum((F.col(TREE_PREDICTION) == F.col(C.SEGMENT_ID).cast("double")).cast("long")).alias("agree")]
    aggs += [F.sum(leaf.column(values).cast("long")).alias(f"leaf_{i}") for i, leaf in enumerate(tree_leaves)]
    return scored.groupBy(C.SEGMENT_ID).agg(*aggs)


@dataclass(frozen=True)
class Rule:
    condition: str
    customers: int  # of the segment's customers, those the rule matches
    coverage: float
    precision: float


@dataclass(frozen=True)
class SegmentRules:
    rules: list[Rule]
    quality: str  # good, partial, poor
    note: str


def segment_rules(counts: dict[int, dict[str, int]], tree_leaves: Sequence[Leaf], depth: int, min_precision: float,
                  min_coverage: float) -> dict[int, SegmentRules]:
    """Per segment, from `leaf_counts`' rows (segment id -> {customers, leaf_i}): its leaves' rules with coverage
    and precision, and whether they describe the segment well."""
    matched = [sum(row.get(f"leaf_{i}", 0) for row in counts.values()) for i in range(len(tree_leaves))]
    out: dict[int, SegmentRules] = {}
    for seg, row in counts.items():
        size = row["customers"]

        def rule(i: int, row: dict[str, int] = row, size: int = size) -> Rule:
            hit = row.get(f"leaf_{i}", 0)
            return Rule(tree_leaves[i].text(), hit, hit / size if size else 0.0,
                        hit / matched[i] if matched[i] else 0.0)

        own = sorted((rule(i) for i, leaf in enumerate(tree_leaves) if leaf.segment_id == seg),
                     key=lambda r: (-r.coverage, r.condition))
        own = [r for r in own if r.customers > 0]
        if not own:
            best = max(range(len(tree_leaves)), key=lambda i: (row.get(f"leaf_{i}", 0), -i))
            closest = rule(best)
            out[seg] = SegmentRules([closest], "poor", f"the tree (depth {depth}) cannot describe this segment: no "
                                    f"leaf predicts it; the rule shown holds {closest.coverage:.0%} of it at "
                                    f"{closest.precision:.0%} precision")
            continue
        covered = sum(r.customers for r in own)
        total = sum(matched[i] for i, leaf in enumerate(tree_leaves) if leaf.segment_id == seg
                    and row.get(f"leaf_{i}", 0) > 0)
        coverage, precision = covered / size, covered / total if total else 0.0
        good = coverage >= min_coverage and precision >= min_precision
        summary = f"rules cover {coverage:.0%} of the segment at {precision:.0%} precision"
        out[seg] = SegmentRules(own, "good" if good else "partial",
                                summary if good else f"hard to describe with a depth-{depth} tree: {summary}")
    return out
