"""Configuration: a TOML file plus `--set key=value` overrides, validated before Spark starts.

Keys are dotted (`input.columns.customer_id`). Every key custseg knows is declared once in `SCHEMA`
with its type, default and check; an unknown key, a missing required key or a bad value stops with a
one-line `ConfigError` naming the key. This module imports no Spark.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custseg.core import columns as C
from custseg.core.errors import ConfigError

INPUT_FORMATS = ("csv", "parquet", "json", "delta")
INGEST_MODES = ("overwrite", "append")
GENERATE_FORMATS = ("csv", "parquet")
ALGORITHMS = ("kmeans", "bisecting_kmeans")
SEGMENT_MODES = ("fit", "score")
SPARK_CONF_PREFIX = "spark.conf."
_SECRET_HINTS = ("secret", "password", "token", "key", "credential")


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, default, and what it means (shown in the README)."""

    kind: type
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], str | None] | None = None
    help: str = ""


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _iso_date(v: Any) -> str | None:
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        return "must be a date YYYY-MM-DD"
    return None


def _timezone(v: Any) -> str | None:
    try:
        zoneinfo.ZoneInfo(v)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "must be an IANA time zone such as UTC or Europe/Berlin"
    return None


def _positive_ints(v: Any) -> str | None:
    if not v or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
        return "must be a non-empty list of positive whole numbers"
    return None


def _k_range(v: Any) -> str | None:
    if (
        len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        or not 2 <= v[0] <= v[1]
    ):
        return "must be [low, high] with 2 <= low <= high"
    return None


def _columns_key(role: str, required: bool = False) -> Key:
    return Key(str, None, required, help=f"source column holding the {role.replace('_', ' ')}")


