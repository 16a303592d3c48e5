"""What the process keeps of small tables and bundles (`io.memo`): answers equal a fresh read's, and a change
made by anyone (another writer, a table made again, a bundle saved again or removed) is seen."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from custseg.core import catalog, config
from custseg.core import columns as C
from custseg.io import delta, lineage, memo

D1 = dt.date(2024, 6, 30)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths `delta.read` was asked for, from here on (memo starts empty)."""
    memo.clear()
    seen: list[str] = []
    real = delta.read

    def counting(spark: Any, path: str, version: int | None = None) -> Any:
        seen.append(path)
        return real(spark, path, version)

    monkeypatch.setattr(delta, "read", counting)
    return seen


def _lineage_row(stage: str, run_id: str, as_of: dt.date | None, written: int) -> tuple[Any, ...]:
    return (as_of, stage, run_id, {}, {"t": written}, dt.datetime.now(dt.UTC))


def test_lineage_answers_from_memory_until_someone_else_commits(spark, tmp_path: Path, reads: list[str]) -> None:  # type: ignore[no-untyped-def]
    cfg = config.load(None, [f"output.root={tmp_path}/out", f"input.path={tmp_path}/log.csv"])
    path = cfg.table_path(C.TABLE_LINEAGE)
    assert lineage.latest(spark, cfg, "features", D1) is None and reads == []  # no table: nothing read
    lineage.record(spark, cfg, lineage.Entry("features", "run-1", D1, {}, {"customer_features": 0}))
    first = lineage.latest(spark, cfg, "features", D1)
    assert first is not None and first.run_id == "run-1" and reads == [path]  # read once

    # this process's own appends extend what it keeps: no read, and the newest record wins
    lineage.record(spark, cfg, lineage.Entry("features", "run-2", D1, {}, {"customer_features": 1}))
    lineage.record(spark, cfg, lineage.Entry("segment", "run-2", D1, {"customer_features": 1}, {"segments": 0}))
    assert lineage.input_version(spark, cfg, "customer_features", "features", D1) == 1
    assert lineage.latest(spark, cfg, "segment", D1).writes == {"segments": 0}  # type: ignore[union-attr]
    assert lineage.latest(spark, cfg, "segment", None) is None and reads == [path]

    # a commit this process did not make through custseg: the table is read again
    other = spark.createDataFrame([_lineage_row("features", "run-3", D1, 7)], catalog.LINEAGE_SCHEMA)
    other.write.format("delta").mode("append").save(path)
    assert lineage.input_version(spark, cfg, "t", "features", D1) == 7 and reads == [path, path]

    # the same answers as a fresh process's
    kept = {(e.stage, e.run_id) for s in ("features", "segment") if (e := lineage.latest(spark, cfg, s, D1))}
    memo.clear()
    assert {(e.stage, e.run_id) for s in ("features", "segment") if (e := lineage.latest(spark, cfg, s, D1))} == kept


def test_a_table_made_again_at_the_same_path_and_version_is_read_again(spark, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                          reads: list[str]) -> None:
    path = f"{tmp_path}/lineage"
    for run_id in ("old", "new"):  # each time version 0 of a new table at the same path
        shutil.rmtree(path, ignore_errors=True)
        spark.createDataFrame([_lineage_row("ingest", run_id, None, 0)], catalog.LINEAGE_SCHEMA) \
            .write.format("delta").save(path)
        assert delta.version(spark, path) == 0
        rows = memo.rows(spark, path)
        assert rows is not None and [r[C.RUN_ID] for r in rows] == [run_id]
    assert len(reads) == 2


def test_a_bundle_is_loaded_once_while_its_metadata_is_unchanged(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    memo.clear()
    bundle, marker = str(tmp_path / "bundle"), tmp_path / "bundle" / "metadata"
    loads: list[int] = []

    def load() -> int:
        if not marker.exists():
            raise FileNotFoundError(marker)
        loads.append(1)
        return len(loads)

    marker.mkdir(parents=True)
    assert memo.bundle(spark, bundle, str(marker), load) == 1
    assert memo.bundle(spark, bundle, str(marker), load) == 1  # kept
    later = time.time() + 5  # saved again: the directory's modification time moves
    os.utime(marker, (later, later))
    assert memo.bundle(spark, bundle, str(marker), load) == 2
    shutil.rmtree(marker)  # removed: read again, and the loader's error is the caller's
    with pytest.raises(FileNotFoundError):
        memo.bundle(spark, bundle, str(marker), load)
