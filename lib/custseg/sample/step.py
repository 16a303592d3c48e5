"""`custseg generate`: write the synthetic log with planted groups, and its truth file (overwriting both)."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core.config import Config
from custseg.core.stage import StageResult
from custseg.sample import generate as G

log = logging.getLogger(__name__)


@dataclass
class GenerateResult(StageResult):
    rows: int
    customers: int
    path: str
    truth_path: str

    def describe(self) -> str:
        return f"{self.rows:,} lines for {self.customers:,} customers -> {self.path}"


def run(spark: SparkSession, cfg: Config) -> GenerateResult:
    """Write the synthetic log (generate.*) and its truth file."""
    log_df, truth_df = G.generate(
        spark,
        n_customers=cfg["generate.customers"],
        seed=cfg["generate.seed"],
        start_date=dt.date.fromisoformat(cfg["generate.start_date"]),
        end_date=dt.date.fromisoformat(cfg["generate.end_date"]),
        bad_row_fraction=cfg["generate.bad_row_fraction"],
        partitions=cfg["generate.partitions"],
        activity=cfg["generate.activity"],
        n_categories=cfg["generate.categories"],
        change_date=dt.date.fromisoformat(cfg["generate.change_date"]) if cfg["generate.change_date"] else None,
        change_group=cfg["generate.change_group"],
        arrivals=cfg["generate.arrivals"],
    )
    if cfg["generate.format"] == "parquet":
        log_df = G.typed_columns(log_df)
    obs = Observation("generated")
    log_df = log_df.observe(obs, F.count(F.lit(1)).alias("rows"))
    writer = log_df.write.mode("overwrite")
    if cfg["generate.format"] == "csv":
        writer.option("header", True).csv(cfg["generate.path"])
    else:
        writer.parquet(cfg["generate.path"])
    truth_df.write.mode("overwrite").parquet(cfg["generate.truth_path"])
    result = GenerateResult(int(obs.get["rows"]), cfg["generate.customers"] + cfg["generate.arrivals"],
                            cfg["generate.path"], cfg["generate.truth_path"])
    log.info("generate: %s", result.describe())
    return result
