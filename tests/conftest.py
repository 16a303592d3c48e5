"""Shared fixtures: one local SparkSession with Delta for the whole run, in UTC.

The session is built the way custseg builds it (`custseg.io.session.build_session`), from a Config made of
`--set`-style overrides, so the tests also exercise the session set-up. Everything runs on two cores with
two shuffle partitions: the test data is tiny, and scheduling, not work, dominates.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Delta's jars fetched at set-up; an explicit CUSTSEG_JARS_DIR wins.
os.environ.setdefault("CUSTSEG_JARS_DIR", str(REPO / "jars"))
# Python workers (if any) run the interpreter running the tests.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# Collected timestamps come back as naive datetimes in the Python process's local zone, and naive
# datetimes given to createDataFrame are read in it: make that zone UTC, like the Spark session's.
os.environ["TZ"] = "UTC"
time.tzset()

SESSION_TZ = "UTC"

# The JVM options of every Spark JVM the tests start (this session's, and the cluster and benchmark tests'
# drivers and executors): many tiny jobs on 2 cores, where C2's compiler threads cost more CPU than its code
# saves, and the serial collector for small heaps.
SMALL_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

# scripts/test.sh runs the suite on two pytest-xdist workers, a module at a time per worker (each worker has its
# own SparkSession, and a module's fixtures are built once). The longest modules go first, so that the two
# workers finish at about the same time: each module's seconds in a two-worker run (order only; a module not named
# here comes after these, in file order).
MODULE_SECONDS = {
    "test_cluster.py": 785, "test_e2e.py": 359, "test_scoring.py": 345, "test_over_time.py": 279,
    "test_pipeline_ingest.py": 259, "test_report.py": 189, "test_bench.py": 177, "test_own_logs.py": 129,
    "test_stage_failures.py": 107, "test_segment.py": 89, "test_sources.py": 63, "test_export.py": 42,
    "test_monitor.py": 40, "test_attributes.py": 25, "test_delta.py": 24,
}
# modules that share what they build (test_report_browser imports test_report's builders): one worker runs both
SAME_WORKER = {"test_report_browser.py": "test_report.py"}


def _module_of(nodeid: str) -> str:
    name = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return SAME_WORKER.get(name, name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest modules first (a stable sort: within a module, and among the unnamed ones, file order)."""
    items.sort(key=lambda item: -MODULE_SECONDS.get(_module_of(item.nodeid), 0))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """One module per work unit (xdist's loadscope), with test_report_browser.py in test_report.py's unit."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return _module_of(nodeid)

    config.option.loadscopereorder = False  # keep the order above, not xdist's (by number of tests)
    return ModuleScheduling(config, log)


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The one SparkSession of the test run (local[2], Delta configured, UI off, 2 shuffle partitions)."""
    from custseg.core import config
    from custseg.io import session

    root = tmp_path_factory.mktemp("spark-session")
    cfg = config.load(
        None,
        [
            "spark.master=local[2]",
            # pyspark's default heap is 1 GB: late in the run the old generation filled with the plans of
            # earlier modules and the JVM spent minutes in full collections (439 of them, 479 s, at 71%)
            "spark.driver_memory=3g",
            "spark.shuffle_partitions=2",
            "spark.app_name=custseg-tests",
            f"input.path={root}/unused.csv",
            f"output.root={root}/output",
            "input.columns.customer_id=customer",
            "input.columns.timestamp=ts",
            "input.columns.amount=amount",
            "spark.conf.spark.ui.enabled=false",
            "spark.conf.spark.sql.shuffle.partitions=2",
            "spark.conf.spark.default.parallelism=2",
            "spark.conf.spark.databricks.delta.snapshotPartitions=1",
            f"spark.conf.spark.sql.warehouse.dir={root}/warehouse",
            # many tiny jobs on 2 cores: C2 compiler threads and whole-stage codegen cost more than they save.
            # C1 alone gets a 48 MB code cache by default, which this suite's generated code overflows (the
            # JVM then flushes and recompiles without end): 256 MB holds it (about 95 MB used)
            f"spark.conf.spark.driver.extraJavaOptions={SMALL_JVM} -XX:ReservedCodeCacheSize=256m",
            "spark.conf.spark.sql.codegen.wholeStage=false",
        ],
    )
    spark = session.build_session(cfg, "tests")
    spark.conf.set("spark.sql.session.timeZone", SESSION_TZ)
    yield spark
    spark.stop()


@pytest.fixture(scope="module", autouse=True)
def _forget_earlier_modules() -> Iterator[None]:
    """After each module, when the session runs: drop cached DataFrames, Delta's cached table snapshots and what
    custseg kept of small tables and bundles (the module's tables were in its temporary folders), so the JVM does
    not carry every earlier module's plans."""
    yield
    from pyspark.sql import SparkSession

    from custseg.io import memo

    memo.clear()
    spark = SparkSession.getActiveSession()
    if spark is not None:
        spark.catalog.clearCache()
        spark.sparkContext._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()


@pytest.fixture(autouse=True)
def _restore_session_time_zone(request: pytest.FixtureRequest) -> Iterator[None]:
    """Ingest sets spark.sql.session.timeZone from input.timezone: put UTC back after every Spark test."""
    yield
    if "spark" in request.fixturenames:
        request.getfixturevalue("spark").conf.set("spark.sql.session.timeZone", SESSION_TZ)
