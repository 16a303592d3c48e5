"""Ingest and features end to end through the pipeline functions, writing Delta tables under tmp_path."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from custseg import runner
from custseg.core import columns as C
from custseg.core import config
from custseg.core.catalog import QUARANTINE_SCHEMA, TRANSACTIONS_SCHEMA
from custseg.core.config import Config
from custseg.core.errors import InputError, StageError
from custseg.io import delta as tables
from custseg.stages.ingest import manifest

HEADER = "CustomerID,InvoiceNo,InvoiceDate,Quantity,UnitPrice,Category,Channel,Country"
COLUMNS = [
    "input.columns.customer_id=CustomerID",
    "input.columns.transaction_id=InvoiceNo",
    "input.columns.timestamp=InvoiceDate",
    "input.columns.quantity=Quantity",
    "input.columns.unit_price=UnitPrice",
    "input.columns.category=Category",
    "input.columns.channel=Channel",
    "input.columns.country=Country",
]
ALL_TABLES = (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE, C.TABLE_INGESTED_FILES, C.TABLE_CUSTOMER_FEATURES)

# 10 lines: 4 clean, 1 exact duplicate (same invoice line twice), 5 bad ones, one per reason
MAIN_LINES = [
    "00012,INV1,2024-06-01 10:00:00,2,5.00,books,online,UK",
    "00012,INV1,2024-06-01 10:00:00,1,3.00,toys,online,UK",
    "00012,INV1,2024-06-01 10:00:00,1,3.00,toys,online,UK",  # duplicate of the line above
    "00034,INV8,2024-06-01 15:00:00,3,2.00,garden,store,DE",
    "00034,INV2,2024-06-02 11:00:00,-1,5.00,books,store,DE",  # a return
    ",INV3,2024-06-02 12:00:00,1,1.00,books,store,UK",  # missing_customer_id
    "00056,INV4,not-a-date,1,1.00,books,store,UK",  # unparsable_timestamp
    "00056,INV5,2099-01-01 00:00:00,1,1.00,books,store,UK",  # future_timestamp
    "00056,INV6,2024-06-03 09:00:00,x,1.00,books,store,UK",  # unparsable_quantity
    "00056,INV7,2024-06-03 09:30:00,1,,books,store,UK",  # missing_amount
]
MAIN_REASONS = {
    "missing_customer_id": 1,
    "unparsable_timestamp": 1,
    "future_timestamp": 1,
    "unparsable_quantity": 1,
    "missing_amount": 1,
}

A_LINES = [
    "00100,A1,2024-05-01 10:00:00,1,10.00,books,online,UK",
    "00101,A2,2024-05-02 10:00:00,2,2.50,toys,store,UK",
]
B_LINES = [
    "00100,B1,2024-05-10 10:00:00,1,4.00,books,online,UK",
    "00102,B2,2024-05-11 10:00:00,1,1.00,toys,store,UK",
    "00102,B3,bad-date,1,1.00,toys,store,UK",  # unparsable_timestamp
]


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def make_cfg(input_path: Path, root: Path, *extra: str) -> Config:
    return config.load(None, [f"input.path={input_path}", f"output.root={root}", *COLUMNS, *extra])


def count(spark: SparkSession, cfg: Config, table: str) -> int:
    return tables.read(spark, cfg.table_path(table)).count()


def reasons_in_table(spark: SparkSession, cfg: Config) -> dict[str, int]:
    return {r[C.REASON]: r["n"] for r in tables.read(spark, cfg.table_path(C.TABLE_QUARANTINE))
            .groupBy(C.REASON).agg(F.count(F.lit(1)).alias("n")).collect()}


def assert_no_tables(root: Path) -> None:
    for table in ALL_TABLES:
        assert not (root / table).exists(), table


# --- overwrite ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def main_ingest(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, dict]:
    """One overwrite ingest of MAIN_LINES; shared by the overwrite and features tests."""
    base = tmp_path_factory.mktemp("main")
    cfg = make_cfg(write_csv(base / "in" / "log.csv", MAIN_LINES), base / "out")
    try:
        result = runner.run_stage(spark, cfg, "ingest")
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")
    return cfg, result


def test_overwrite_ingest_counts(spark: SparkSession, main_ingest: tuple[Config, dict]) -> None:
    cfg, result = main_ingest
    assert result.mode == "overwrite"
    assert result.new_files == 1
    assert (result.input, result.clean, result.quarantined, result.duplicates) == (10, 4, 5, 1)
    assert result.input == result.clean + result.quarantined + result.duplicates
    assert result.quarantine_reasons == MAIN_REASONS

    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 4
    assert reasons_in_table(spark, cfg) == MAIN_REASONS
    tx = tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS)).collect()
    assert Counter(r[C.CUSTOMER_ID] for r in tx) == {"00012": 2, "00034": 2}  # leading zeros kept
    assert sorted(r[C.AMOUNT] for r in tx) == [-5.0, 3.0, 6.0, 10.0]
    assert sorted(r[C.IS_RETURN] for r in tx) == [False, False, False, True]
    assert sorted(r[C.TXN_DATE] for r in tx) == [dt.date(2024, 6, 1)] * 3 + [dt.date(2024, 6, 2)]
    listed = tables.read(spark, cfg.table_path(C.TABLE_INGESTED_FILES)).collect()
    assert len(listed) == 1
    assert listed[0][C.FILE_PATH].endswith("/in/log.csv")


def test_overwrite_with_clean_input_empties_the_quarantine_without_a_second_pass(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(write_csv(tmp_path / "in" / "log.csv", MAIN_LINES), tmp_path / "out")
    runner.run_stage(spark, cfg, "ingest")
    assert count(spark, cfg, C.TABLE_QUARANTINE) == 5
    write_csv(tmp_path / "in" / "log.csv", A_LINES)  # the same path, now without a bad line
    with caplog.at_level("INFO", logger="custseg.stages.ingest.step"):
        result = runner.run_stage(spark, cfg, "ingest")
    assert (result.input, result.clean, result.quarantined) == (2, 2, 0)
    assert "without a second pass" in caplog.text
    assert count(spark, cfg, C.TABLE_QUARANTINE) == 0  # the earlier bad rows are gone with the earlier input
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 2
    assert tables.read(spark, cfg.table_path(C.TABLE_QUARANTINE)).columns == QUARANTINE_SCHEMA.names


def test_overwrite_ingest_again_replaces_rather_than_adds(
    spark: SparkSession, main_ingest: tuple[Config, dict]
) -> None:
    cfg, first = main_ingest
    run_id = runner.new_run_id()
    again = runner.run_stage(spark, cfg, "ingest", run_id=run_id)
    assert (again.input, again.clean, again.quarantined, again.duplicates) == (10, 4, 5, 1)
    assert again.quarantine_reasons == MAIN_REASONS
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 4
    assert reasons_in_table(spark, cfg) == MAIN_REASONS
    assert count(spark, cfg, C.TABLE_INGESTED_FILES) == 1
    batches = {r[0] for r in tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS))
               .select(C.INGEST_BATCH).distinct().collect()}
    assert batches == {run_id}


# --- features partitions ------------------------------------------------------------------------

def test_features_partition_replaced_per_as_of_date(spark: SparkSession, main_ingest: tuple[Config, dict]) -> None:
    cfg, _ = main_ingest
    d1, d2 = dt.date(2024, 6, 1), dt.date(2024, 6, 2)
    path = cfg.table_path(C.TABLE_CUSTOMER_FEATURES)

    def spend_by_customer(as_of: dt.date) -> dict[str, float]:
        rows = tables.read(spark, path).filter(F.col(C.AS_OF_DATE) == F.lit(as_of)).collect()
        return {r[C.CUSTOMER_ID]: r[C.TOTAL_SPEND] for r in rows}

    first = runner.run_stage(spark, cfg, "features", d1)
    assert first.customers == 2
    assert first.top_categories == ["books", "garden", "toys"]  # gross 10, 6, 3
    assert count(spark, cfg, C.TABLE_CUSTOMER_FEATURES) == 2

    second = runner.run_stage(spark, cfg, "features", d1)
    assert second.customers == 2
    assert count(spark, cfg, C.TABLE_CUSTOMER_FEATURES) == 2  # replaced, not added
    assert second.writes[C.TABLE_CUSTOMER_FEATURES] == first.writes[C.TABLE_CUSTOMER_FEATURES] + 1
    # as of 06-01: 00012 bought 2 x 5.00 + 1 x 3.00, 00034 bought 3 x 2.00
    assert spend_by_customer(d1) == {"00012": 13.0, "00034": 6.0}

    runner.run_stage(spark, cfg, "features", d2)
    assert count(spark, cfg, C.TABLE_CUSTOMER_FEATURES) == 4
    assert spend_by_customer(d1) == {"00012": 13.0, "00034": 6.0}  # untouched
    assert spend_by_customer(d2) == {"00012": 13.0, "00034": 1.0}  # 00034 returned 5.00 on 06-02


def test_features_before_any_transaction_is_a_stage_error(
    spark: SparkSession, main_ingest: tuple[Config, dict]
) -> None:
    cfg, _ = main_ingest
    with pytest.raises(StageError, match="no transactions on or before 2024-05-31"):
        runner.run_stage(spark, cfg, "features", dt.date(2024, 5, 31))


# --- append -------------------------------------------------------------------------------------

def batch_counts(spark: SparkSession, cfg: Config, table: str) -> dict[str, int]:
    return {r[0]: r[1] for r in tables.read(spark, cfg.table_path(table)).groupBy(C.INGEST_BATCH).count().collect()}


def test_append_ingests_only_new_files(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "a.csv", A_LINES)
    cfg = make_cfg(folder, tmp_path / "out", "ingest.mode=append")

    run1 = runner.new_run_id()
    r1 = runner.run_stage(spark, cfg, "ingest", run_id=run1)
    assert (r1.new_files, r1.input, r1.clean, r1.quarantined) == (1, 2, 2, 0)
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 2

    write_csv(folder / "b.csv", B_LINES)
    run2 = runner.new_run_id()
    r2 = runner.run_stage(spark, cfg, "ingest", run_id=run2)
    assert (r2.new_files, r2.input, r2.clean, r2.quarantined, r2.duplicates) == (1, 3, 2, 1, 0)
    assert r2.quarantine_reasons == {"unparsable_timestamp": 1}
    assert batch_counts(spark, cfg, C.TABLE_TRANSACTIONS) == {run1: 2, run2: 2}
    tx = tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS)).collect()
    assert sorted((r[C.TRANSACTION_ID], os.path.basename(r[C.SOURCE_FILE])) for r in tx) == [
        ("A1", "a.csv"), ("A2", "a.csv"), ("B1", "b.csv"), ("B2", "b.csv"),
    ]
    assert batch_counts(spark, cfg, C.TABLE_QUARANTINE) == {run2: 1}
    listed = tables.read(spark, cfg.table_path(C.TABLE_INGESTED_FILES)).collect()
    assert sorted(os.path.basename(r[C.FILE_PATH]) for r in listed) == ["a.csv", "b.csv"]
    assert {r[C.FILE_STATE] for r in listed} == {"done"}

    version = tables.version(spark, cfg.table_path(C.TABLE_TRANSACTIONS))
    r3 = runner.run_stage(spark, cfg, "ingest")
    assert (r3.new_files, r3.input, r3.clean) == (0, 0, 0)
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 4
    assert count(spark, cfg, C.TABLE_INGESTED_FILES) == 2
    assert tables.version(spark, cfg.table_path(C.TABLE_TRANSACTIONS)) == version  # no commit at all


def test_append_recovers_a_crashed_batch(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "a.csv", A_LINES)
    cfg = make_cfg(folder, tmp_path / "out", "ingest.mode=append")
    run1 = runner.new_run_id()
    runner.run_stage(spark, cfg, "ingest", run_id=run1)

    # a run that wrote b.csv's rows to transactions and quarantine, then died before the manifest
    b_file = write_csv(folder / "b.csv", B_LINES).as_uri()
    crashed = "crashed-run"
    rows = [
        ("00100", "B1", dt.datetime(2024, 5, 10, 10), 4.0, 1.0, 4.0, False, "books", "online", "UK", b_file, crashed,
         dt.date(2024, 5, 10), dt.date(2024, 5, 1)),
        ("00102", "B2", dt.datetime(2024, 5, 11, 10), 1.0, 1.0, 1.0, False, "toys", "store", "UK", b_file, crashed,
         dt.date(2024, 5, 11), dt.date(2024, 5, 1)),
    ]
    tables.append(spark.createDataFrame(rows, TRANSACTIONS_SCHEMA), cfg.table_path(C.TABLE_TRANSACTIONS),
                  C.TABLE_TRANSACTIONS)
    quarantine_row = spark.createDataFrame(
        [("unparsable_timestamp", ["unparsable_timestamp"], {"InvoiceNo": "B3"}, b_file, crashed,
          dt.datetime(2024, 7, 1), dt.date(2024, 7, 1))],
        "reason string, reasons array<string>, raw_record map<string,string>, source_file string, "
        "ingest_batch string, quarantined_at timestamp, quarantine_date date",
    )
    tables.append(quarantine_row, cfg.table_path(C.TABLE_QUARANTINE), C.TABLE_QUARANTINE)
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 4

    run2 = runner.new_run_id()
    r2 = runner.run_stage(spark, cfg, "ingest", run_id=run2)
    assert (r2.new_files, r2.input, r2.clean, r2.quarantined) == (1, 3, 2, 1)
    assert batch_counts(spark, cfg, C.TABLE_TRANSACTIONS) == {run1: 2, run2: 2}
    assert batch_counts(spark, cfg, C.TABLE_QUARANTINE) == {run2: 1}
    tx = tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS))
    tx_ids = sorted(r[0] for r in tx.select(C.TRANSACTION_ID).collect())
    assert tx_ids == ["A1", "A2", "B1", "B2"]


def test_recover_without_manifest_clears_everything(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "none.csv", tmp_path / "out")
    rows = [("c1", "T1", dt.datetime(2024, 5, 10, 10), 4.0, None, None, False, None, None, None, "f", "orphan",
             dt.date(2024, 5, 10), dt.date(2024, 5, 1))]
    tables.append(spark.createDataFrame(rows, TRANSACTIONS_SCHEMA), cfg.table_path(C.TABLE_TRANSACTIONS),
                  C.TABLE_TRANSACTIONS)
    manifest.recover(spark, cfg, dt.datetime.now(dt.UTC))
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 0


def test_append_with_a_space_in_the_input_path(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "my input"
    write_csv(folder / "a.csv", A_LINES)
    cfg = make_cfg(folder, tmp_path / "out", "ingest.mode=append")
    result = runner.run_stage(spark, cfg, "ingest")
    assert (result.new_files, result.clean) == (1, 2)


def test_csv_files_with_differently_ordered_headers(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "a.csv", ["00012,INV1,2024-06-01 10:00:00,2,5.00,books,online,UK"])
    write_csv(folder / "b.csv", ["store,toys,00034,INV2,2024-06-02 11:00:00,1,3.00,DE"],
              "Channel,Category,CustomerID,InvoiceNo,InvoiceDate,Quantity,UnitPrice,Country")
    cfg = make_cfg(folder, tmp_path / "out")
    # read by position under a.csv's names, b.csv's channel would become its customer id: refused instead
    with pytest.raises(Exception, match="(?i)header"):
        runner.run_stage(spark, cfg, "ingest")
    # the write failed before its commit: data files may exist, but no row is visible (the tables exist only as
    # their catalog declaration, created empty before the first write)
    for table in ALL_TABLES:
        path = str(tmp_path / "out" / table)
        assert not tables.exists(spark, path) or tables.read(spark, path).count() == 0, table


# --- bad input: nothing written -----------------------------------------------------------------

def test_missing_mapped_column(spark: SparkSession, tmp_path: Path) -> None:
    header = "CustomerID,InvoiceNo,InvoiceDate,Quantity,UnitPrice,Category,Country"
    path = write_csv(tmp_path / "no_channel.csv", ["00012,INV1,2024-06-01 10:00:00,2,5.00,books,UK"], header)
    cfg = make_cfg(path, tmp_path / "out")
    with pytest.raises(InputError) as e:
        runner.run_stage(spark, cfg, "ingest")
    assert str(e.value) == (
        "input: mapped column not in the log: input.columns.channel='Channel' "
        "(columns found: CustomerID, InvoiceNo, InvoiceDate, Quantity, UnitPrice, Category, Country)"
    )
    assert_no_tables(tmp_path / "out")


def test_header_only_input(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "empty.csv", [])
    cfg = make_cfg(path, tmp_path / "out")
    with pytest.raises(InputError) as e:
        runner.run_stage(spark, cfg, "ingest")
    assert str(e.value) == f"input.path: no rows in {path}; nothing was written"
    assert_no_tables(tmp_path / "out")


def test_missing_input_path(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "absent.csv", tmp_path / "out")
    with pytest.raises(InputError, match=r"^input\.path: nothing found at .*absent\.csv$"):
        runner.run_stage(spark, cfg, "ingest")
    assert_no_tables(tmp_path / "out")


def test_features_without_transactions_table(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path / "x.csv", tmp_path / "out")
    with pytest.raises(StageError, match="run `custseg ingest` first"):
        runner.run_stage(spark, cfg, "features", dt.date(2024, 6, 1))


# --- real-log findings: whole-record duplicates, concurrent appends, all-bad overwrites -----------

GROCERY_HEADER = "household_key,basket_id,purchase_time,product_id,department,quantity,sales_value,store_id"
GROCERY_LINES = [  # one basket: two products equal on every mapped role, and one line exported twice
    "0007,B1,2024-06-01 10:00:00,P1,dairy,1,2.50,S1",
    "0007,B1,2024-06-01 10:00:00,P2,dairy,1,2.50,S1",
    "0007,B1,2024-06-01 10:00:00,P2,dairy,1,2.50,S1",
    "0008,B2,2024-06-02 11:00:00,P1,dairy,1,2.50,S2",
]


def test_lines_equal_on_the_mapped_columns_are_kept_and_true_repeats_reported(
        spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "a.csv", GROCERY_LINES, GROCERY_HEADER)
    write_csv(folder / "b.csv", GROCERY_LINES[3:], GROCERY_HEADER)  # the same record in a second file
    cfg = config.load(None, [f"input.path={folder}", f"output.root={tmp_path / 'out'}",
                             "input.columns.timestamp=purchase_time"])
    summary = runner.run(spark, cfg, ["ingest"], None)
    result = summary.results["ingest"]
    assert (result.input, result.clean, result.quarantined, result.duplicates) == (5, 3, 0, 2)
    assert [e.split(" in ")[0] for e in result.duplicate_examples] == ["transaction B1", "transaction B2"]
    assert result.duplicate_examples[1].endswith("/in/b.csv")
    tx = tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS))
    assert tx.agg(F.sum(C.AMOUNT)).first()[0] == pytest.approx(7.5)
    assert Counter(r[C.CUSTOMER_ID] for r in tx.collect()) == {"0007": 2, "0008": 1}
    runs = tables.read(spark, cfg.table_path(C.TABLE_RUNS)).first()
    assert runs["details"]["ingest.duplicate_examples"] == "; ".join(result.duplicate_examples)
    assert runs["counts"]["ingest.duplicates"] == 2


def test_two_appends_started_together_add_each_file_once(spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "a.csv", A_LINES)
    write_csv(folder / "b.csv", B_LINES)
    cfg = make_cfg(folder, tmp_path / "out", "ingest.mode=append")
    results: dict[int, object] = {}

    def ingest(i: int) -> None:
        try:
            results[i] = runner.run_stage(spark, cfg, "ingest")
        except Exception as e:  # a clean failure is allowed; a double ingest is not
            results[i] = e

    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    added = sorted(getattr(r, "new_files", 0) for r in results.values())
    assert sum(added) == 2, results
    tx = tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS))
    assert sorted(r[0] for r in tx.select(C.TRANSACTION_ID).collect()) == ["A1", "A2", "B1", "B2"]
    listed = tables.read(spark, cfg.table_path(C.TABLE_INGESTED_FILES)).collect()
    assert sorted(os.path.basename(r[C.FILE_PATH]) for r in listed) == ["a.csv", "b.csv"]
    assert {r[C.FILE_STATE] for r in listed} == {"done"}


def test_append_skips_files_another_run_is_adding_and_takes_over_a_dead_runs_claim(
        spark: SparkSession, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    a_file = write_csv(folder / "a.csv", A_LINES).as_uri()
    write_csv(folder / "b.csv", B_LINES)
    cfg = make_cfg(folder, tmp_path / "out", "ingest.mode=append")
    # a run claimed a.csv ten minutes ago and wrote one row, and has not finished
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    assert manifest.claim(spark, cfg, [a_file], "other", "other", started) == [a_file]
    row = [("00100", "A1", dt.datetime(2024, 5, 1, 10), 10.0, 1.0, 10.0, False, "books", "online", "UK", a_file,
            "other", dt.date(2024, 5, 1), dt.date(2024, 5, 1))]
    tables.append(spark.createDataFrame(row, TRANSACTIONS_SCHEMA), cfg.table_path(C.TABLE_TRANSACTIONS),
                  C.TABLE_TRANSACTIONS)
    r1 = runner.run_stage(spark, cfg, "ingest")  # within the timeout: a.csv is left to its owner
    assert (r1.new_files, r1.clean) == (1, 2)
    assert batch_counts(spark, cfg, C.TABLE_TRANSACTIONS)["other"] == 1
    # the owner is presumed dead once its claim is older than the timeout: its row goes, a.csv is added again
    r2 = runner.run_stage(spark, cfg.with_overrides({"ingest.claim_timeout_minutes": 5}), "ingest")
    assert (r2.new_files, r2.clean) == (1, 2)
    tx = tables.read(spark, cfg.table_path(C.TABLE_TRANSACTIONS))
    assert sorted(r[0] for r in tx.select(C.TRANSACTION_ID).collect()) == ["A1", "A2", "B1", "B2"]
    assert "other" not in batch_counts(spark, cfg, C.TABLE_TRANSACTIONS)
    # and the dead run, were it alive after all, finds its claims gone
    assert not manifest.finish(spark, cfg, "other", dt.datetime.now(dt.UTC))


def test_a_failing_append_releases_its_files(spark: SparkSession, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "in"
    write_csv(folder / "a.csv", A_LINES)
    cfg = make_cfg(folder, tmp_path / "out", "ingest.mode=append")

    def broken(*args: object) -> bool:
        raise RuntimeError("disk full")

    monkeypatch.setattr(manifest, "finish", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        runner.run_stage(spark, cfg, "ingest")
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 0
    assert count(spark, cfg, C.TABLE_INGESTED_FILES) == 0
    monkeypatch.undo()
    assert runner.run_stage(spark, cfg, "ingest").clean == 2


def test_an_overwrite_without_one_valid_row_keeps_the_tables(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_cfg(write_csv(tmp_path / "in" / "log.csv", A_LINES), tmp_path / "out")
    runner.run_stage(spark, cfg, "ingest")
    versions = {t: tables.version(spark, cfg.table_path(t)) for t in ALL_TABLES[:3]}
    bad = write_csv(tmp_path / "bad" / "log.csv", ["00100,X1,not-a-date,1,1.00,books,online,UK",
                                                   ",X2,2024-05-01 10:00:00,1,1.00,books,online,UK"])
    with pytest.raises(InputError) as e:
        runner.run_stage(spark, cfg.with_overrides({"input.path": str(bad)}), "ingest")
    assert str(e.value).startswith(f"input.path: none of the 2 rows in {bad} passed validation (")
    assert "the tables were left as they were" in str(e.value)
    assert {t: tables.version(spark, cfg.table_path(t)) for t in ALL_TABLES[:3]} == versions
    assert count(spark, cfg, C.TABLE_TRANSACTIONS) == 2
