"""Declared tables, conformed writes, reads at a version, and the lineage that records them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from custseg.core import catalog, config
from custseg.core import columns as C
from custseg.core.errors import StageError
from custseg.io import delta, lineage
from custseg.stages.features.transform import filter_as_of

D1, D2 = dt.date(2024, 6, 30), dt.date(2024, 7, 31)


def _segments(spark, as_of: dt.date, ids: list[str], segment: int):  # type: ignore[no-untyped-def]
    rows = [(as_of, c, segment, 0.5, "run-a", "model-a", C.ASSIGNMENT_FITTED) for c in ids]
    return spark.createDataFrame(rows, catalog.SEGMENTS_SCHEMA)


def test_a_declared_table_is_created_empty_with_its_schema_also_at_a_file_uri(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = f"file://{tmp_path}/segments"  # Delta's table builder refuses file:// URIs; custseg's creation does not
    delta.ensure(spark, path, C.TABLE_SEGMENTS)
    df = delta.read(spark, path)
    assert df.count() == 0 and df.schema.names == catalog.SEGMENTS_SCHEMA.names
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert list(detail["partitionColumns"]) == [C.AS_OF_DATE]
    v0 = delta.version(spark, path)
    delta.ensure(spark, path, C.TABLE_SEGMENTS)  # idempotent: no new commit
    assert delta.version(spark, path) == v0


@pytest.mark.parametrize("from_log", [True, False], ids=["delta-log", "history-fallback"])
def test_version_is_the_latest_commit_also_one_made_by_another_writer(spark, tmp_path: Path, monkeypatch,  # type: ignore[no-untyped-def]
                                                                       from_log: bool) -> None:
    from delta.tables import DeltaTable

    if not from_log:  # another Delta release, whose internal API custseg cannot call: the public way answers
        def fails(*_: object) -> tuple[str, int]:
            raise RuntimeError("no such method")
        monkeypatch.setattr(delta, "log_state", fails)
    path = f"file://{tmp_path}/t"
    assert delta.version(spark, path) is None  # no table
    spark.range(3).write.format("delta").save(path)
    assert delta.version(spark, path) == 0
    for _ in range(2):  # commits that custseg's session did not make through custseg
        spark.range(1).write.format("delta").mode("append").save(f"{tmp_path}/t")
    assert delta.version(spark, path) == 2
    assert delta.version(spark, path) == DeltaTable.forPath(spark, path).history(1).first()["version"]
    if from_log:  # this Delta release: the fast way itself answers (no silent fallback)
        table_id, version = delta.log_state(spark, path)
        assert version == 2 and table_id == DeltaTable.forPath(spark, path).detail().first()["id"]


def test_partition_replacement_and_reads_at_a_version(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = f"file://{tmp_path}/segments"
    v1 = delta.replace_partition(_segments(spark, D1, ["a", "b"], 0), path, C.TABLE_SEGMENTS, D1)
    v2 = delta.replace_partition(_segments(spark, D2, ["a"], 1), path, C.TABLE_SEGMENTS, D2)
    v3 = delta.replace_partition(_segments(spark, D1, ["c"], 2), path, C.TABLE_SEGMENTS, D1)  # a re-run of D1
    assert v1 < v2 < v3
    now = {(r[C.AS_OF_DATE], r[C.CUSTOMER_ID]) for r in delta.read(spark, path).collect()}
    assert now == {(D1, "c"), (D2, "a")}
    then = {(r[C.AS_OF_DATE], r[C.CUSTOMER_ID]) for r in delta.read(spark, path, v2).collect()}
    assert then == {(D1, "a"), (D1, "b"), (D2, "a")}


def test_the_first_write_creates_the_table_in_one_commit_and_checks_the_partition(spark, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                                   monkeypatch) -> None:
    path = f"file://{tmp_path}/segments"
    # rows of another date than the one replaced: refused, and no table is left behind (Delta checks
    # replaceWhere only against an existing table; the creating write checks its rows itself)
    with pytest.raises(Exception, match=f"segments: a row to write for {C.AS_OF_DATE} = {D1} has another"):
        delta.replace_partition(_segments(spark, D1, ["a"], 0).union(_segments(spark, D2, ["b"], 0)), path,
                                C.TABLE_SEGMENTS, D1)
    assert not delta.exists(spark, path)
    assert delta.replace_partition(_segments(spark, D1, ["a", "b"], 0), path, C.TABLE_SEGMENTS, D1) == 0
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert list(detail["partitionColumns"]) == [C.AS_OF_DATE]
    assert delta.read(spark, path).schema.names == catalog.SEGMENTS_SCHEMA.names

    # another run creates the table between this run's look and its write: the rows go into that table
    runs = f"{tmp_path}/runs"
    real_exists, looked = delta.exists, []

    def not_yet(spark_, p: str) -> bool:
        if p == runs and not looked:
            looked.append(p)
            _segments(spark, D2, ["x"], 1).write.format("delta").partitionBy(C.AS_OF_DATE).save(runs)  # its 1st commit
            return False
        return real_exists(spark_, p)

    monkeypatch.setattr(delta, "exists", not_yet)
    assert delta.append(_segments(spark, D1, ["y"], 2), runs, C.TABLE_SEGMENTS) == 1
    assert sorted(r[C.CUSTOMER_ID] for r in delta.read(spark, runs).collect()) == ["x", "y"]


def test_a_write_that_does_not_match_the_declaration_is_refused(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    df = _segments(spark, D1, ["a"], 0).drop(C.MODEL_RUN_ID, C.ASSIGNMENT).withColumnRenamed(C.DISTANCE, "dist")
    expected = (r"^segments: the rows to write do not match the table's declared schema "
                r"\(missing: distance_to_centre, model_run_id, assignment; unexpected: dist\)$")
    with pytest.raises(StageError, match=expected):
        delta.replace_partition(df, str(tmp_path / "segments"), C.TABLE_SEGMENTS, D1)
    # a column of another type is cast to the declared one
    from pyspark.sql import functions as F

    cast = _segments(spark, D1, ["a"], 0).withColumn(C.SEGMENT_ID, F.col(C.SEGMENT_ID).cast("string"))
    delta.replace_partition(cast, str(tmp_path / "segments"), C.TABLE_SEGMENTS, D1)
    assert dict(delta.read(spark, str(tmp_path / "segments")).dtypes)[C.SEGMENT_ID] == "int"


def test_lineage_gives_the_newest_record_and_falls_back_to_the_current_version(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = config.load(None, [f"input.path={tmp_path}/x.csv", f"output.root={tmp_path}/out",
                             "input.columns.customer_id=c", "input.columns.timestamp=t", "input.columns.amount=a"])
    assert lineage.latest(spark, cfg, "features", D1) is None
    seg_path = cfg.table_path(C.TABLE_SEGMENTS)
    assert lineage.input_version(spark, cfg, C.TABLE_SEGMENTS, "segment", D1) is None  # no table, no record
    v = delta.replace_partition(_segments(spark, D1, ["a"], 0), seg_path, C.TABLE_SEGMENTS, D1)
    assert lineage.input_version(spark, cfg, C.TABLE_SEGMENTS, "segment", D1) == v  # no record: current version
    lineage.record(spark, cfg, lineage.Entry("segment", "run-1", D1, {C.TABLE_CUSTOMER_FEATURES: 3},
                                             {C.TABLE_SEGMENTS: v}))
    delta.replace_partition(_segments(spark, D1, ["b"], 0), seg_path, C.TABLE_SEGMENTS, D1)  # written by no stage
    assert lineage.input_version(spark, cfg, C.TABLE_SEGMENTS, "segment", D1) == v  # the recorded one
    lineage.record(spark, cfg, lineage.Entry("segment", "run-2", D1, {}, {C.TABLE_SEGMENTS: v + 1}))
    lineage.record(spark, cfg, lineage.Entry("segment", "run-3", D2, {}, {C.TABLE_SEGMENTS: 99}))
    lineage.record(spark, cfg, lineage.Entry("ingest", "run-4", None, {}, {C.TABLE_TRANSACTIONS: 7}))
    newest = lineage.latest(spark, cfg, "segment", D1)
    assert newest is not None and (newest.run_id, newest.writes) == ("run-2", {C.TABLE_SEGMENTS: v + 1})
    undated = lineage.latest(spark, cfg, "ingest", None)
    assert undated is not None and undated.writes == {C.TABLE_TRANSACTIONS: 7}


def test_a_concurrent_commit_is_one_line_that_says_what_to_do() -> None:
    from delta.exceptions.base import ConcurrentAppendException

    from custseg import cli

    e = ConcurrentAppendException(message="[DELTA_CONCURRENT_APPEND.WITHOUT_HINT] ConcurrentAppendException: Files "
                                          "were added to the root of the table by a concurrent update.\n\tat ...")
    assert cli._one_line(e) == delta.CONCURRENT_HINT
    assert cli._one_line(ValueError("x\ny")) == "ValueError: x"


def test_a_table_from_an_earlier_custseg_gains_the_newly_declared_columns(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a manifest written before `state` was declared
    path = str(tmp_path / "ingested_files")
    old = spark.createDataFrame([("file:/a.csv", "b1", "r1", dt.datetime(2024, 1, 1))],
                                "file_path string, ingest_batch string, run_id string, ingested_at timestamp")
    old.write.format("delta").save(path)
    new = spark.createDataFrame([("file:/b.csv", "b2", "r2", dt.datetime(2024, 2, 1), "done")],
                                catalog.INGESTED_FILES_SCHEMA)
    delta.append(new, path, C.TABLE_INGESTED_FILES)
    rows = {r[C.FILE_PATH]: r[C.FILE_STATE] for r in delta.read(spark, path).collect()}
    assert rows == {"file:/a.csv": None, "file:/b.csv": "done"}
    # still no other change: a column the declaration does not have is refused
    with pytest.raises(StageError, match="unexpected: extra"):
        delta.append(new.withColumn("extra", F.lit(1)), path, C.TABLE_INGESTED_FILES)


def _transactions(spark, day: dt.date, customer: str):  # type: ignore[no-untyped-def]
    row = (customer, "t1", dt.datetime.combine(day, dt.time(12)), 5.0, 1.0, 5.0, False, "books", "web", "DE",
           "file:/a.csv", "b1", day, day.replace(day=1))
    return spark.createDataFrame([row], catalog.TRANSACTIONS_SCHEMA)


def test_transactions_are_partitioned_by_month_and_an_earlier_daily_table_is_kept_until_overwritten(
        spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a new table: by month, as declared
    fresh = str(tmp_path / "fresh")
    delta.append(_transactions(spark, dt.date(2024, 6, 3), "c1"), fresh, C.TABLE_TRANSACTIONS)
    assert delta.partition_columns(spark, fresh) == [C.TXN_MONTH]
    # a table an earlier custseg wrote, by day and without txn_month: an append adds the column and keeps the
    # table's own partitioning (no error, no rewrite)
    old = str(tmp_path / "old")
    _transactions(spark, dt.date(2024, 5, 1), "c0").drop(C.TXN_MONTH).write.format("delta") \
        .partitionBy(C.TXN_DATE).save(old)
    delta.append(_transactions(spark, dt.date(2024, 6, 3), "c1"), old, C.TABLE_TRANSACTIONS)
    assert delta.partition_columns(spark, old) == [C.TXN_DATE]
    rows = sorted((r[C.CUSTOMER_ID], r[C.TXN_MONTH]) for r in delta.read(spark, old).collect())
    assert rows == [("c0", None), ("c1", dt.date(2024, 6, 1))]
    # the features' cut reads the earlier rows by their day
    cut = delta.read(spark, old).transform(filter_as_of(dt.date(2024, 6, 30)))
    assert sorted(r[C.CUSTOMER_ID] for r in cut.collect()) == ["c0", "c1"]
    assert delta.read(spark, old).transform(filter_as_of(dt.date(2024, 5, 31))).count() == 1
    # an overwrite makes it the declared table, by month, in one commit
    delta.overwrite(_transactions(spark, dt.date(2024, 7, 9), "c2"), old, C.TABLE_TRANSACTIONS)
    assert delta.partition_columns(spark, old) == [C.TXN_MONTH]
    rows = [(r[C.CUSTOMER_ID], r[C.TXN_MONTH]) for r in delta.read(spark, old).collect()]
    assert rows == [("c2", dt.date(2024, 7, 1))]
