"""`custseg export` on hand-made segments and descriptions: the rows written, the choice of segments, the errors,
and the atomic replacement of the target folder.

Three dates: 2024-06-30 (segments and descriptions of model run model-A, both recorded in the lineage, then a
newer, unrecorded version of the descriptions that renames every segment), 2024-05-31 (segments, no descriptions)
and 2024-04-30 (segments of model-B, descriptions of model-A).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custseg import cli
from custseg.core import catalog, config
from custseg.core import columns as C
from custseg.core.errors import ConfigError, StageError
from custseg.io import delta, lineage, session
from custseg.stages.export import step
from custseg.stages.export import transform as T

JUNE, MAY, APRIL = dt.date(2024, 6, 30), dt.date(2024, 5, 31), dt.date(2024, 4, 30)
HEADER = ["customer_id", "segment_id", "segment_name", "action", "action_channel", "action_offer", "action_message",
          "as_of_date", "distance_to_centre"]
LOYAL_MESSAGE = 'Thanks, "VIP": early access'  # a comma and quotes: CSV must quote and double them


def _segments(as_of: dt.date, model_run: str, members: list[tuple[str, int, float]]) -> list[tuple[Any, ...]]:
    return [(as_of, cid, sid, dist, f"seg-{as_of}", model_run, C.ASSIGNMENT_FITTED) for cid, sid, dist in members]


def _descriptions(as_of: dt.date, model_run: str, segments: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows of segment_descriptions: (id, name, action, channel, offer, message) given, the rest null."""
    rows = []
    for sid, name, action, channel, offer, message in segments:
        values = {C.AS_OF_DATE: as_of, C.SEGMENT_ID: sid, C.SEGMENT_NAME: name, "action": action,
                  "action_channel": channel, "action_offer": offer, "action_message": message,
                  C.RUN_ID: f"explain-{as_of}", C.MODEL_RUN_ID: model_run}
        rows.append(tuple(values.get(f.name) for f in catalog.SEGMENT_DESCRIPTIONS_SCHEMA.fields))
    return rows


JUNE_DESCRIPTIONS = [
    (0, "Loyal big spenders", "reward", "email", "early access", LOYAL_MESSAGE),
    (1, "At risk", "win back", "sms", "20% off", "We miss you"),
    (2, "New customers", "onboard", "email", None, "Welcome"),
]


def _settings(root: Path, *extra: str) -> list[str]:
    return [f"input.path={root}/unused.csv", f"output.root={root}/out", *extra]


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("export")
    cfg = config.load(None, _settings(root))
    seg_path, desc_path = cfg.table_path(C.TABLE_SEGMENTS), cfg.table_path(C.TABLE_SEGMENT_DESCRIPTIONS)

    def write(rows: list[tuple[Any, ...]], name: str, as_of: dt.date) -> int:
        df = spark.createDataFrame(rows, catalog.table(name).schema)
        return delta.replace_partition(df, cfg.table_path(name), name, as_of)

    june = _segments(JUNE, "model-A", [("00042", 0, 0.5), ("00107", 0, 1.25), ("0012", 1, 0.75), ("C-3", 1, 2.0),
                                       ("9", 2, 0.1)])
    seg_version = write(june, C.TABLE_SEGMENTS, JUNE)
    lineage.record(spark, cfg, lineage.Entry("segment", "seg-run", JUNE, {}, {C.TABLE_SEGMENTS: seg_version}))
    write(_segments(MAY, "model-A", [("00042", 0, 0.3)]), C.TABLE_SEGMENTS, MAY)
    write(_segments(APRIL, "model-B", [("00042", 1, 0.4)]), C.TABLE_SEGMENTS, APRIL)
    desc_version = write(_descriptions(JUNE, "model-A", JUNE_DESCRIPTIONS), C.TABLE_SEGMENT_DESCRIPTIONS, JUNE)
    lineage.record(spark, cfg, lineage.Entry("explain", "explain-run", JUNE, {},
                                             {C.TABLE_SEGMENT_DESCRIPTIONS: desc_version}))
    write(_descriptions(APRIL, "model-A", JUNE_DESCRIPTIONS), C.TABLE_SEGMENT_DESCRIPTIONS, APRIL)
    renamed = [(sid, f"Renamed {sid}", *rest) for sid, _, *rest in JUNE_DESCRIPTIONS]
    write(_descriptions(JUNE, "model-A", renamed), C.TABLE_SEGMENT_DESCRIPTIONS, JUNE)  # newer, not recorded
    assert delta.version(spark, desc_path) == desc_version + 2 and delta.exists(spark, seg_path)
    return {"cfg": cfg, "root": root}


