"""Explain step: give each segment of one profile run a name, rules that recognise its members, the features that
set it apart and a recommended action -> segment_descriptions; and, when customer attributes exist, the
attributes by segment -> segment_attribute_profiles.

It reads the segment profiles the profile stage recorded for the date, and the segments and features at the
versions that profile read, so the description is of exactly that run. Naming rules and the playbook come from
conf/ (explain.naming_rules, explain.playbook) and are checked before Spark starts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, lineage, models, registry
from custseg.stages.explain import naming as N
from custseg.stages.explain import rules as R
from custseg.stages.explain import transform as T
from custseg.stages.explain import vocabulary as V

log = logging.getLogger(__name__)

POPULATION = -1
ATTRIBUTE_BOOKKEEPING = frozenset({C.CUSTOMER_ID, C.SOURCE_FILE, C.INGEST_BATCH})


def check(cfg: Config) -> None:
    """The naming rules and the playbook load and are valid (before Spark starts)."""
    V.load_naming(cfg["explain.naming_rules"])
    V.load_playbook(cfg["explain.playbook"])


@dataclass
class ExplainResult(StageResult):
    segments_run_id: str
    model_run_id: str
    tree_fidelity: float
    descriptions: list[dict[str, Any]] = field(default_factory=list)
    attribute_rows: int | None = None

    def counts(self) -> dict[str, int]:
        return {"explain.segments": len(self.descriptions)}

    def details(self) -> dict[str, str]:
        return {"explain.tree_fidelity": f"{self.tree_fidelity:.4f}",
                "explain.names": "; ".join(f"{d[C.SEGMENT_ID]}: {d[C.SEGMENT_NAME]}" for d in self.descriptions)}

    def describe(self) -> str:
        lines = [f"segment names, rules (tree fidelity {self.tree_fidelity:.1%}) and actions:"]
        for d in self.descriptions:
            lines.append(f"    {d[C.SEGMENT_ID]:>2} {d[C.SEGMENT_NAME]!r}: {d['customer_share']:.1%} of customers; "
                         f"{d['reasons']}")
            for r in d["rules"][:2]:
                lines.append(f"         rule: {r['condition']} (coverage {r['coverage']:.0%}, precision "
                             f"{r['precision']:.0%})")
            if d["rule_quality"] != "good":
                lines.append(f"         note: {d['rule_note']}")
            lines.append(f"         action: {d['action']} ({d['action_channel']}; {d['action_offer']})")
        if self.attribute_rows is not None:
            lines.append(f"    customer attributes by segment: {self.attribute_rows:,} rows")
        return "\n".join(lines)


def _profile_segment(row: Row) -> N.Segment:
    return N.Segment(int(row[C.SEGMENT_ID]), int(row["customers"]), float(row["customer_share"]),
                     row["revenue_share"], dict(row["feature_mean"] or {}), dict(row["feature_median"] or {}),
                     dict(row["feature_lift"] or {}))


def run(spark: SparkSession, ctx: StageContext) -> ExplainResult:
    """Describe the segments of the date's latest profile in segment_descriptions (and attribute profiles)."""
    cfg, as_of = ctx.cfg, ctx.date
    naming, playbook = V.load_naming(cfg["explain.naming_rules"]), V.load_playbook(cfg["explain.playbook"])
    entry = lineage.latest(spark, cfg, "profile", as_of)
    if entry is None or C.TABLE_SEGMENT_PROFILES not in entry.writes:
        raise StageError(f"no segment profiles as of {as_of}: run `custseg profile --as-of {as_of}` first")
    prof_version = entry.writes[C.TABLE_SEGMENT_PROFILES]
    seg_version, feat_version = entry.reads[C.TABLE_SEGMENTS], entry.reads[C.TABLE_CUSTOMER_FEATURES]
    profile_rows = delta.read(spark, cfg.table_path(C.TABLE_SEGMENT_PROFILES), prof_version) \
        .filter(F.col(C.AS_OF_DATE) == F.lit(as_of)).collect()  # k + 1 rows
    pop_rows = [r for r in profile_rows if r[C.SEGMENT_ID] == POPULATION]
    if not pop_rows:
        raise StageError(f"segment profiles as of {as_of} have no population row: run `custseg profile` again")
    population = pop_rows[0]
    seg_run, model_run = population[C.RUN_ID], population[C.MODEL_RUN_ID]
    segments = sorted((_profile_segment(r) for r in profile_rows if r[C.SEGMENT_ID] != POPULATION),
                      key=lambda s: s.segment_id)
    segs = delta.read(spark, cfg.table_path(C.TABLE_SEGMENTS), seg_version) \
        .filter(F.col(C.AS_OF_DATE) == F.lit(as_of)).filter(F.col(C.RUN_ID) == F.lit(seg_run)) \
        .select(C.CUSTOMER_ID, C.SEGMENT_ID)
    feats = delta.read(spark, cfg.table_path(C.TABLE_CUSTOMER_FEATURES), feat_version) \
        .filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    log.info("explain: segments of run %s (model %s), profile version %d", seg_run, model_run, prof_version)

    # the population's statistics: quintile cuts for r, f, m and each feature's spread (one aggregation)
    features = sorted(population["feature_mean"] or {})
    # a scored feature the table lacks leaves its score (r, f or m) unset: conditions on it do not hold
    scored = [f for s in V.SCORES if (f := naming.scores[s]).partition(".")[0] in feats.columns]
    stats = feats.transform(lambda df: T.population_stats(df, features, scored)).first()
    assert stats is not None
    population_std = {f: stats[f"std_{i}"] for i, f in enumerate(features)}
    cuts = {f: [float(c) for c in (stats[f"cuts_{j}"] or [])] for j, f in enumerate(scored)}
    N.score_segments(segments, naming, cuts)
    reg_path = cfg.table_path(C.TABLE_SEGMENT_REGISTRY)
    reg = registry.read(spark, reg_path)
    named = N.name_segments(segments, naming, registry.previous_names(reg, as_of))

    # the surrogate tree, on the model's inputs in original units (imputed as the model imputes them)
    bundle = models.load(spark, models.find(spark, cfg.table_path(C.TABLE_MODELS), as_of, model_run))
    inputs = bundle.meta.inputs
    names = [i.name for i in inputs]
    cols = [f"x{j}" for j in range(len(inputs))]
    with_attrs = models.with_attributes(spark, cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES), feats,
                                        models.attribute_names(inputs))  # attributes.cluster_on, if any
    train = bundle.model_units(with_attrs).select(
        C.CUSTOMER_ID, *[i.inverse(F.col(i.imputed_col)).alias(c) for i, c in zip(inputs, cols, strict=True)]) \
        .join(segs, C.CUSTOMER_ID)
    # not cached: MLlib's tree caches its own binned copy of the input, and a cached join would run its shuffle
    # without AQE's coalescing; the input is read for the splits, for that copy, and once for the counts
    assembled = R.assemble(train, cols)
    depth = int(cfg["explain.tree_depth"])
    tree = R.fit_tree(assembled, depth, int(cfg["run.seed"]))
    tree_leaves = R.leaves(tree, names)
    values = {n: F.col(c) for n, c in zip(names, cols, strict=True)}
    counted = tree.transform(assembled).transform(lambda df: R.leaf_counts(df, tree_leaves, values)).collect()
    counts = {int(r[C.SEGMENT_ID]): r.asDict() for r in counted}
    total = sum(r["customers"] for r in counts.values())
    fidelity = sum(r["agree"] for r in counts.values()) / total if total else 0.0
    rules = R.segment_rules(counts, tree_leaves, depth, float(cfg["explain.rule_min_precision"]),
                            float(cfg["explain.rule_min_coverage"]))
    log.info("explain: surrogate tree of depth %d, %d leaves, fidelity %.4f", depth, len(tree_leaves), fidelity)

    descriptions = []
    for seg in segments:
        n = named[seg.segment_id]
        action, reason, fallback = N.pick_action(seg, n, playbook)
        seg_rules = rules.get(seg.segment_id) or R.SegmentRules([], "poor", "the segment has no customers")
        descriptions.append({
            C.AS_OF_DATE: as_of, C.SEGMENT_ID: seg.segment_id, C.SEGMENT_NAME: n.name, "name_rule": n.rule,
            "reasons": n.reasons, "customers": seg.customers, "customer_share": seg.share,
            "revenue_share": seg.revenue_share,
            "rules": [{"condition": r.condition, "customers": r.customers, "coverage": r.coverage,
                       "precision": r.precision} for r in seg_rules.rules],
            "rule_quality": seg_rules.quality, "rule_note": seg_rules.note, "tree_fidelity": fidelity,
            "tree_depth": depth,
            "top_features": N.top_features(seg, population["feature_mean"], population_std,
                                           int(cfg["explain.top_features"])),
            "action": action.action, "action_goal": action.goal, "action_channel": action.channel,
            "action_offer": action.offer, "action_message": action.message, "action_priority": action.priority,
            "action_reason": reason, "action_is_fallback": fallback, C.RUN_ID: seg_run, C.MODEL_RUN_ID: model_run,
        })
        log.info("explain: segment %d %r (%s); action %r: %s", seg.segment_id, n.name, n.reasons, action.action,
                 reason)

    reads = {C.TABLE_SEGMENT_PROFILES: prof_version, C.TABLE_SEGMENTS: seg_version,
             C.TABLE_CUSTOMER_FEATURES: feat_version}
    writes: dict[str, int] = {}
    attribute_rows = _attribute_profiles(spark, ctx, segs, seg_run, model_run, reads, writes)
    # the descriptions last: a failure before this leaves the date's earlier descriptions in place
    schema = catalog.SEGMENT_DESCRIPTIONS_SCHEMA
    out = spark.createDataFrame([tuple(d[f] for f in schema.names) for d in descriptions], schema)
    writes[C.TABLE_SEGMENT_DESCRIPTIONS] = delta.replace_partition(
        out, cfg.table_path(C.TABLE_SEGMENT_DESCRIPTIONS), C.TABLE_SEGMENT_DESCRIPTIONS, as_of, ctx.run_id)
    if reg:  # the date's names join each segment id's name history
        named_ids = {int(d[C.SEGMENT_ID]): str(d[C.SEGMENT_NAME]) for d in descriptions}
        updated = registry.with_names(reg, as_of, ctx.run_id, named_ids)
        writes[C.TABLE_SEGMENT_REGISTRY] = registry.write(spark, reg_path, updated, ctx.run_id)
    return ExplainResult(seg_run, model_run, fidelity, descriptions, attribute_rows, reads=reads, writes=writes)