SCHEMA: dict[str, Key] = {
    # Spark session
    "spark.master": Key(str, None, help="Spark master (local[2], spark://host:7077); unset: spark-submit decides"),
    "spark.app_name": Key(str, "custseg", help="Spark application name"),
    "spark.driver_memory": Key(str, None, help="driver memory when custseg starts the JVM itself (local mode)"),
    "spark.shuffle_partitions": Key(int, None, check=_positive, help="initial shuffle partitions (AQE coalesces them)"),
    "spark.log_level": Key(str, "WARN", choices=("ERROR", "WARN", "INFO", "DEBUG"), help="JVM log level"),
    # input
    "input.path": Key(str, None, True, help="file, folder or glob of the transaction log (or a Delta table path)"),
    "input.format": Key(str, "csv", choices=INPUT_FORMATS, help="format of input.path"),
    "input.timestamp_format": Key(str, "",
        help="Spark datetime pattern of the timestamp column; empty: try common formats"),
    "input.timezone": Key(str, "UTC", check=_timezone,
        help="time zone of timestamps without an offset, and of purchase dates"),
    "input.csv.delimiter": Key(str, ",", help="CSV field delimiter"),
    "input.csv.header": Key(bool, True, help="CSV has a header row"),
    "input.csv.encoding": Key(str, "UTF-8", help="CSV character encoding (e.g. ISO-8859-1)"),
    **{f"input.columns.{r}": _columns_key(r, r in (C.ROLE_CUSTOMER_ID, C.ROLE_TIMESTAMP)) for r in C.ROLES},
    # ingest
    "ingest.mode": Key(str, "overwrite", choices=INGEST_MODES,
        help="overwrite: the table becomes this input; append: add files not yet ingested"),
    "ingest.future_tolerance_minutes": Key(int, 0, check=_non_negative,
        help="timestamps later than job start plus this are quarantined"),
    # features
    "features.top_categories": Key(int, 10, check=_positive,
        help="categories with their own spend share; the rest are 'other'"),
    "features.top_channels": Key(int, 5, check=_positive,
        help="channels with their own spend share; the rest are 'other'"),
    "features.windows_days": Key(list, [30, 90, 365], check=_positive_ints,
        help="trailing windows (days) for spend and transaction counts"),
    # segmentation (used by the segment stage)
    "segment.features": Key(list, [], help="feature columns to cluster on; empty: the default set"),
    "segment.k_range": Key(list, [2, 10], check=_k_range, help="[low, high] k searched in model selection"),
    "segment.algorithms": Key(list, list(ALGORITHMS), help="algorithms compared: kmeans, bisecting_kmeans"),
    "segment.n_starts": Key(int, 3, check=_positive, help="seeded starts per candidate; the lowest cost is kept"),
    "segment.max_iter": Key(int, 30, check=_positive, help="iterations per fit"),
    "segment.min_segment_share": Key(float, 0.02, check=_fraction,
        help="smallest acceptable segment, as a share of customers"),
    "segment.selection_sample_rows": Key(int, 100_000, check=_positive,
        help="model selection runs on a seeded sample of this many customers when there are more"),
    "segment.rows_per_partition": Key(int, 250_000, check=_positive,
        help="customers per partition of the clustering input (at least 2 partitions): the split depends on "
        "the data and this key, never on the cluster"),
    "segment.pca_components": Key(int, 0, check=_non_negative,
        help="project onto this many principal components first; 0: no PCA"),
    "segment.k": Key(int, 0, check=_non_negative,
        help="fix k (skips selection when segment.algorithm is set too); 0: select"),
    "segment.algorithm": Key(str, "", choices=("", *ALGORITHMS), help="fix the algorithm; empty: select"),
    "segment.mode": Key(str, "fit", choices=SEGMENT_MODES,
        help="fit: select and fit a model on the date's features; score: assign segments with a saved model "
        "(segment.model)"),
    "segment.model": Key(str, "latest",
        help="the saved model scoring uses: a segment run id, or latest (the newest model fitted on or before "
        "the as-of date)"),
    "segment.model_root": Key(str, "", help="where fitted models are saved; empty: <output.root>/models"),
    # output and run
    "output.root": Key(str, None, True, help="folder or URI under which every table lives as <output.root>/<table>"),
    "run.seed": Key(int, 42, help="seed for sampling and model fitting"),
    # sample data generator
    "generate.path": Key(str, "data/sample/transactions.csv", help="where `custseg generate` writes the log"),
    "generate.truth_path": Key(str, "data/sample/truth",
        help="where it writes each customer's planted group (Parquet)"),
    "generate.format": Key(str, "csv", choices=GENERATE_FORMATS, help="format of the generated log"),
    "generate.customers": Key(int, 5000, check=_positive, help="number of customers (about 54 invoice lines each)"),
    "generate.seed": Key(int, 7, help="generator seed: same seed, same log"),
    "generate.start_date": Key(str, "2022-01-01", check=_iso_date, help="first day of generated history"),
    "generate.end_date": Key(str, "2024-12-31", check=_iso_date, help="last day of generated history"),
    "generate.bad_row_fraction": Key(float, 0.002, check=_fraction,
        help="share of rows deliberately broken to exercise the quarantine"),
    "generate.partitions": Key(int, 0, check=_non_negative, help="output files; 0: sized to the data"),
}

REQUIRED_ONE_OF_AMOUNT = "input.columns.amount, or both input.columns.quantity and input.columns.unit_price"


