"""Explain: naming rules and the playbook (their language and their errors), names from hand-made profiles, the
surrogate tree's rules on a planted set, and the stage's refusal to run without a profile."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from custseg.core import config
from custseg.core.errors import ConfigError
from custseg.stages.explain import naming as N
from custseg.stages.explain import rules as R
from custseg.stages.explain import vocabulary as V

REPO = Path(__file__).resolve().parents[1]
NAMING = V.load_naming(str(REPO / "conf" / "naming.toml"))
PLAYBOOK = V.load_playbook(str(REPO / "conf" / "playbook.toml"))
# population quintile cuts (20/40/60/80%) of recency_days, n_transactions, total_spend
CUTS = {"recency_days": [19.0, 36.0, 71.0, 409.0], "n_transactions": [4.0, 9.0, 24.0, 40.0],
        "total_spend": [140.0, 374.0, 965.0, 2496.0]}


def _segment(sid: int, recency: float, orders: float, spend: float, lift: dict[str, float] | None = None,
             mean: dict[str, float] | None = None, tenure: float = 800.0) -> N.Segment:
    lifts = {"recency_days": 1.0, "n_transactions": 1.0, "total_spend": 1.0, "return_rate": 1.0,
             "returned_share": 1.0, "avg_spend_per_transaction": 1.0, **(lift or {})}
    medians = {"recency_days": recency, "n_transactions": orders, "total_spend": spend, "tenure_days": tenure}
    return N.Segment(sid, 100, 0.1, 0.1, dict(mean or {}), medians, lifts)


# --- the condition language -------------------------------------------------------------------------

def test_condition_reads_scores_lifts_and_share_map_keys() -> None:
    c = V.parse_condition("r <= 2 and (lift.category_spend_share.toys >= 1.5 or not share < 0.1)", "here")
    assert c.names() == ["r", "lift.category_spend_share.toys", "share"]
    assert c.holds({"r": 1, "lift.category_spend_share.toys": 2.0, "share": 0.05})
    assert c.holds({"r": 2, "lift.category_spend_share.toys": 1.0, "share": 0.2})
    assert not c.holds({"r": 3, "lift.category_spend_share.toys": 2.0, "share": 0.2})
    # a feature the run does not have: the condition does not hold (no error)
    assert not c.holds({"r": 1, "share": 0.05})
    assert V.parse_condition("1 < r <= 3", "here").holds({"r": 3})


@pytest.mark.parametrize(("text", "message"), [
    ("r >", "here: `when` is not a valid condition: 'r >'"),
    ("recency <= 2", "here: `when` names 'recency': use r, f, m, share, lift.FEATURE, median.FEATURE or mean.FEATURE"),
    ("lift > 2", "here: `when` names 'lift': use r, f, m"),
    ("r + 1 > 2", "here: `when` may only compare"),
    ("__import__('os').system('x')", "here: `when` may only compare"),
    ("r == 'high'", "here: `when` may compare with numbers only"),
    ("", "here: `when` must be a non-empty condition"),
])
def test_condition_errors_are_one_line_and_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        V.parse_condition(text, "here")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


# --- the naming rules and the playbook files --------------------------------------------------------

def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "file.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("text", "message"), [
    ('[[rule]]\nname = "a"\nwhen = "r >= 9 and"\n', "rule 1 ('a'): `when` is not a valid condition"),
    ('[[rule]]\nname = "a"\nwhen = "r > 1"\ncolour = "red"\n', "rule 1 ('a'): unknown key 'colour'"),
    ('[[rule]]\nname = "a"\nwhen = "r > 1"\n[[rule]]\nname = "A"\nwhen = "r > 2"\n',
     "rule 2 ('A'): the name 'A' is used by an earlier rule"),
    ('[[rule]]\nwhen = "r > 1"\n', "rule 1 ('?'): `name` must be a non-empty text"),
    ("fallback = 'x'\n", "no [[rule]] entries"),
    ('[qualifier]\nmin_lift = "high"\n[[rule]]\nname = "a"\nwhen = "r > 1"\n',
     "[qualifier]: `min_lift` must be a number"),
    ("[[rule]\n", "not valid TOML"),
])
def test_naming_file_errors_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        V.load_naming(_write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


_DEFAULT = '[default]\naction = "d"\ngoal = "g"\nchannel = "c"\noffer = "o"\nmessage = "m"\n'
_ENTRY = '[[action]]\naction = "a"\ngoal = "g"\nchannel = "c"\noffer = "o"\nmessage = "m"\n'


@pytest.mark.parametrize(("text", "message"), [
    (_ENTRY + 'names = ["x"]\n', "a [default] action is required"),
    (_DEFAULT + _ENTRY, "action 1 ('a'): give `names` (segment names it serves) or `when`"),
    (_DEFAULT + _ENTRY + 'names = ["x"]\npriority = 0\n', "action 1 ('a'): `priority` must be a whole number"),
    (_DEFAULT + _ENTRY + 'when = "f >= 4 or"\n', "action 1 ('a'): `when` is not a valid condition"),
    (_DEFAULT + _ENTRY.replace('goal = "g"\n', "") + 'names = ["x"]\n', "action 1 ('a'): `goal` must be"),
    (_DEFAULT + _ENTRY + 'names = ["x"]\nchanel = "sms"\n', "action 1 ('a'): unknown key 'chanel'"),
])
def test_playbook_errors_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        V.load_playbook(_write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_shipped_files_load() -> None:
    assert [r.name for r in NAMING.rules][:3] == ["heavy returners", "big-ticket occasional buyers", "champions"]
    assert PLAYBOOK.default.action == "nurture" and len(PLAYBOOK.entries) == 8


def test_a_missing_naming_file_stops_the_cli_before_spark(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from custseg import cli

    code = cli.main(["explain", "--conf", str(REPO / "conf" / "local.toml"),
                     "--set", f"explain.naming_rules={tmp_path}/nope.toml"])
    assert code == 2
    assert capsys.readouterr().err.strip() == \
        f"custseg: error: explain.naming_rules: no such file: {tmp_path}/nope.toml"


# --- names from profiles ----------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "lower_is_better", "score"), [
    (10, True, 5), (19, True, 5), (20, True, 4), (500, True, 1), (None, True, 1),
    (3, False, 1), (4, False, 1), (5, False, 2), (41, False, 5), (None, False, 1),
])
def test_rfm_scores_from_quintile_cuts(value: float | None, lower_is_better: bool, score: int) -> None:
    assert N.rfm_score(value, CUTS["n_transactions"] if not lower_is_better else CUTS["recency_days"],
                       lower_is_better) == score


def test_hand_made_profiles_get_the_expected_names_reasons_and_actions() -> None:
    segments = [
        _segment(0, recency=10, orders=60, spend=9000, lift={"recency_days": 0.1, "n_transactions": 3.0,
                                                            "total_spend": 5.0}),
        _segment(1, recency=600, orders=6, spend=300, lift={"recency_days": 3.5, "n_transactions": 0.3,
                                                           "total_spend": 0.2}),
        _segment(2, recency=30, orders=30, spend=300, lift={"return_rate": 3.4}),
        _segment(3, recency=15, orders=1, spend=50, tenure=30),
        _segment(4, recency=200, orders=30, spend=3000),  # bought often, not lately (r = 2, f = 4)
        # leans to online electronics: 2.5x and 2.1x the population's share, 40% and 30% of its spend
        _segment(5, recency=200, orders=3, spend=3000,
                 lift={"avg_spend_per_transaction": 5.7, "channel_spend_share.online": 2.5,
                       "category_spend_share.electronics": 2.1, "category_spend_share.toys": 3.0,
                       "category_spend_share.other": 4.0},
                 mean={"channel_spend_share.online": 0.4, "category_spend_share.electronics": 0.3,
                       "category_spend_share.toys": 0.05, "category_spend_share.other": 0.3}),
    ]
    N.score_segments(segments, NAMING, CUTS)
    assert [s.scores for s in segments[:2]] == [{"r": 5, "f": 5, "m": 5}, {"r": 1, "f": 2, "m": 2}]
    named = N.name_segments(segments, NAMING)
    assert {i: n.name for i, n in named.items()} == {
        0: "champions", 1: "lost", 2: "heavy returners", 3: "new customers", 4: "at risk",
        5: "big-ticket occasional buyers - online electronics"}
    assert named[0].reasons == "recency 0.1x population, orders 3x, spend 5x"
    assert named[2].reasons == "recency 1x population, orders 1x, spend 1x, return rate 3.4x, returned share 1x"
    assert named[5].reasons == ("recency 1x population, orders 1x, spend 1x, order value 5.7x, online share 2.5x, "
                                "electronics share 2.1x")
    actions = {s.segment_id: N.pick_action(s, named[s.segment_id], PLAYBOOK) for s in segments}
    assert {i: a[0].action for i, a in actions.items()} == {
        0: "reward and retain", 1: "reactivate cheaply", 2: "reduce returns", 3: "onboard", 4: "win back",
        5: "premium follow-up"}
    assert actions[0][1] == "playbook entry 'reward and retain' serves segments named 'champions'"
    assert not any(a[2] for a in actions.values())


def test_two_segments_with_one_name_are_told_apart_and_an_unserved_one_gets_the_default() -> None:
    a = _segment(0, recency=10, orders=60, spend=9000, lift={"total_spend": 5.0})
    b = _segment(1, recency=12, orders=50, spend=8000, lift={"total_spend": 4.0})
    N.score_segments([a, b], NAMING, CUTS)
    named = N.name_segments([a, b], NAMING)
    assert (named[0].name, named[1].name) == ("champions (higher spend)", "champions (lower spend)")
    playbook = V.Playbook((V.Action("only", "g", "c", "o", "m", 1, names=("lost",)),), PLAYBOOK.default)
    action, reason, fallback = N.pick_action(a, named[0], playbook)
    assert (action.action, fallback) == ("nurture", True)
    assert reason == "no playbook entry serves 'champions': the default action"
    by_condition = V.Playbook((V.Action("vip", "g", "c", "o", "m", 1, when=V.parse_condition("m >= 5", "t")),),
                              PLAYBOOK.default)
    assert N.pick_action(a, named[0], by_condition)[1] == "playbook entry 'vip': m >= 5 holds (m=5)"


def test_top_features_rank_by_standardised_mean_difference() -> None:
    seg = N.Segment(0, 10, 0.1, 0.1, {"a": 12.0, "b": 1.0, "c": 5.0, "d": 3.0}, {}, {"a": 1.2, "b": 0.5})
    top = N.top_features(seg, {"a": 10.0, "b": 2.0, "c": 5.0, "d": 1.0}, {"a": 4.0, "b": 0.5, "c": 1.0, "d": 0.0}, 2)
    # a: (12 - 10) / 4 = 0.5; b: (1 - 2) / 0.5 = -2; c: 0; d: no spread, skipped
    assert [(t["feature"], t["direction"], t["smd"]) for t in top] == [("b", "lower", -2.0), ("a", "higher", 0.5)]


# --- the surrogate tree -------------------------------------------------------------------------------

def test_a_depth_two_planted_split_is_recovered_exactly(spark) -> None:  # type: ignore[no-untyped-def]
    # segment 0: x in 1-3; segment 1: x in 20-22 and y in 1-2; segment 2: x in 20-22 and y in 8-9
    rows = [(0, float(x), float(y)) for x in (1, 2, 3) for y in (1, 2, 8, 9)]
    rows += [(1, float(x), float(y)) for x in (20, 21, 22) for y in (1, 2)]
    rows += [(2, float(x), float(y)) for x in (20, 21, 22) for y in (8, 9)]
    df = spark.createDataFrame(rows, "segment_id int, x0 double, x1 double")
    assembled = R.assemble(df, ["x0", "x1"])
    tree = R.fit_tree(assembled, 2, 7)
    leaves = R.leaves(tree, ["x", "y"])
    from pyspark.sql import functions as F

    counted = R.leaf_counts(tree.transform(assembled), leaves, {"x": F.col("x0"), "y": F.col("x1")}).collect()
    counts = {r["segment_id"]: r.asDict() for r in counted}
    assert sum(r["agree"] for r in counts.values()) == len(rows)  # fidelity 1.0
    found = R.segment_rules(counts, leaves, 2, 0.6, 0.5)
    # the thresholds are the midpoints between the planted values: (3 + 20) / 2 and (2 + 8) / 2
    assert {s: [(r.condition, r.customers, r.coverage, r.precision) for r in v.rules] for s, v in found.items()} == {
        0: [("x <= 11.5", 12, 1.0, 1.0)], 1: [("x > 11.5 and y <= 5", 6, 1.0, 1.0)],
        2: [("x > 11.5 and y > 5", 6, 1.0, 1.0)]}
    assert {v.quality for v in found.values()} == {"good"}


def test_a_segment_no_leaf_predicts_is_flagged_with_its_closest_rule() -> None:
    leaves = [R.Leaf((R.Bound("x", upper=5.0),), 0), R.Leaf((R.Bound("x", lower=5.0),), 1)]
    counts = {0: {"customers": 10, "leaf_0": 10, "leaf_1": 0}, 1: {"customers": 10, "leaf_0": 1, "leaf_1": 9},
              2: {"customers": 2, "leaf_0": 0, "leaf_1": 2}}
    found = R.segment_rules(counts, leaves, 1, 0.6, 0.5)
    assert found[2].quality == "poor" and found[2].rules[0].condition == "x > 5"
    assert found[2].rules[0].precision == pytest.approx(2 / 11)
    assert found[2].note.startswith("the tree (depth 1) cannot describe this segment: no leaf predicts it")
    assert (found[1].quality, found[1].rules[0].coverage, found[1].rules[0].precision) == ("good", 0.9, 9 / 11)


def test_readable_thresholds() -> None:
    assert [R.readable(x) for x in (1234.56, 45.678, 0.123456, -0.00123456)] == [1235.0, 45.68, 0.123, -0.00123]
    assert R.Bound("total_spend", lower=1234.0, upper=98765.0).text() == "1,234 < total_spend <= 98,765"


def test_explain_without_a_profile_says_what_to_run(spark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from custseg import runner
    from custseg.core.errors import StageError

    cfg = config.load(None, [f"input.path={tmp_path}/x.csv", f"output.root={tmp_path}/out",
                             f"explain.naming_rules={REPO}/conf/naming.toml",
                             f"explain.playbook={REPO}/conf/playbook.toml"])
    with pytest.raises(StageError, match=r"no segment profiles as of 2024-12-31: run `custseg profile --as-of "
                                         r"2024-12-31` first"):
        runner.run_stage(spark, cfg, "explain", dt.date(2024, 12, 31))