def _export(spark, tables, *segments: str, to: Path, fmt: str = "csv", overwrite: bool = False,  # type: ignore[no-untyped-def]
            as_of: dt.date | None = JUNE, cfg: config.Config | None = None) -> step.ExportResult:
    req = step.request(list(segments), str(to), fmt, overwrite)
    return step.run(spark, cfg or tables["cfg"], req, as_of)


def _csv_rows(folder: Path) -> list[dict[str, str]]:
    """Every row of every CSV part file, as text; each file starts with the header."""
    rows: list[dict[str, str]] = []
    for path in sorted(folder.glob("part-*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
        assert lines[0] == HEADER
        rows += [dict(zip(HEADER, line, strict=True)) for line in lines[1:]]
    return sorted(rows, key=lambda r: r["customer_id"])


def _leftovers(folder: Path) -> list[str]:
    """Hidden siblings an export leaves next to its target (its temporary or replaced folders)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


def test_export_by_id_to_csv(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    to = tmp_path / "loyal"
    result = _export(spark, tables, "0", to=to)
    loyal = {"segment_id": "0", "segment_name": "Loyal big spenders", "action": "reward", "action_channel": "email",
             "action_offer": "early access", "action_message": LOYAL_MESSAGE, "as_of_date": "2024-06-30"}
    assert _csv_rows(to) == [{"customer_id": "00042", **loyal, "distance_to_centre": "0.5"},
                             {"customer_id": "00107", **loyal, "distance_to_centre": "1.25"}]
    assert result.segments == [(0, "Loyal big spenders", 2)]
    assert (result.as_of, result.fmt, result.path) == (JUNE, "csv", f"file:{to}")
    assert result.files == len(list(to.glob("part-*.csv"))) >= 1
    assert _leftovers(to) == []


def test_export_by_name_ignoring_case_to_parquet(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    to = tmp_path / "at_risk"
    result = _export(spark, tables, "  at RISK ", to=to, fmt="parquet")
    df = spark.read.parquet(str(to))
    assert df.columns == HEADER
    assert df.schema[C.CUSTOMER_ID].dataType.simpleString() == "string"
    assert sorted(tuple(r) for r in df.collect()) == [
        ("0012", 1, "At risk", "win back", "sms", "20% off", "We miss you", JUNE, 0.75),
        ("C-3", 1, "At risk", "win back", "sms", "20% off", "We miss you", JUNE, 2.0),
    ]
    assert result.segments == [(1, "At risk", 2)]
    assert result.files == len(list(to.glob("part-*.parquet")))


def test_two_segments_at_once_comma_separated(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    to = tmp_path / "two"
    result = _export(spark, tables, "2, loyal BIG spenders", "0", to=to)  # 0 named twice: exported once
    rows = _csv_rows(to)
    assert [(r["customer_id"], r["segment_id"], r["segment_name"], r["action_offer"]) for r in rows] == [
        ("00042", "0", "Loyal big spenders", "early access"),
        ("00107", "0", "Loyal big spenders", "early access"),
        ("9", "2", "New customers", ""),  # a null offer is an empty field
    ]
    assert result.segments == [(2, "New customers", 1), (0, "Loyal big spenders", 2)]
    assert result.customers == 3


def test_unknown_name_lists_the_segments_of_the_date(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # "Renamed 1" is the name in a newer descriptions version than the one the explain run recorded
    for selector in ("gold", "7", "Renamed 1"):
        with pytest.raises(StageError) as e:
            _export(spark, tables, "0", selector, to=tmp_path / "unknown")
        assert str(e.value) == (f"--segment '{selector}': no segment of that id or name as of 2024-06-30; the segments "
                                "are 0: Loyal big spenders, 1: At risk, 2: New customers")
    assert not (tmp_path / "unknown").exists()


def test_missing_descriptions_say_to_run_explain(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StageError) as e:
        _export(spark, tables, "0", to=tmp_path / "may", as_of=MAY)
    assert str(e.value) == "no segment descriptions as of 2024-05-31: run `custseg explain --as-of 2024-05-31` first"
    assert not (tmp_path / "may").exists()


def test_descriptions_of_another_model_run_are_refused(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StageError) as e:
        _export(spark, tables, "1", to=tmp_path / "april", as_of=APRIL)
    assert str(e.value) == ("the segment descriptions as of 2024-04-30 describe model run model-A, but the segments "
                            "as of 2024-04-30 were assigned by model run model-B: run `custseg explain --as-of "
                            "2024-04-30` to describe the current segments")
    assert not (tmp_path / "april").exists()


def test_an_existing_target_is_refused_unless_overwrite(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    to = tmp_path / "campaign"
    to.mkdir()
    (to / "old.csv").write_text("customer_id\nX\n")
    with pytest.raises(StageError, match=r"^--to file:.*/campaign: already exists; pass --overwrite to replace it$"):
        _export(spark, tables, "1", to=to)
    assert sorted(p.name for p in to.iterdir()) == ["old.csv"]
    assert (to / "old.csv").read_text() == "customer_id\nX\n"

    result = _export(spark, tables, "1", to=to, overwrite=True)
    assert not (to / "old.csv").exists()
    assert [r["customer_id"] for r in _csv_rows(to)] == ["0012", "C-3"]
    assert result.segments == [(1, "At risk", 2)]
    assert _leftovers(to) == []


def test_files_hold_at_most_max_records_per_file(spark, tables, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = config.load(None, _settings(tables["root"], "export.max_records_per_file=2"))
    to = tmp_path / "all"
    result = _export(spark, tables, "0,1,2", to=to, cfg=cfg)
    files = sorted(to.glob("part-*.csv"))
    assert result.files == len(files) >= 3
    sizes = [len(p.read_text().splitlines()) - 1 for p in files]  # minus the header (no field holds a line break)
    assert max(sizes) <= 2 and sum(sizes) == 5
    assert [r["customer_id"] for r in _csv_rows(to)] == ["00042", "00107", "0012", "9", "C-3"]
    assert result.customers == 5


def test_a_failed_export_leaves_no_partial_target(spark, tables, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    original = T.export_rows

    def failing(*args: Any) -> Any:  # customer 9's task fails while the others may have written their files
        df = original(*args)
        return df.withColumn(C.CUSTOMER_ID, F.when(F.col(C.CUSTOMER_ID) == "9", F.raise_error(F.lit("boom")))
                             .otherwise(F.col(C.CUSTOMER_ID)))

    monkeypatch.setattr(T, "export_rows", failing)
    new, old = tmp_path / "new", tmp_path / "old"
    old.mkdir()
    (old / "part-0.csv").write_text("previous\n")
    with pytest.raises(Exception, match="boom"):
        _export(spark, tables, "0,1,2", to=new)
    with pytest.raises(Exception, match="boom"):
        _export(spark, tables, "0,1,2", to=old, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no new target, no temporary folder
    assert sorted(p.name for p in old.iterdir()) == ["part-0.csv"]
    assert (old / "part-0.csv").read_text() == "previous\n"


def test_the_command_defaults_to_the_latest_date_and_prints_a_summary(  # type: ignore[no-untyped-def]
        spark, tables, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(session, "build_session", lambda *_a: spark)  # the test session, not a new one
    conf = tmp_path / "empty.toml"
    conf.write_text("")
    to = tmp_path / "cli"
    args = [a for s in _settings(tables["root"]) for a in ("--set", s)]
    code = cli.main(["export", "--conf", str(conf), *args, "--segment", "At Risk", "--segment", "2", "--to", str(to)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[1].startswith("  export ")
    files = len(list(to.glob("part-*.csv")))
    assert out[1].endswith(f"3 customers of 2 segment(s) as of 2024-06-30 -> file:{to} "
                           f"({files} csv file{'s' if files != 1 else ''})")
    assert out[2:] == ["    segment  1  At risk                                   2 customers",
                       "    segment  2  New customers                             1 customers"]
    assert [r["customer_id"] for r in _csv_rows(to)] == ["0012", "9", "C-3"]


def _no_spark(*_a: object, **_k: object) -> None:
    raise AssertionError("Spark was started")


@pytest.mark.parametrize(("args", "message"), [
    (["--segment", "1"], "--to: required, and must not be empty or blank: the folder or URI to write the files to"),
    (["--segment", "1", "--to", "  "],
     "--to: required, and must not be empty or blank: the folder or URI to write the files to"),
    (["--segment", "1", "--to", "x", "--format", "xls"], "--format: must be one of csv, parquet (got 'xls')"),
    (["--to", "x"], "--segment: required: the id or name of a segment to export (repeatable, or comma-separated)"),
    (["--segment", "1,,2", "--to", "x"],
     "--segment '1,,2': empty segment; give ids or names, e.g. --segment 0,2 or --segment 'At risk'"),
    (["--segment", " ", "--to", "x"],
     "--segment ' ': empty segment; give ids or names, e.g. --segment 0,2 or --segment 'At risk'"),
], ids=["no-to", "blank-to", "format", "no-segment", "empty-item", "blank-segment"])
def test_argument_errors_exit_2_before_spark(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(session, "build_session", _no_spark)
    code = cli.main(["export", "--conf", "no-such.toml", *args])  # the export's arguments are checked first
    out, err = capsys.readouterr()
    assert (code, out, err.splitlines()) == (2, "", [f"custseg: error: {message}"])


def test_help_explains_the_command_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for text in ("--segment ID|NAME", "--format {csv,parquet}", "--to PATH", "--overwrite", "--as-of",
                 "export.max_records_per_file", "example:", 'custseg export --as-of 2024-06-30 --segment "At risk"'):
        assert text in out


def test_selectors_resolve_ids_and_names_in_order_once() -> None:
    available = {0: "Loyal big spenders", 1: "At risk", 2: "New customers", 3: "at  risk"}
    assert T.parse_selectors(["2, loyal big spenders", "0", "00"]) == ("2", "loyal big spenders", "0", "00")
    assert T.resolve_segments(["2", "loyal big spenders", "0", "00"], available, JUNE) == [2, 0]
    with pytest.raises(StageError, match=r"^--segment 'AT RISK': more than one segment has that name as of "
                                         r"2024-06-30 \(1: At risk, 3: at  risk\): give the id$"):
        T.resolve_segments(["AT RISK"], available, JUNE)
    with pytest.raises(ConfigError):
        T.parse_selectors(["1,"])


def test_a_name_without_its_qualifier_finds_the_segment_when_only_one_has_it() -> None:
    available = {0: "champions - electronics", 1: "heavy returners - app fashion", 2: "lost (higher spend)",
                 3: "lost (lower spend)", 4: "heavy returners"}
    assert T.resolve_segments(["Champions", "lost (lower spend)"], available, JUNE) == [0, 3]
    assert T.resolve_segments(["heavy returners"], available, JUNE) == [4]  # the full name wins
    with pytest.raises(StageError, match=r"^--segment 'lost': more than one segment has that name"):
        T.resolve_segments(["lost"], available, JUNE)
