"""Features step: customer features as of a date from the transactions table, replacing that date's partition."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.errors import StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta
from custseg.stages.features import transform as T

log = logging.getLogger(__name__)


@dataclass
class FeaturesResult(StageResult):
    as_of: str
    customers: int
    top_categories: list[str] = field(default_factory=list)
    top_channels: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"features.customers": self.customers}

    def describe(self) -> str:
        return f"{self.customers:,} customers as of {self.as_of}"


def run(spark: SparkSession, ctx: StageContext) -> FeaturesResult:
    """Compute customer features as of the run's date and replace that date's partition."""
    cfg, as_of = ctx.cfg, ctx.date
    path = cfg.table_path(C.TABLE_TRANSACTIONS)
    tx_version = delta.version(spark, path)
    if tx_version is None:
        raise StageError(f"no transactions table at {path}: run `custseg ingest` first")
    tx = delta.read(spark, path, tx_version).transform(T.filter_as_of(as_of))
    if tx.isEmpty():
        raise StageError(f"no transactions on or before {as_of}: nothing to compute")
    tops = T.top_values(tx, {C.CATEGORY: cfg["features.top_categories"], C.CHANNEL: cfg["features.top_channels"]})
    top_categories, top_channels = tops[C.CATEGORY], tops[C.CHANNEL]
    log.info("features: as of %s; top categories %s; channels %s", as_of, top_categories or "(none)",
             top_channels or "(none)")
    obs = Observation("features")
    feats = tx.transform(
        T.customer_features(as_of, top_categories, top_channels, cfg["features.windows_days"])
    ).observe(obs, F.count(F.lit(1)).alias("rows"))
    written = delta.replace_partition(feats, cfg.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES,
                                      as_of, ctx.run_id)
    result = FeaturesResult(str(as_of), int(obs.get["rows"]), top_categories, top_channels,
                            reads={C.TABLE_TRANSACTIONS: tx_version}, writes={C.TABLE_CUSTOMER_FEATURES: written})
    log.info("features: %d customers as of %s", result.customers, as_of)
    return result
