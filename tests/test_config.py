"""Configuration: TOML + --set overrides, validated before Spark starts (no Spark in this module)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
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


@pytest.mark.parametrize("key", ["input.path", "output.root"])
def test_missing_required_key(key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, without(key))
    assert str(e.value) == f"{key}: required but not set"


@pytest.mark.parametrize("role", ["customer_id", "timestamp"])
def test_unset_required_role_is_left_to_recognition_but_cannot_be_switched_off(role: str) -> None:
    # unset: the ingest recognises a column by its name (custseg.stages.ingest.mapping) or says what to set
    assert config.load(None, without(f"input.columns.{role}")).column_settings[role] is None
    with pytest.raises(ConfigError, match=rf"^input\.columns\.{role}: required: cannot be switched off$"):
        config.load(None, [*without(f"input.columns.{role}"), f"input.columns.{role}="])


@pytest.mark.parametrize("extra", [["input.columns.quantity="], ["input.columns.unit_price="]],
                         ids=["quantity-off", "unit-price-off"])
def test_amount_switched_off_needs_quantity_and_price(extra: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*without("input.columns.amount"), "input.columns.amount=", *extra])
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


# an Azure SAS key: the setting's name has none of the keywords, its value is the credential
SAS_KEY = "spark.conf.spark.hadoop.fs.azure.sas.sales.acmestore.blob.core.windows.net"
SAS = "sv=2022-11-02&sr=c&sp=rl&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5%3D"
S3_URI = "s3a://AKIAEXAMPLE7:wJalrXUtn/FEMI+K7MDENG@sales-bucket/logs/*.csv"


@pytest.mark.parametrize(
    "key",
    [
        SAS_KEY,
        "spark.conf.fs.azure.sas.sales.acmestore.blob.core.windows.net",  # without spark.hadoop.
        "spark.conf.spark.hadoop.fs.azure.account.oauth2.client.id.acmestore.dfs.core.windows.net",
        "spark.conf.spark.hadoop.fs.azure.account.oauth2.client.secret",
        "spark.conf.spark.hadoop.fs.azure.account.key.acmestore.dfs.core.windows.net",
        "spark.conf.spark.hadoop.fs.s3a.bucket.sales.session.token",
        "spark.conf.spark.hadoop.fs.s3a.encryption.key",
        "spark.conf.spark.hadoop.fs.gs.auth.service.account.private.key",
        "spark.conf.spark.hadoop.fs.gs.auth.service.account.private.key.id",
        "spark.conf.spark.hadoop.google.cloud.auth.service.account.json.keyfile",
        "spark.conf.spark.authenticate.secret",
        "spark.conf.spark.ssl.keyStorePassword",
        "spark.conf.spark.hadoop.javax.jdo.option.ConnectionPassword",
        "spark.conf.spark.hadoop.hive.metastore.db.passwd",
        "spark.conf.spark.kafka.clusters.main.sasl.jaas.config",
    ],
)
def test_masked_hides_known_credential_settings(key: str) -> None:
    cfg = config.load(None, [*BASE, f"{key}={SAS}"])
    m = cfg.masked()
    assert m[key] == "***"
    assert "Zm9vYmFy" not in json.dumps(m)
    assert cfg.spark_conf[key.removeprefix("spark.conf.")] == SAS  # Spark itself gets the real value


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("spark.conf.spark.executor.memory", "8g", "8g"),
        ("spark.conf.spark.hadoop.fs.s3a.endpoint", "https://minio.internal:9000", "https://minio.internal:9000"),
        ("spark.conf.spark.hadoop.fs.s3a.path.style.access", "true", True),
        ("spark.conf.spark.authenticate", "true", True),
        ("spark.conf.spark.sql.shuffle.partitions", "64", 64),
    ],
)
def test_masked_shows_ordinary_spark_settings(key: str, value: str, shown: object) -> None:
    assert config.load(None, [*BASE, f"{key}={value}"]).masked()[key] == shown


def test_masked_hides_credentials_in_uris_of_any_value() -> None:
    cfg = config.load(
        None,
        [
            *[o for o in BASE if not o.startswith(("input.path=", "output.root="))],
            f"input.path={S3_URI}",
            "output.root=abfss://tables@acmestore.dfs.core.windows.net/custseg",  # the container stays
            "generate.path=https://svc:pa55w0rd-x@files.internal/sample.csv",
            'segment.features=["ftp://anon:hunter22@host/x", "recency_days"]',
            "spark.conf.spark.eventLog.dir=s3a://AKIAOTHER9:OtherSecret99@logs/spark",
        ],
    )
    m = cfg.masked()
    assert m["input.path"] == "s3a://***@sales-bucket/logs/*.csv"
    assert m["output.root"] == "abfss://tables@acmestore.dfs.core.windows.net/custseg"
    assert m["generate.path"] == "https://***@files.internal/sample.csv"
    assert m["segment.features"] == ["ftp://***@host/x", "recency_days"]
    assert m["spark.conf.spark.eventLog.dir"] == "s3a://***@logs/spark"
    blob = json.dumps(m)
    for secret in ("AKIAEXAMPLE7", "wJalrXUtn", "pa55w0rd", "hunter22", "OtherSecret99", "AKIAOTHER9"):
        assert secret not in blob
    assert cfg["input.path"] == S3_URI  # the job still reads the real path


def test_digest_is_stable_and_does_not_depend_on_credentials() -> None:
    def load(sas: str, path: str) -> config.Config:
        return config.load(None, [*without("input.path"), f"input.path={path}", f"{SAS_KEY}={sas}"])

    a = load("sig=one", S3_URI)
    b = load("sig=two", S3_URI.replace("wJalrXUtn", "Different1"))
    c = load("sig=one", S3_URI.replace("logs", "other"))
    assert a.digest() == b.digest() == a.with_overrides({}).digest()
    assert a.digest() != c.digest()


def test_non_plain_secret_setting_is_refused_without_its_value() -> None:
    with pytest.raises(ConfigError) as e:
        config.validate({**dict(config.load(None, BASE)), SAS_KEY: ["Zm9vYmFyYmF6"]})
    assert str(e.value) == f"{SAS_KEY}: Spark settings must be plain values, got ***"


def test_redact_text_hides_uri_credentials_secrets_and_control_characters() -> None:
    cfg = config.load(None, [*BASE, f"{SAS_KEY}={SAS}"])
    text = (
        f"cannot read {S3_URI}: bad byte \x1b[31m\x00\x9b\x07 near {SAS}\r\n"
        "at https://acmestore.blob.core.windows.net/c/f.csv?sv=2022&sig=c2VjcmV0%3D&se=2\tend \u202e"
    )
    assert config.redact_text(text, cfg) == (
        "cannot read s3a://***@sales-bucket/logs/*.csv: bad byte \\x1b[31m\\x00\\x9b\\x07 near ***\\x0d\n"
        "at https://acmestore.blob.core.windows.net/c/f.csv?sv=2022&sig=***&se=2\tend \\u202e"
    )
    # without a configuration: URI credentials and control characters only
    assert config.redact_text("s3a://K:S@b/x\x1b[2J") == "s3a://***@b/x\\x1b[2J"
    assert config.redact_text("plain text, hdfs://nn:8020/a, a@b.c") == "plain text, hdfs://nn:8020/a, a@b.c"


# --- blank paths -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["input.path", "output.root", "generate.path", "generate.truth_path"])
def test_empty_path_is_refused(key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.load(None, [*without(key), f"{key}="])
    assert str(e.value) == f"{key}: must not be empty or blank (got '')"


@pytest.mark.parametrize("key", ["input.path", "output.root", "generate.path", "generate.truth_path"])
def test_blank_path_is_refused(key: str, tmp_path: Path) -> None:
    section, name = key.split(".")
    conf = tmp_path / "c.toml"
    conf.write_text(f'[{section}]\n{name} = " \\t "\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{key}: must not be empty or blank"):
        config.load(conf, without(key))
    with pytest.raises(ConfigError, match=rf"^{key}: must not be empty or blank"):
        config.validate({**dict(config.load(None, BASE)), key: "   "})


def test_empty_model_root_means_the_default() -> None:
    assert config.load(None, [*BASE, "segment.model_root="])["segment.model_root"] == ""


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
    # no column named: the sample's columns (and a user's, when named alike) are recognised at ingest
    assert cfg.column_map == {}
    assert cfg["input.recognise_columns"] is True
    from custseg.stages.ingest import mapping
    sample = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country", "Category",
              "Channel"]
    assert mapping.resolve(sample, cfg.column_settings).columns == {
        "customer_id": "CustomerID", "timestamp": "InvoiceDate", "quantity": "Quantity", "unit_price": "UnitPrice",
        "transaction_id": "InvoiceNo", "category": "Category", "channel": "Channel", "country": "Country",
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



def test_cli_empty_output_root_exits_2(capsys: pytest.CaptureFixture[str], no_spark: None) -> None:
    code = cli.main(["ingest", "--conf", str(REPO / "conf" / "local.toml"), "--set", "output.root="])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.strip() == "custseg: error: output.root: must not be empty or blank (got '')"


# --- what leaves the CLI is redacted ------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_redacting_filter_left() -> Iterator[None]:
    """The CLI puts its redacting filter on the root logger's handlers (pytest's too): take it off after."""
    from custseg.core.redact import RedactingFilter

    yield
    for handler in logging.getLogger().handlers:
        for f in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(f)


def test_cli_config_error_line_is_redacted(capsys: pytest.CaptureFixture[str], no_spark: None) -> None:
    code = cli.main(["features", "--conf", str(REPO / "conf" / "local.toml"), "--set", f"input.format={S3_URI}"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == (
        "custseg: error: input.format: must be one of csv, parquet, json, delta "
        "(got 's3a://***@sales-bucket/logs/*.csv')"
    )


def test_cli_failure_line_and_log_are_redacted(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from custseg.io import session

    failure = RuntimeError(f"java.io.IOException: cannot open {S3_URI} \x1b]0;owned\x07 with {SAS}\n\tat x.y")

    def fail(*_a: object, **_k: object) -> None:
        raise failure

    monkeypatch.setattr(session, "build_session", fail)
    code = cli.main(["features", "--conf", str(REPO / "conf" / "local.toml"), "--set", f"{SAS_KEY}={SAS}"])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "custseg: error: features failed: RuntimeError: java.io.IOException: cannot open "
        "s3a://***@sales-bucket/logs/*.csv \\x1b]0;owned\\x07 with ***"
    )
    # the log: every record's message and traceback, also records of other loggers
    logging.getLogger("custseg.test").warning("reading %s\x1b[2J", S3_URI)
    logging.getLogger("py4j.test").error("failed", exc_info=(RuntimeError, failure, None))
    text = caplog.text
    assert "s3a://***@sales-bucket/logs/*.csv\\x1b[2J" in text
    assert "wJalrXUtn" not in text and "Zm9vYmFy" not in text and "\x1b" not in text


def test_runs_table_error_is_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    from custseg import runner
    from custseg.core import catalog

    rows: list[tuple[object, ...]] = []

    class FakeSpark:
        def createDataFrame(self, data: list[tuple[object, ...]], schema: object) -> object:  # noqa: N802
            rows.extend(data)
            return data

    monkeypatch.setattr(runner.delta, "version", lambda *_a: None)
    monkeypatch.setattr(runner.delta, "append", lambda *_a: None)
    cfg = config.load(None, [*BASE, f"{SAS_KEY}={SAS}"])
    summary = runner.RunSummary("r1", dt.datetime.now(dt.UTC), "out")
    error = RuntimeError(f"open {S3_URI} failed ({SAS}) \x1b[0m\nsecond line")
    runner.record_run(FakeSpark(), cfg, summary, error)  # type: ignore[arg-type]
    row = rows[0]
    assert row[catalog.RUNS_SCHEMA.fieldNames().index("error")] == (
        "open s3a://***@sales-bucket/logs/*.csv failed (***) \\x1b[0m"
    )
    assert "wJalrXUtn" not in str(row) and "Zm9vYmFy" not in str(row)


# --- a future as-of date ------------------------------------------------------------------------

def test_cli_warns_about_a_future_as_of(caplog: pytest.LogCaptureFixture, no_spark: None) -> None:
    today = dt.datetime.now(dt.UTC).date()
    as_of = today + dt.timedelta(days=2)
    code = cli.main(["features", "--conf", str(REPO / "conf" / "local.toml"), "--as-of", str(as_of)])
    assert code == 1  # no_spark stops it right after
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "--as-of" in r.getMessage()]
    assert len(warnings) == 1
    assert str(as_of) in warnings[0] and "today" in warnings[0] and "no transactions after today" in warnings[0]


def test_cli_does_not_warn_about_a_past_as_of(caplog: pytest.LogCaptureFixture, no_spark: None) -> None:
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    cli.main(["features", "--conf", str(REPO / "conf" / "local.toml"), "--as-of", str(yesterday)])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "--as-of" in r.getMessage()]


def test_the_jvm_custseg_starts_uses_custseg_log4j2_configuration(spark) -> None:  # type: ignore[no-untyped-def]
    from custseg.io import session

    context = spark.sparkContext._jvm.org.apache.logging.log4j.LogManager.getContext(False)
    source = context.getConfiguration().getConfigurationSource().getLocation()
    assert str(source) == str(session.LOG4J2_FILE)
    # it drops MLlib's per-fit note and keeps other warnings
    text = session.LOG4J2_FILE.read_text(encoding="utf-8")
    assert "Be careful of double caching" in text and "rootLogger.level = warn" in text
