"""Customer attributes: the stage on a small CSV (clean rows, quarantine, duplicates), its errors, and the
attribute profiles by segment with their chi-square tests, all against numbers worked out by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from custseg import runner
from custseg.core import columns as C
from custseg.core import config
from custseg.core.config import Config
from custseg.core.errors import ConfigError, InputError
from custseg.io import delta
from custseg.stages.attributes import step
from custseg.stages.attributes import transform as AT
from custseg.stages.attributes.transform import Attribute, choose_attributes
from custseg.stages.explain.attributes import PROFILE_SCHEMA, attribute_profiles, chi2_sf, chi_square_p, gammq

HEADER = "customer_id,gender,age,city"
LINES = [
    "00123,F,34,Paris",  # clean; the id keeps its leading zeros
    ",M,40,Lyon",  # missing_customer_id (blank)
    "N/A,F,22,Nice",  # missing_customer_id (a placeholder of ingest.missing_id_values)
    "00456,M,abc,Paris",  # unparsable_numeric_attribute
    "00789,F,51,Lyon",  # clean
    "00789,F,51,Lyon",  # exact duplicate
    "00789, F ,51.0,Lyon",  # the same values once parsed: a duplicate too
    "01000,F,30,Paris",  # conflicting with the next row: both quarantined
    "01000,M,30,Paris",
    "02000,,,",  # clean, every attribute unknown
    "02000,,,",  # duplicate (null values compare equal)
]


def write_csv(path: Path, lines: list[str], header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def make_cfg(tmp_path: Path, *extra: str) -> Config:
    return config.load(None, [f"input.path={tmp_path}/log.csv", f"output.root={tmp_path}/out", *extra])


def read(spark: SparkSession, cfg: Config, table: str):  # type: ignore[no-untyped-def]
    return delta.read(spark, cfg.table_path(table))


def test_stage_sorts_every_row_into_clean_quarantine_or_duplicate(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "attributes.csv", LINES)
    cfg = make_cfg(tmp_path, f"attributes.path={path}", 'attributes.categorical=["gender", "city"]',
                   'attributes.numeric=["age"]')
    result = runner.run_stage(spark, cfg, "attributes", run_id="run-a1")
    assert isinstance(result, step.AttributesResult)
    assert result.counts() == {"attributes.input": 11, "attributes.clean": 3, "attributes.quarantined": 5,
                               "attributes.duplicates": 3}
    assert result.quarantine_reasons == {C.REASON_MISSING_CUSTOMER_ID: 2, C.REASON_UNPARSABLE_ATTRIBUTE: 1,
                                         C.REASON_CONFLICTING_ATTRIBUTES: 2}

    clean = read(spark, cfg, C.TABLE_CUSTOMER_ATTRIBUTES)
    assert clean.columns == [C.CUSTOMER_ID, "gender", "city", "age", C.SOURCE_FILE, C.INGEST_BATCH]
    expected = spark.createDataFrame(
        [("00123", "F", "Paris", 34.0), ("00789", "F", "Lyon", 51.0), ("02000", None, None, None)],
        "customer_id string, gender string, city string, age double")
    assert_df_equality(clean.drop(C.SOURCE_FILE, C.INGEST_BATCH), expected, ignore_row_order=True,
                       ignore_nullable=True)
    assert {(r[C.SOURCE_FILE].endswith("attributes.csv"), r[C.INGEST_BATCH]) for r in clean.collect()} == \
        {(True, "run-a1")}

    bad = read(spark, cfg, C.TABLE_ATTRIBUTES_QUARANTINE).collect()
    # the CSV reader gives the blank id as null
    by_reason = sorted((r[C.RAW_RECORD]["customer_id"] or "", r[C.REASON], tuple(r[C.REASONS])) for r in bad)
    assert by_reason == [("", C.REASON_MISSING_CUSTOMER_ID, (C.REASON_MISSING_CUSTOMER_ID,)),
                         ("00456", C.REASON_UNPARSABLE_ATTRIBUTE, (C.REASON_UNPARSABLE_ATTRIBUTE,)),
                         ("01000", C.REASON_CONFLICTING_ATTRIBUTES, (C.REASON_CONFLICTING_ATTRIBUTES,)),
                         ("01000", C.REASON_CONFLICTING_ATTRIBUTES, (C.REASON_CONFLICTING_ATTRIBUTES,)),
                         ("N/A", C.REASON_MISSING_CUSTOMER_ID, (C.REASON_MISSING_CUSTOMER_ID,))]
    unparsable = next(r for r in bad if r[C.REASON] == C.REASON_UNPARSABLE_ATTRIBUTE)
    assert unparsable[C.RAW_RECORD] == {"customer_id": "00456", "gender": "M", "age": "abc", "city": "Paris"}
    assert {r[C.INGEST_BATCH] for r in bad} == {"run-a1"} and all(r[C.QUARANTINE_DATE] for r in bad)
    # input = clean + quarantined + duplicates
    assert clean.count() + len(bad) + result.duplicates == 11

    # a snapshot: the next run replaces both tables, columns included. With city alone, 01000's two rows agree
    # and 00456's age is no longer read
    cfg2 = make_cfg(tmp_path, f"attributes.path={path}", 'attributes.categorical=["city"]')
    again = runner.run_stage(spark, cfg2, "attributes", run_id="run-a2")
    assert again.counts() == {"attributes.input": 11, "attributes.clean": 5, "attributes.quarantined": 2,
                              "attributes.duplicates": 4}
    clean2 = read(spark, cfg2, C.TABLE_CUSTOMER_ATTRIBUTES)
    assert clean2.columns == [C.CUSTOMER_ID, "city", C.SOURCE_FILE, C.INGEST_BATCH]
    assert sorted((r[C.CUSTOMER_ID], r["city"]) for r in clean2.collect()) == [
        ("00123", "Paris"), ("00456", "Paris"), ("00789", "Lyon"), ("01000", "Paris"), ("02000", None)]
    assert read(spark, cfg2, C.TABLE_ATTRIBUTES_QUARANTINE).count() == 2


def test_a_column_the_input_lacks_stops_before_anything_is_written(spark: SparkSession, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "attributes.csv", LINES[:2])
    cfg = make_cfg(tmp_path, f"attributes.path={path}", 'attributes.categorical=["gender", "income"]')
    with pytest.raises(InputError) as err:
        runner.run_stage(spark, cfg, "attributes")
    assert str(err.value) == ("attributes.categorical: column 'income' is not in the attributes input "
                              "(columns found: customer_id, gender, age, city)")
    cfg = make_cfg(tmp_path, f"attributes.path={path}", "attributes.customer_id=cust")
    with pytest.raises(InputError, match=r"^attributes.customer_id: column 'cust' is not in the attributes input "
                                         r"\(columns found: customer_id, gender, age, city\)$"):
        runner.run_stage(spark, cfg, "attributes")
    # no row with a usable id: refused before the tables are replaced with nothing
    path = write_csv(tmp_path / "no_ids.csv", LINES[1:3])
    cfg = make_cfg(tmp_path, f"attributes.path={path}")
    with pytest.raises(InputError, match=r"^attributes.path: none of the 2 rows in .*no_ids.csv passed validation "
                                         r"\(missing_customer_id 2\)"):
        runner.run_stage(spark, cfg, "attributes")
    for table in (C.TABLE_CUSTOMER_ATTRIBUTES, C.TABLE_ATTRIBUTES_QUARANTINE):
        assert not delta.exists(spark, cfg.table_path(table))


def test_without_attributes_path_nothing_is_written(spark: SparkSession, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    result = runner.run_stage(spark, cfg, "attributes")
    assert result.describe() == "no customer attributes configured (attributes.path)"
    assert result.counts() == {} and result.writes == {}
    for table in (C.TABLE_CUSTOMER_ATTRIBUTES, C.TABLE_ATTRIBUTES_QUARANTINE):
        assert not delta.exists(spark, cfg.table_path(table))


def test_check_names_the_key_before_spark_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^attributes.path: nothing found at .*missing.csv$"):
        step.check(make_cfg(tmp_path, f"attributes.path={tmp_path}/missing.csv"))
    path = write_csv(tmp_path / "a.csv", LINES[:1])
    with pytest.raises(ConfigError, match=r"^attributes.numeric: column 'age' is also named in attributes.categorical"):
        step.check(make_cfg(tmp_path, f"attributes.path={path}", 'attributes.categorical=["gender", "age"]',
                            'attributes.numeric=["age"]'))
    step.check(make_cfg(tmp_path, f"attributes.path={path}", 'attributes.numeric=["age"]'))  # fine
    step.check(make_cfg(tmp_path))  # no attributes: nothing to check


def test_choose_attributes_by_type_when_none_are_named() -> None:
    schema = T.StructType([T.StructField(n, t) for n, t in (
        ("cust", T.LongType()), ("Age Group", T.StringType()), ("income", T.DoubleType()),
        ("vip", T.BooleanType()), ("visits", T.IntegerType()), (C.SOURCE_FILE, T.StringType()))])
    assert choose_attributes(schema, "cust", [], []) == [
        Attribute("Age Group", "Age_Group", C.KIND_CATEGORICAL), Attribute("income", "income", C.KIND_NUMERIC),
        Attribute("visits", "visits", C.KIND_NUMERIC)]
    assert choose_attributes(schema, "cust", ["visits"], []) == [Attribute("visits", "visits", C.KIND_CATEGORICAL)]
    with pytest.raises(InputError, match="attributes.numeric: 'cust' is the customer id column"):
        choose_attributes(schema, "cust", [], ["cust"])
    clash = T.StructType([T.StructField("id", T.StringType()), T.StructField("Customer_ID", T.StringType())])
    with pytest.raises(InputError, match="would take the name of customer_attributes' own column 'customer_id'"):
        choose_attributes(clash, "id", ["Customer_ID"], [])


def test_transforms_on_typed_input_with_awkward_names(spark: SparkSession) -> None:
    # an attribute may be called like a quarantine column; NaN is a missing number, infinity not a number
    df = spark.createDataFrame([(7, "a", 1.5), (8, "b", float("nan")), (9, "c", float("inf")), (7, "a", 1.5)],
                               "cust long, reason string, score double").withColumn(C.SOURCE_FILE, F.lit("f"))
    attrs = [Attribute("reason", "reason", C.KIND_CATEGORICAL), Attribute("score", "score", C.KIND_NUMERIC)]
    marked = df.transform(AT.with_parsed_attributes("cust", attrs)).transform(AT.mark_repeats_and_conflicts(attrs))
    clean = marked.transform(AT.filter_clean).transform(AT.to_customer_attributes(attrs, "b1"))
    assert_df_equality(clean, spark.createDataFrame([("7", "a", 1.5, "f", "b1"), ("8", "b", None, "f", "b1")],
                                                    "customer_id string, reason string, score double, "
                                                    "source_file string, ingest_batch string"),
                       ignore_row_order=True, ignore_nullable=True)
    bad = marked.transform(AT.filter_quarantined).collect()
    assert [(r[C.RAW_RECORD]["cust"], r[C.REASON]) for r in bad] == [("9", C.REASON_UNPARSABLE_ATTRIBUTE)]


# --- profiles --------------------------------------------------------------------------------------------------

# segment 0: c1, c2, c3; segment 1: c4, c5, c6. c6 has no attributes row; c9 has one but is no member.
MEMBERS = [("c1", 0), ("c2", 0), ("c3", 0), ("c4", 1), ("c5", 1), ("c6", 1)]
ATTRIBUTES = [("c1", "F", 30.0, "Paris"), ("c2", "F", 40.0, "Paris"), ("c3", "M", None, "Lyon"),
              ("c4", "M", 20.0, "Nice"), ("c5", "F", 60.0, "Paris"), ("c9", "X", 99.0, "Rome")]

# gender: population F 3, M 2, unknown 1 of 6. Segment 0 (3): F 2, M 1, unknown 0; segment 1 (3): 1, 1, 1.
# Chi-square, segment 0 against the rest: [[2, 1, 0], [1, 1, 1]], expected [1.5, 1, 0.5] in both rows:
# 0.25/1.5 + 0 + 0.25/0.5, twice = 4/3, 2 degrees of freedom: p = exp(-2/3). Segment 1 against the rest and
# the whole 2 x 3 table are the same table.
P_GENDER = math.exp(-2 / 3)
# age: segment 0 has 30, 40 (c3 none): mean 35, median 30 (percentile_approx gives a member's value, the lower
# middle one for an even count); segment 1 has 20, 60 (c6 none): mean 40, median 20; population 20, 30, 40, 60:
# mean 37.5, median 30; 4 of 6 with a value.
EXPECTED = [
    (-1, "gender", "categorical", "F", 3, 3 / 6, 3 / 6, 1.0, P_GENDER, None, None, None),
    (-1, "gender", "categorical", "M", 2, 2 / 6, 2 / 6, 1.0, P_GENDER, None, None, None),
    (-1, "gender", "categorical", "unknown", 1, 1 / 6, 1 / 6, 1.0, P_GENDER, None, None, None),
    (0, "gender", "categorical", "F", 2, 2 / 3, 3 / 6, 4 / 3, P_GENDER, None, None, None),
    (0, "gender", "categorical", "M", 1, 1 / 3, 2 / 6, 1.0, P_GENDER, None, None, None),
    (0, "gender", "categorical", "unknown", 0, 0.0, 1 / 6, 0.0, P_GENDER, None, None, None),
    (1, "gender", "categorical", "F", 1, 1 / 3, 3 / 6, 2 / 3, P_GENDER, None, None, None),
    (1, "gender", "categorical", "M", 1, 1 / 3, 2 / 6, 1.0, P_GENDER, None, None, None),
    (1, "gender", "categorical", "unknown", 1, 1 / 3, 1 / 6, 2.0, P_GENDER, None, None, None),
    (-1, "age", "numeric", None, 4, 4 / 6, 4 / 6, 1.0, None, 37.5, 30.0, 37.5),
    (-1, "age", "numeric", "unknown", 2, 2 / 6, 2 / 6, 1.0, None, None, None, None),
    (0, "age", "numeric", None, 2, 2 / 3, 4 / 6, 35 / 37.5, None, 35.0, 30.0, 37.5),
    (0, "age", "numeric", "unknown", 1, 1 / 3, 2 / 6, 1.0, None, None, None, None),
    (1, "age", "numeric", None, 2, 2 / 3, 4 / 6, 40 / 37.5, None, 40.0, 20.0, 37.5),
    (1, "age", "numeric", "unknown", 1, 1 / 3, 2 / 6, 1.0, None, None, None, None),
]


def _profile_inputs(spark: SparkSession):  # type: ignore[no-untyped-def]
    members = spark.createDataFrame(MEMBERS, f"{C.CUSTOMER_ID} string, {C.SEGMENT_ID} int")
    attributes = spark.createDataFrame(ATTRIBUTES, f"{C.CUSTOMER_ID} string, gender string, age double, city string")
    return members, attributes


def test_attribute_profiles_by_hand(spark: SparkSession) -> None:
    members, attributes = _profile_inputs(spark)
    out = attribute_profiles(members, attributes, ["gender"], ["age"], max_values=2)
    assert out.columns == [C.SEGMENT_ID, C.ATTRIBUTE, C.ATTRIBUTE_KIND, C.ATTRIBUTE_VALUE, "customers", "share",
                           "population_share", "lift", "p_value", "mean", "median", "population_mean"]
    assert_approx_df_equality(out, spark.createDataFrame(EXPECTED, PROFILE_SCHEMA), 1e-9, ignore_row_order=True)


def test_rare_values_become_other_and_unknown_keeps_its_own_row(spark: SparkSession) -> None:
    members, attributes = _profile_inputs(spark)
    # city in the population: Paris 3, Lyon 1, Nice 1, unknown 1 (c6); with one value of its own, Lyon and Nice
    # are "other": segment 0 Paris 2, other 1 (Lyon); segment 1 Paris 1, other 1 (Nice), unknown 1
    out = attribute_profiles(members, attributes, ["city"], [], max_values=1).collect()
    assert sorted((r[C.SEGMENT_ID], r[C.ATTRIBUTE_VALUE], r["customers"]) for r in out) == [
        (-1, "Paris", 3), (-1, "other", 2), (-1, "unknown", 1),
        (0, "Paris", 2), (0, "other", 1), (0, "unknown", 0),
        (1, "Paris", 1), (1, "other", 1), (1, "unknown", 1)]
    assert [r["p_value"] for r in out] == pytest.approx([P_GENDER] * 9)  # the same 2 x 3 table as gender's


# --- the chi-square test ---------------------------------------------------------------------------------------

def test_chi_square_survival_function_known_values() -> None:
    assert chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-7)
    assert chi2_sf(5.991465, 2) == pytest.approx(0.05, abs=1e-7)
    assert chi2_sf(0.0, 1) == 1.0 and chi2_sf(0.0, 7) == 1.0
    assert chi2_sf(1.0, 1) == pytest.approx(0.31731050786291415, rel=1e-12)  # 2 (1 - Phi(1))
    # even degrees of freedom 2m: exp(-x/2) * sum_{j<m} (x/2)^j / j!
    assert chi2_sf(2.0, 4) == pytest.approx(2 * math.exp(-1), rel=1e-12)
    assert chi2_sf(10.0, 6) == pytest.approx(math.exp(-5) * (1 + 5 + 12.5), rel=1e-12)
    assert chi2_sf(30.0, 10) == pytest.approx(math.exp(-15) * (1 + 15 + 112.5 + 562.5 + 2109.375), rel=1e-12)
    assert chi2_sf(1000.0, 3) < 1e-200
    assert chi2_sf(1e6, 2) == 0.0
    assert gammq(0.5, 2.0) == pytest.approx(math.erfc(math.sqrt(2.0)), rel=1e-12)  # Q(1/2, x) = erfc(sqrt x)
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)


def test_chi_square_test_of_a_table() -> None:
    # [[10, 20], [30, 40]]: expected 12, 18, 28, 42; statistic 4/12 + 4/18 + 4/28 + 4/42 = 50/63, 1 degree of
    # freedom: p = erfc(sqrt(25/63))
    assert chi_square_p([[10, 20], [30, 40]]) == pytest.approx(math.erfc(math.sqrt(25 / 63)), rel=1e-12)
    assert chi_square_p([[10, 20, 0], [30, 40, 0]]) == pytest.approx(math.erfc(math.sqrt(25 / 63)), rel=1e-12)
    assert chi_square_p([[5, 5], [0, 0]]) is None  # one segment: no test
    assert chi_square_p([[5, 0], [7, 0]]) is None  # one value: no test
    assert chi_square_p([[3, 3], [6, 6]]) == pytest.approx(1.0)  # independent
