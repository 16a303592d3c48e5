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
    from pyspark import SparkContext
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
    jvm_running = "PYSPARK_GATEWAY_PORT" in os.environ or SparkContext._active_spark_context is not None
    if cfg["spark.quiet_logs"] and not jvm_running:
        _quiet_at_launch(conf)
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    if cfg["spark.quiet_logs"] and jvm_running:
        _quiet_running_jvm(spark)
    spark.sparkContext.setLogLevel(cfg["spark.log_level"])
    log.info("spark %s, master %s, %d default parallelism", spark.version, spark.sparkContext.master,
             spark.sparkContext.defaultParallelism)
    return spark


LOG4J2_FILE = Path(__file__).with_name("log4j2.properties")
_LOG4J2_PROPERTY = "log4j2.configurationFile"
SPARK_DEFAULT_LOG4J2 = "org/apache/spark/log4j2-defaults.properties"  # inside Spark's jar: no configuration given


def _quiet_at_launch(conf: dict[str, str]) -> None:
    """Start the JVM with custseg's log4j2 configuration, unless its options name one already."""
    opts = conf.get("spark.driver.extraJavaOptions", "")
    if _LOG4J2_PROPERTY not in opts and LOG4J2_FILE.is_file():
        conf["spark.driver.extraJavaOptions"] = f"{opts} -D{_LOG4J2_PROPERTY}={LOG4J2_FILE.as_uri()}".strip()


def _quiet_running_jvm(spark: SparkSession) -> None:
    """Under spark-submit the driver's JVM is already running: switch it to custseg's log4j2 configuration
    when it runs on Spark's built-in defaults (never over a configuration the user or cluster gave)."""
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        context = jvm.org.apache.logging.log4j.LogManager.getContext(False)
        location = str(context.getConfigLocation() or "")
        spark_logging = getattr(getattr(jvm.org.apache.spark.internal, "Logging$"), "MODULE$")  # a Scala object
        on_defaults = spark_logging.islog4j2DefaultConfigured() or location.endswith(SPARK_DEFAULT_LOG4J2)
        if not on_defaults or not LOG4J2_FILE.is_file():
            return
        context.setConfigLocation(jvm.java.net.URI(LOG4J2_FILE.as_uri()))
    except Exception:  # a logging nicety: never a reason to fail a run
        log.debug("could not apply custseg's log4j2 configuration to the running JVM", exc_info=True)


def _jars_given(conf: dict[str, str]) -> bool:
    """True when Delta's jars are someone else's business: set in config, or the JVM already runs.

    Under spark-submit the JVM is started before Python (PYSPARK_GATEWAY_PORT is set) and the jars
    must come with its --jars/--packages: setting spark.jars now would reach executors, not the driver.
    """
    return "spark.jars" in conf or "spark.jars.packages" in conf or "PYSPARK_GATEWAY_PORT" in os.environ
