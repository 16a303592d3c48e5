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
            # many tiny jobs on 2 cores: C2 compiler threads and whole-stage codegen cost more than they save
            "spark.conf.spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
            "spark.conf.spark.sql.codegen.wholeStage=false",
        ],
    )
    spark = session.build_session(cfg, "tests")
    spark.conf.set("spark.sql.session.timeZone", SESSION_TZ)
    yield spark
    spark.stop()


@pytest.fixture(autouse=True)
def _restore_session_time_zone(request: pytest.FixtureRequest) -> Iterator[None]:
    """Ingest sets spark.sql.session.timeZone from input.timezone: put UTC back after every Spark test."""
    yield
    if "spark" in request.fixturenames:
        request.getfixturevalue("spark").conf.set("spark.sql.session.timeZone", SESSION_TZ)
