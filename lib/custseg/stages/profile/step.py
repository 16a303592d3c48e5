"""Profile step: describe the segments of one segment run against the whole population.

Reads segments and customer_features at the versions the segment stage recorded for the date, and the
model bundle the segments were assigned with, so that the profile describes exactly the features and
segments of that run even if features were computed again since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.errors import StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, lineage, models
from custseg.stages.profile import transform as T

log = logging.getLogger(__name__)


@dataclass
class ProfileResult(StageResult):
    segments_run_id: str
    model_run_id: str
    segments: list[dict[str, Any]] = field(default_factory=list)  # k + 1 rows: id, customers, shares

    def describe(self) -> str:
        rows = [f"    segment {p['segment_id']:>2}: {p['customers']:>10,} customers ({p['customer_share']:6.1%}), "
                f"{(p['revenue_share'] or 0):6.1%} of revenue" for p in self.segments if p["segment_id"] >= 0]
        return "segments (0 = highest spend):\n" + "\n".join(rows)


def run(spark: SparkSession, ctx: StageContext) -> ProfileResult:
    """Profile the segments of the run's date into segment_profiles."""
    cfg, as_of = ctx.cfg, ctx.date
    seg_path, feat_path = cfg.table_path(C.TABLE_SEGMENTS), cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
    entry = lineage.latest(spark, cfg, "segment", as_of)
    seg_version = entry.writes.get(C.TABLE_SEGMENTS) if entry else delta.version(spark, seg_path)
    if seg_version is None:
        raise StageError(f"no segments table at {seg_path}: run `custseg segment --as-of {as_of}` first")
    segs = delta.read(spark, seg_path, seg_version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    first = segs.select(C.RUN_ID, C.MODEL_RUN_ID).first()
    if first is None:
        raise StageError(f"no segments as of {as_of}: run `custseg segment --as-of {as_of}` first")
    seg_run, model_run = first[0], first[1]
    feat_version = entry.reads.get(C.TABLE_CUSTOMER_FEATURES) if entry else delta.version(spark, feat_path)
    if feat_version is None:
        raise StageError(f"no customer_features table at {feat_path}")
    feats = delta.read(spark, feat_path, feat_version).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    bundle = models.load(spark, models.find(spark, cfg.table_path(C.TABLE_MODELS), as_of, model_run))
    log.info("profile: segments of run %s (model %s), features version %d, segments version %d", seg_run, model_run,
             feat_version, seg_version)
    keys = models.map_keys(feats, [C.CATEGORY_SPEND_SHARE, C.CHANNEL_SPEND_SHARE])
    profile_cols = T.profile_columns(feats, keys)
    centre_cols = [(i.name, i.imputed_col, i.inverse) for i in bundle.meta.inputs]
    # the model's inputs may include customer attributes (attributes.cluster_on): joined for the model only
    with_attrs = models.with_attributes(spark, cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES), feats,
                                        models.attribute_names(bundle.meta.inputs))
    joined = bundle.model_units(with_attrs).select(*feats.columns, *[i.imputed_col for i in bundle.meta.inputs]) \
        .join(segs.select(C.CUSTOMER_ID, C.SEGMENT_ID), C.CUSTOMER_ID)
    profiles = joined.transform(T.segment_profiles(profile_cols, centre_cols, seg_run)).select(
        F.lit(as_of).alias(C.AS_OF_DATE), "*", F.lit(model_run).alias(C.MODEL_RUN_ID))
    # the k + 1 rows computed (and conformed to the table) before the write, which is then the stage's last step:
    # nothing after it can fail and leave the date's profiles replaced by a failed run. They are collected (k + 1
    # rows, whatever the number of customers) and written from the driver: a cached DataFrame would do the same
    # but plans its shuffles without AQE's coalescing (200 tasks per stage: 12 s of the sample's 20 s stage)
    conformed = delta.conform(profiles, C.TABLE_SEGMENT_PROFILES)
    rows = conformed.collect()
    summary = sorted(rows, key=lambda r: r[C.SEGMENT_ID])
    written = delta.replace_partition(spark.createDataFrame(rows, conformed.schema),
                                      cfg.table_path(C.TABLE_SEGMENT_PROFILES), C.TABLE_SEGMENT_PROFILES, as_of,
                                      ctx.run_id)
    summary_rows = [{k: r[k] for k in (C.SEGMENT_ID, "customers", "customer_share", "revenue_share")} for r in summary]
    return ProfileResult(seg_run, model_run, summary_rows,
                         reads={C.TABLE_SEGMENTS: seg_version, C.TABLE_CUSTOMER_FEATURES: feat_version},
                         writes={C.TABLE_SEGMENT_PROFILES: written})
