"""The SparkSession: local or cluster, with Delta Lake configured and its jars found offline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from custseg.core.config import Config

from custseg.core.errors import CustsegError

log = logging.getLogger(__name__)

JARS_ENV = "CUSTSEG_JARS_DIR"

# Settings every custseg session gets. Delta's snapshot state defaults to 50 partitions, which on a
# small table costs more in task scheduling than the work itself.
BASE_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.databricks.delta.snapshotPartitions": "4",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.session.timeZone": "UTC",
}


def delta_jars(jars_dir: str | Path | None = None) -> list[str]:
    """Delta's jars fetched at set-up (scripts/setup.sh), from $CUSTSEG_JARS_DIR or ./jars."""
    candidates = [jars_dir, os.environ.get(JARS_ENV), Path.cwd() / "jars", Path(__file__).resolve().parents[2] / "jars"]
    for cand in candidates:
        if cand and Path(cand).is_dir():
            jars = sorted(str(p) for p in Path(cand).glob("*.jar"))
            if any("delta-spark" in Path(j).name for j in jars):
                return jars
    return []


def build_session(cfg: Config, app_suffix: str = "") -> SparkSession:
    """Create (or reuse) the SparkSession described by `cfg`.

    In local mode custseg starts the JVM itself and adds Delta's jars from the set-up folder. Under
    spark-submit the jars come with `--jars`/`--packages`; the master is whatever spark-submit chose
    unless `spark.master` is set.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(f"{cfg['spark.app_name']}{'-' + app_suffix if app_suffix else ''}")
    if cfg["spark.master"]:
        builder = builder.master(cfg["spark.master"])
    conf = dict(BASE_CONF)
    if cfg["spark.shuffle_partitions"]:
        conf["spark.sql.shuffle.partitions"] = str(cfg["spark.shuffle_partitions"])
    if cfg["spark.driver_memory"]:
        conf["spark.driver.memory"] = cfg["spark.driver_memory"]
    conf.update(cfg.spark_conf)
    if not _jars_given(conf):
        jars = delta_jars()
        if not jars:
            raise CustsegError(
                "Delta Lake jars not found: run scripts/setup.sh (fills ./jars), set CUSTSEG_JARS_DIR, "
                "or submit with --jars/--packages"
            )
        conf["spark.jars"] = ",".join(jars)
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg["spark.log_level"])
    log.info("spark %s, master %s, %d default parallelism", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    return spark


def _jars_given(conf: dict[str, str]) -> bool:
    """True when Delta's jars are someone else's business: set in config, or the JVM already runs.

    Under spark-submit the JVM is started before Python (PYSPARK_GATEWAY_PORT is set) and the jars
    must come with its --jars/--packages: setting spark.jars now would reach executors, not the driver.
    """
    return "spark.jars" in conf or "spark.jars.packages" in conf or "PYSPARK_GATEWAY_PORT" in os.environ