class Config(Mapping[str, Any]):
    """Validated, flat, dotted-key configuration. Read-only."""

    def __init__(self, values: Mapping[str, Any], source: str = "") -> None:
        self._values = dict(values)
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def column(self, role: str) -> str | None:
        """Source column mapped to `role`, or None when the role is not mapped."""
        return self._values.get(f"input.columns.{role}") or None

    @property
    def column_map(self) -> dict[str, str]:
        """Mapped roles only: role -> source column."""
        return {r: c for r in C.ROLES if (c := self.column(r))}

    @property
    def spark_conf(self) -> dict[str, str]:
        """Free-form Spark settings from the `[spark.conf]` table."""
        n = len(SPARK_CONF_PREFIX)
        return {k[n:]: str(v) for k, v in self._values.items() if k.startswith(SPARK_CONF_PREFIX)}

    def table_path(self, table: str) -> str:
        """Location of a custseg table: <output.root>/<table>."""
        return f"{str(self['output.root']).rstrip('/')}/{table}"

    def masked(self) -> dict[str, Any]:
        """Values safe to log or store: anything that looks like a secret is masked."""
        return {k: ("***" if _looks_secret(k) else v) for k, v in sorted(self._values.items())}

    def digest(self) -> str:
        """Stable short hash of the (masked) configuration, for the runs table."""
        blob = json.dumps(self.masked(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A new validated Config with some values replaced (for tests and programmatic use)."""
        merged = {**self._values, **overrides}
        return validate(merged, self.source)


def _looks_secret(key: str) -> bool:
    # custseg's own keys hold no secrets; free-form Spark settings may (fs.s3a.secret.key, ...)
    return key not in SCHEMA and any(h in key.lower() for h in _SECRET_HINTS)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{key}."))
        else:
            flat[key] = v
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, value); the value is read as TOML when it parses, else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected key=value")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    if isinstance(value, (dt.date, dt.time)):  # TOML dates: every date-like key here is text
        value = raw
    return key, value


def _coerce(key: str, spec: Key, value: Any) -> Any:
    if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if spec.kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if spec.kind is list and isinstance(value, tuple):
        value = list(value)
    ok = isinstance(value, spec.kind) and not (spec.kind is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{key}: expected {spec.kind.__name__}, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        shown = ", ".join(repr(c) if c == "" else str(c) for c in spec.choices)
        raise ConfigError(f"{key}: must be one of {shown} (got {value!r})")
    if spec.check is not None and (problem := spec.check(value)):
        raise ConfigError(f"{key}: {problem} (got {value!r})")
    return value


def validate(values: Mapping[str, Any], source: str = "") -> Config:
    """Check keys and values, apply defaults, and return a Config; raise ConfigError on the first problem."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:  # unset (defaults are applied below)
            continue
        if key.startswith(SPARK_CONF_PREFIX):
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{key}: Spark settings must be plain values, got {value!r}")
            out[key] = value
            continue
        spec = SCHEMA.get(key)
        if spec is None:
            near = [k for k in SCHEMA if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{key}: unknown configuration key{hint}")
        out[key] = None if value == "" and key.startswith("input.columns.") else _coerce(key, spec, value)
    for key, spec in SCHEMA.items():
        if out.get(key) is None:
            if spec.required:
                raise ConfigError(f"{key}: required but not set")
            out[key] = spec.default
    cols = {r: out.get(f"input.columns.{r}") for r in C.ROLES}
    if not cols[C.ROLE_AMOUNT] and not (cols[C.ROLE_QUANTITY] and cols[C.ROLE_UNIT_PRICE]):
        raise ConfigError(f"input.columns.amount: required: set {REQUIRED_ONE_OF_AMOUNT}")
    mapped = [c for c in cols.values() if c]
    if dupes := sorted({c for c in mapped if mapped.count(c) > 1}):
        raise ConfigError(f"input.columns: column {dupes[0]!r} is mapped to more than one role")
    for algo in out["segment.algorithms"]:
        if algo not in ALGORITHMS:
            raise ConfigError(f"segment.algorithms: unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")
    if not out["segment.algorithms"]:
        raise ConfigError("segment.algorithms: must name at least one algorithm")
    if out["generate.start_date"] >= out["generate.end_date"]:
        raise ConfigError("generate.end_date: must be after generate.start_date")
    return Config(out, source)


def load(path: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML file (may be None), apply `key=value` overrides, validate."""
    values: dict[str, Any] = {}
    source = ""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"--conf: no such file: {p}")
        try:
            values = _flatten(tomllib.loads(p.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--conf {p}: not valid TOML: {e}") from None
        source = str(p)
    for text in overrides:
        key, value = parse_override(text)
        values[key] = value
    return validate(values, source)


def parse_as_of(text: str | None) -> dt.date | None:
    """`--as-of YYYY-MM-DD` -> date (None stays None)."""
    if text is None:
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ConfigError(f"--as-of: must be a date YYYY-MM-DD (got {text!r})")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--as-of: not a real date (got {text!r})") from None
