"""A failing segment run leaves its date as it was: no table of the stage, and no model bundle, changes.

One good fit on a tiny hand-made features table (module fixture), then runs that fail in different places:
a k no candidate can reach (refused before anything is fitted or written), and a write that fails after
others have committed (the earlier ones are put back).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import functions as F

from custseg import cli, runner
from custseg.core import columns as C
from custseg.core import config
from custseg.core.errors import SegmentationError
from custseg.io import delta, models, session

AS_OF = dt.date(2024, 6, 30)
N_CUSTOMERS = 12
TABLES = (C.TABLE_SEGMENTS, C.TABLE_MODEL_SELECTION, C.TABLE_SEGMENT_DRIFT, C.TABLE_SEGMENT_REGISTRY, C.TABLE_MODELS)
SETTINGS = ["segment.features=[\"recency_days\", \"return_rate\"]", "segment.k_range=[2, 2]",
            "segment.algorithms=[\"kmeans\"]", "segment.n_starts=1", "segment.max_iter=10",
            "segment.min_segment_share=0.0"]


def _settings(root: Path) -> list[str]:
    return [f"input.path={root}/unused.csv", f"output.root={root}/out", *SETTINGS]


@pytest.fixture(scope="module")
def good(spark, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Features of twelve customers in two groups, segmented once, successfully."""
    root = tmp_path_factory.mktemp("stage_failures")
    cfg = config.load(None, _settings(root))
    rows = [(f"a{i}", 1 + i, 0.0, 100.0 + i) for i in range(6)] + [(f"b{i}", 300 + i, 0.5, 5.0 + i) for i in range(6)]
    df = spark.createDataFrame(
        rows, f"{C.CUSTOMER_ID} string, {C.RECENCY_DAYS} int, {C.RETURN_RATE} double, {C.GROSS_SPEND} double"
    ).withColumn(C.AS_OF_DATE, F.lit(AS_OF))
    delta.replace_partition(df, cfg.table_path(C.TABLE_CUSTOMER_FEATURES), C.TABLE_CUSTOMER_FEATURES, AS_OF)
    runner.run_stage(spark, cfg, "segment", AS_OF)
    return {"cfg": cfg, "root": root, "settings": _settings(root)}


def _state(spark, cfg: config.Config) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Each table's version and rows, and the saved bundles."""
    out: dict[str, Any] = {}
    for name in TABLES:
        path = cfg.table_path(name)
        df = delta.read(spark, path)
        out[name] = (delta.version(spark, path), sorted(map(str, df.collect())))
    model_root = Path(str(cfg["output.root"])) / "models"
    out["bundles"] = sorted(str(p.relative_to(model_root)) for p in model_root.glob("as_of_date=*/run_id=*"))
    return out


def _contents(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v[1] if k in TABLES else v) for k, v in state.items()}


@pytest.mark.parametrize(("overrides", "message"), [
    (["segment.k_range=[500, 600]"],
     rf"^segment\.k_range=\[500, 600\] asks for at least 500 segments but there are only {N_CUSTOMERS} customers "
     rf"as of {AS_OF}: set segment\.k_range to start at or below {N_CUSTOMERS}$"),
    (["segment.k=50"],
     rf"^segment\.k=50 asks for at least 50 segments but there are only {N_CUSTOMERS} customers as of {AS_OF}: "
     rf"set segment\.k to at most {N_CUSTOMERS}$"),
    (["segment.k_range=[5, 6]", "segment.selection_sample_rows=4"],  # selection on a sample of about 4 customers
     rf"^segment\.k_range=\[5, 6\] asks for at least 5 segments but model selection runs on a sample of about 4 "
     rf"of the {N_CUSTOMERS} customers as of {AS_OF} \(segment\.selection_sample_rows\): set segment\.k_range "
     r"to start at or below 4, or raise segment\.selection_sample_rows$"),
], ids=["k_range", "k", "sample"])
def test_a_k_no_candidate_can_reach_fails_before_any_write(spark, good, overrides: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    cfg = good["cfg"]
    before = _state(spark, cfg)
    with pytest.raises(SegmentationError, match=message):
        runner.run_stage(spark, config.load(None, [*good["settings"], *overrides]), "segment", AS_OF)
    assert _state(spark, cfg) == before  # the same Delta versions, rows and bundles


def test_the_command_fails_with_the_one_line_reason(spark, good, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = good["cfg"]
    before = _state(spark, cfg)
    conf = Path(good["root"]) / "empty.toml"
    conf.write_text("")
    monkeypatch.setattr(session, "build_session", lambda *_a: spark)  # the test session, not a new one
    args = [a for s in good["settings"] for a in ("--set", s)]
    code = cli.main(["segment", "--conf", str(conf), "--as-of", str(AS_OF), *args,
                     "--set", "segment.k_range=[500,600]"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("custseg: error:")]
    assert code == 1
    assert err == [f"custseg: error: segment failed: segment.k_range=[500, 600] asks for at least 500 segments but "
                   f"there are only {N_CUSTOMERS} customers as of {AS_OF}: set segment.k_range to start at or "
                   f"below {N_CUSTOMERS}"]
    assert _state(spark, cfg) == before


# (model_selection failing is covered by the segment_models case, whose put-back includes it)
@pytest.mark.parametrize("failing", [C.TABLE_SEGMENTS, C.TABLE_MODELS])
def test_a_failing_write_puts_back_what_the_run_had_written(spark, good, monkeypatch, failing: str) -> None:  # type: ignore[no-untyped-def]
    # the fit succeeds and one of its writes fails: the date's segments, model_selection and segment_models,
    # and its bundles, are what they were (the earlier writes are undone, so their versions move on)
    cfg = good["cfg"].with_overrides({"segment.mode": "fit"})  # auto would score with the good run's model
    before = _state(spark, cfg)
    real_replace = delta.replace_partition
    calls: list[str] = []

    def replace(df, path, name, *a, **kw):  # type: ignore[no-untyped-def]
        calls.append(name)
        if name == failing and calls.count(name) == 1:  # the run's write (a put-back is a second call)
            raise OSError(f"disk full writing {name}")
        return real_replace(df, path, name, *a, **kw)

    def register(*a, **kw):  # type: ignore[no-untyped-def]
        raise OSError(f"disk full writing {C.TABLE_MODELS}")

    monkeypatch.setattr(delta, "replace_partition", replace)
    if failing == C.TABLE_MODELS:
        monkeypatch.setattr(models, "register", register)
    with pytest.raises(OSError, match=f"disk full writing {failing}"):
        runner.run_stage(spark, cfg, "segment", AS_OF, run_id=f"failing-{failing}")
    assert _contents(_state(spark, cfg)) == _contents(before)
    if failing == C.TABLE_SEGMENTS:  # the first table write: nothing to put back, no version moved
        assert _state(spark, cfg) == before
