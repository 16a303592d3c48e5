"""Configuration: TOML + --set overrides, validated before Spark starts (no Spark in this module)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from custseg import cli
from custseg.core import config
from custseg.core.config import ConfigError

REPO = Path(__file__).resolve().parents[1]

BASE = [
    "input.path=data/in.csv",
    "output.root=out",
    "input.columns.customer_id=cid",
    "input.columns.timestamp=ts",
    "input.columns.amount=amt",
]


def without(prefix: str) -> list[str]:
    return [o for o in BASE if not o.startswith(prefix + "=")]


# --- a valid configuration ----------------------------------------------------------------------

def test_minimal_overrides_validate_and_fill_defaults() -> None:
    cfg = config.load(None, BASE)
    assert cfg["input.path"] == "data/in.csv"
    assert cfg["input.format"] == "csv"
    assert cfg["input.timezone"] == "UTC"
    assert cfg["ingest.mode"] == "overwrite"
    assert cfg["features.top_categories"] == 10
    assert cfg["features.windows_days"] == [30, 90, 365]
    assert cfg.column_map == {"customer_id": "cid", "timestamp": "ts", "amount": "amt"}
    assert cfg.column("quantity") is None
    assert cfg.table_path("transactions") == "out/transactions"
    assert cfg.source == ""


def test_table_path_strips_trailing_slash() -> None:
    cfg = config.load(None, [*without("output.root"), "output.root=s3a://bucket/custseg/"])
    assert cfg.table_path("quarantine") == "s3a://bucket/custseg/quarantine"


def test_with_overrides_revalidates() -> None:
    cfg = config.load(None, BASE)
    assert cfg.with_overrides({"features.top_categories": 3})["features.top_categories"] == 3
    with pytest.raises(ConfigError, match=r"^features\.top_categories: must be > 0"):
        cfg.with_overrides({"features.top_categories": 0})


# --- unknown and missing keys -------------------------------------------------------------------

def test_unknown_key_is_named_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, "input.colums.customer_id=x"])
    assert str(e.value) == (
        "input.colums.customer_id: unknown configuration key (did you mean input.columns.customer_id?)"
    )


def test_unknown_key_in_toml_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[features]\ntop_categoriez = 3\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^features\.top_categoriez: unknown configuration key$"):
        config.load(conf, BASE)


@pytest.mark.parametrize(
    "key", ["input.path", "output.root", "input.columns.customer_id", "input.columns.timestamp"]
)
def test_missing_required_key(key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, without(key))
    assert str(e.value) == f"{key}: required but not set"


def test_blank_required_column_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match=r"^input\.columns\.customer_id: required but not set$"):
        config.load(None, [*without("input.columns.customer_id"), "input.columns.customer_id="])


@pytest.mark.parametrize(
    "extra",
    [[], ["input.columns.quantity=qty"], ["input.columns.unit_price=price"]],
    ids=["nothing", "quantity-only", "unit-price-only"],
)
def test_amount_or_quantity_and_price_required(extra: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*without("input.columns.amount"), *extra])
    msg = str(e.value)
    assert msg.startswith("input.columns.amount: required")
    assert "input.columns.quantity" in msg and "input.columns.unit_price" in msg


def test_quantity_and_price_replace_amount() -> None:
    cfg = config.load(
        None, [*without("input.columns.amount"), "input.columns.quantity=q", "input.columns.unit_price=p"]
    )
    assert cfg.column_map == {"customer_id": "cid", "timestamp": "ts", "quantity": "q", "unit_price": "p"}
    assert cfg.column("amount") is None


def test_same_column_mapped_to_two_roles() -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, "input.columns.category=cid"])
    assert str(e.value) == "input.columns: column 'cid' is mapped to more than one role"


# --- bad values ---------------------------------------------------------------------------------

def test_bad_choice_lists_the_choices() -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, "input.format=xls"])
    assert str(e.value) == "input.format: must be one of csv, parquet, json, delta (got 'xls')"


def test_bad_choice_shows_empty_choice_quoted() -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, "segment.algorithm=dbscan"])
    assert str(e.value) == "segment.algorithm: must be one of '', kmeans, bisecting_kmeans (got 'dbscan')"


@pytest.mark.parametrize("raw", ["ten", '"ten"'])
def test_bad_type(raw: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, f"features.top_categories={raw}"])
    assert str(e.value) == "features.top_categories: expected int, got 'ten'"


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ConfigError, match=r"^features\.top_categories: expected int, got True$"):
        config.load(None, [*BASE, "features.top_categories=true"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("features.top_categories=0", "features.top_categories: must be > 0 (got 0)"),
        ("features.windows_days=[30, 0]",
         "features.windows_days: must be a non-empty list of positive whole numbers (got [30, 0])"),
        ("features.windows_days=[]",
         "features.windows_days: must be a non-empty list of positive whole numbers (got [])"),
        ("segment.k_range=[1, 5]", "segment.k_range: must be [low, high] with 2 <= low <= high (got [1, 5])"),
        ("segment.min_segment_share=1", "segment.min_segment_share: must be in [0, 1) (got 1.0)"),
        ("ingest.future_tolerance_minutes=-1", "ingest.future_tolerance_minutes: must be >= 0 (got -1)"),
        ("segment.algorithms=[]", "segment.algorithms: must name at least one algorithm"),
        ('segment.algorithms=["kmeans", "gmm"]',
         "segment.algorithms: unknown algorithm 'gmm'; choose from kmeans, bisecting_kmeans"),
        ('generate.end_date="2021-12-31"', "generate.end_date: must be after generate.start_date"),
        ('generate.start_date="2022-02-30"', "generate.start_date: must be a date YYYY-MM-DD (got '2022-02-30')"),
    ],
)
def test_value_checks(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, override])
    assert str(e.value) == message


def test_bad_timezone() -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*BASE, "input.timezone=Mars/Olympus_Mons"])
    assert str(e.value) == (
        "input.timezone: must be an IANA time zone such as UTC or Europe/Berlin (got 'Mars/Olympus_Mons')"
    )


def test_good_timezone() -> None:
    assert config.load(None, [*BASE, "input.timezone=Europe/Berlin"])["input.timezone"] == "Europe/Berlin"


def test_spark_conf_values_must_be_plain() -> None:
    with pytest.raises(ConfigError, match=r"^spark\.conf\.spark\.jars: Spark settings must be plain values"):
        config.load(None, [*BASE, 'spark.conf.spark.jars=["a.jar"]'])


# --- --set parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spark.shuffle_partitions=8", ("spark.shuffle_partitions", 8)),
        ("segment.min_segment_share=0.05", ("segment.min_segment_share", 0.05)),
        ("features.windows_days=[7, 28]", ("features.windows_days", [7, 28])),
        ("input.csv.header=false", ("input.csv.header", False)),
        ("input.path=data/my log.csv", ("input.path", "data/my log.csv")),
        ('input.path="quoted.csv"', ("input.path", "quoted.csv")),
        ("input.path=s3a://bucket/day=2024-06-30/x.csv", ("input.path", "s3a://bucket/day=2024-06-30/x.csv")),
        ("  input.path =  spaced.csv  ", ("input.path", "spaced.csv")),
        ("input.timestamp_format=", ("input.timestamp_format", "")),
        ("spark.master=local[2]", ("spark.master", "local[2]")),
    ],
)
def test_parse_override(text: str, expected: tuple[str, object]) -> None:
    assert config.parse_override(text) == expected


@pytest.mark.parametrize("text", ["input.path", "=value", "  =x", ""])
def test_parse_override_needs_key_and_equals(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse_override(text)
    assert str(e.value) == f"--set {text!r}: expected key=value"


def test_overrides_are_typed_through_load() -> None:
    cfg = config.load(
        None,
        [
            *BASE,
            "spark.shuffle_partitions=4",
            "features.windows_days=[7, 28]",
            "input.columns.channel=123",  # a numeric column name stays a name
            "segment.min_segment_share=0",  # int 0 is accepted as a float
        ],
    )
    assert cfg["spark.shuffle_partitions"] == 4
    assert cfg["features.windows_days"] == [7, 28]
    assert cfg["input.columns.channel"] == "123"
    assert cfg["segment.min_segment_share"] == 0.0
    assert isinstance(cfg["segment.min_segment_share"], float)


def test_later_override_wins_over_file(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[features]\ntop_categories = 3\n', encoding="utf-8")
    cfg = config.load(conf, [*BASE, "features.top_categories=7"])
    assert cfg["features.top_categories"] == 7
    assert cfg.source == str(conf)


def test_set_date_key_with_unquoted_date() -> None:
    cfg = config.load(None, [*BASE, "generate.start_date=2023-01-01"])
    assert cfg["generate.start_date"] == "2023-01-01"


# --- masking ------------------------------------------------------------------------------------

def test_masked_hides_secret_spark_settings_only() -> None:
    cfg = config.load(
        None,
        [
            *BASE,
            "spark.conf.spark.hadoop.fs.s3a.secret.key=s3cr3t",
            "spark.conf.spark.hadoop.fs.s3a.access.key=AKIA123",
            "spark.conf.spark.ssl.keyPassword=pw",
            "spark.conf.spark.sql.adaptive.enabled=true",
        ],
    )
    m = cfg.masked()
    assert m["spark.conf.spark.hadoop.fs.s3a.secret.key"] == "***"
    assert m["spark.conf.spark.hadoop.fs.s3a.access.key"] == "***"
    assert m["spark.conf.spark.ssl.keyPassword"] == "***"
    assert m["spark.conf.spark.sql.adaptive.enabled"] is True
    assert m["input.path"] == "data/in.csv"
    assert m["input.columns.customer_id"] == "cid"
    assert "s3cr3t" not in repr(m) and "AKIA123" not in repr(m)
    # Spark itself still gets the real value
    assert cfg.spark_conf["spark.hadoop.fs.s3a.secret.key"] == "s3cr3t"
    assert cfg.spark_conf["spark.sql.adaptive.enabled"] == "True"


def test_digest_ignores_secret_values_but_not_settings() -> None:
    a = config.load(None, [*BASE, "spark.conf.spark.hadoop.fs.s3a.secret.key=one"])
    b = config.load(None, [*BASE, "spark.conf.spark.hadoop.fs.s3a.secret.key=two"])
    c = config.load(None, [*BASE, "spark.conf.spark.hadoop.fs.s3a.secret.key=one", "features.top_categories=3"])
    assert a.digest() == b.digest()
    assert a.digest() != c.digest()
    assert len(a.digest()) == 16


# --- --as-of ------------------------------------------------------------------------------------

def test_parse_as_of_valid() -> None:
    assert config.parse_as_of("2024-02-29") == dt.date(2024, 2, 29)
    assert config.parse_as_of(None) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-13-01", "--as-of: not a real date (got '2024-13-01')"),
        ("2023-02-29", "--as-of: not a real date (got '2023-02-29')"),
        ("yesterday", "--as-of: must be a date YYYY-MM-DD (got 'yesterday')"),
        ("2024-6-30", "--as-of: must be a date YYYY-MM-DD (got '2024-6-30')"),
        ("20240630", "--as-of: must be a date YYYY-MM-DD (got '20240630')"),
    ],
)
def test_parse_as_of_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse_as_of(text)
    assert str(e.value) == message


# --- shipped configuration files ----------------------------------------------------------------

def test_local_conf_loads() -> None:
    cfg = config.load(REPO / "conf" / "local.toml")
    assert cfg.source.endswith("local.toml")
    assert cfg["spark.master"] == "local[2]"
    assert cfg["spark.shuffle_partitions"] is None  # left to AQE: a fixed 8 spilled at 100M lines
    assert cfg["input.format"] == "csv"
    assert cfg["ingest.mode"] == "overwrite"
    assert cfg.column_map == {
        "customer_id": "CustomerID",
        "timestamp": "InvoiceDate",
        "quantity": "Quantity",
        "unit_price": "UnitPrice",
        "transaction_id": "InvoiceNo",
        "category": "Category",
        "channel": "Channel",
        "country": "Country",
    }


def test_cluster_conf_loads() -> None:
    cfg = config.load(REPO / "conf" / "cluster.toml")
    assert cfg["spark.master"] is None
    assert cfg["input.format"] == "parquet"
    assert cfg["ingest.mode"] == "append"
    assert cfg["output.root"] == "s3a://my-bucket/custseg"
    assert cfg.spark_conf == {"spark.sql.adaptive.skewJoin.enabled": "true"}
    assert cfg.column("amount") == "amount"


def test_missing_conf_file() -> None:
    with pytest.raises(ConfigError, match=r"^--conf: no such file: .*nope\.toml$"):
        config.load("nope.toml")


def test_invalid_toml(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[input\npath = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^--conf .*bad\.toml: not valid TOML"):
        config.load(conf)


# --- the CLI stops before Spark -----------------------------------------------------------------

@pytest.fixture
def no_spark(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the CLI gets as far as building a SparkSession."""
    from custseg.io import session

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("Spark was started")

    monkeypatch.setattr(session, "build_session", refuse)


def test_cli_missing_conf_exits_2(capsys: pytest.CaptureFixture[str], no_spark: None) -> None:
    code = cli.main(["ingest", "--conf", "nope.toml"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("custseg: error: --conf")
    assert "nope.toml" in lines[0]


def test_cli_missing_input_exits_2(capsys: pytest.CaptureFixture[str], no_spark: None) -> None:
    code = cli.main(
        ["ingest", "--conf", str(REPO / "conf" / "local.toml"), "--set", "input.path=/nonexistent/x.csv"]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0] == "custseg: error: input.path: nothing found at /nonexistent/x.csv"


def test_cli_bad_override_exits_2(capsys: pytest.CaptureFixture[str], no_spark: None) -> None:
    code = cli.main(["features", "--conf", str(REPO / "conf" / "local.toml"), "--set", "input.format=xls"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == "custseg: error: input.format: must be one of csv, parquet, json, delta (got 'xls')"


def test_cli_bad_as_of_exits_2(capsys: pytest.CaptureFixture[str], no_spark: None) -> None:
    code = cli.main(["features", "--conf", str(REPO / "conf" / "local.toml"), "--as-of", "yesterday"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == "custseg: error: --as-of: must be a date YYYY-MM-DD (got 'yesterday')"