def _attribute_profiles(spark: SparkSession, ctx: StageContext, segs: DataFrame, seg_run: str, model_run: str,
                        reads: dict[str, int], writes: dict[str, int]) -> int | None:
    """Attributes by segment when a customer_attributes table exists; else the date's old rows are removed."""
    cfg, as_of = ctx.cfg, ctx.date
    path = cfg.table_path(C.TABLE_SEGMENT_ATTRIBUTE_PROFILES)
    attr_path = cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES)
    # only while attributes are configured: a table left from an earlier configuration is not profiled
    attr_version = delta.version(spark, attr_path) if cfg["attributes.path"] else None
    if attr_version is None:
        if delta.exists(spark, path):  # a re-run without attributes: no stale profiles for the date
            empty = spark.createDataFrame([], catalog.SEGMENT_ATTRIBUTE_PROFILES_SCHEMA)
            writes[C.TABLE_SEGMENT_ATTRIBUTE_PROFILES] = delta.replace_partition(
                empty, path, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, as_of, ctx.run_id)
        return None
    from custseg.stages.explain import attributes as A

    attrs = delta.read(spark, attr_path, attr_version)
    categorical = [f.name for f in attrs.schema.fields
                   if f.name not in ATTRIBUTE_BOOKKEEPING and f.dataType.typeName() == "string"]
    numeric = [f.name for f in attrs.schema.fields
               if f.name not in ATTRIBUTE_BOOKKEEPING and f.dataType.typeName() in ("double", "long", "integer")]
    profiles = A.attribute_profiles(segs, attrs.select(C.CUSTOMER_ID, *categorical, *numeric), categorical, numeric,
                                    int(cfg["attributes.max_values"]))
    rows = profiles.select(F.lit(as_of).alias(C.AS_OF_DATE), "*", F.lit(seg_run).alias(C.RUN_ID),
                           F.lit(model_run).alias(C.MODEL_RUN_ID))
    conformed = delta.conform(rows, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES)
    collected = conformed.collect()  # segments x attribute values: small, bounded by attributes.max_values
    reads[C.TABLE_CUSTOMER_ATTRIBUTES] = attr_version
    writes[C.TABLE_SEGMENT_ATTRIBUTE_PROFILES] = delta.replace_partition(
        spark.createDataFrame(collected, conformed.schema), path, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, as_of,
        ctx.run_id)
    return len(collected)
