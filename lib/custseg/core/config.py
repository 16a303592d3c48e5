"""Configuration: a TOML file plus `--set key=value` overrides, validated before Spark starts.

Keys are dotted (`input.columns.customer_id`). Every key custseg knows is declared once in `custseg.core.keys.SCHEMA`
with its type, default and check; an unknown key, a missing required key or a bad value stops with a
one-line `ConfigError` naming the key. This module imports no Spark.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from custseg.core import columns as C
from custseg.core import redact
from custseg.core.errors import ConfigError
from custseg.core.keys import (  # noqa: F401  (re-exported: the configuration's vocabulary)
    ALGORITHMS,
    GENERATE_FORMATS,
    INGEST_MODES,
    INPUT_FORMATS,
    REQUIRED_ONE_OF_AMOUNT,
    SCHEMA,
    SEGMENT_MODES,
    SPARK_CONF_PREFIX,
    Key,
)


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
        """Roles named in the configuration only: role -> source column (see `column_settings`)."""
        return {r: c for r in C.ROLES if (c := self.column(r))}

    @property
    def column_settings(self) -> dict[str, str | None]:
        """Every role's setting: a column name, "" (not used) or None (unset: recognise it by name)."""
        return {r: self._values.get(f"input.columns.{r}") for r in C.ROLES}

    @property
    def spark_conf(self) -> dict[str, str]:
        """Free-form Spark settings from the `[spark.conf]` table."""
        n = len(SPARK_CONF_PREFIX)
        return {k[n:]: str(v) for k, v in self._values.items() if k.startswith(SPARK_CONF_PREFIX)}

    def table_path(self, table: str) -> str:
        """Location of a custseg table: <output.root>/<table>."""
        return f"{str(self['output.root']).rstrip('/')}/{table}"

    def masked(self) -> dict[str, Any]:
        """Values safe to log or store: secret settings masked, and the user-info of every URI in any value."""
        return {k: redact.MASK if _looks_secret(k) else redact.redact_value(v) for k, v in sorted(self._values.items())}

    def secrets(self) -> list[str]:
        """The literal secret values (of secret settings, and URIs' user-info), for `redact_text`."""
        found = [str(v) for k, v in self._values.items() if _looks_secret(k) and not isinstance(v, bool)]
        return found + [c for v in self._values.values() for c in redact.uri_credentials(v)]

    def digest(self) -> str:
        """Stable short hash of the (masked) configuration, for the runs table."""
        blob = json.dumps(self.masked(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A new validated Config with some values replaced (for tests and programmatic use)."""
        merged = {**self._values, **overrides}
        return validate(merged, self.source)


def _looks_secret(key: str) -> bool:
    # custseg's own keys hold no secrets (URIs in them are redacted); free-form Spark settings may
    # (fs.s3a.secret.key, fs.azure.sas.<container>.<account>..., spark.ssl.keyStorePassword, ...)
    return key not in SCHEMA and redact.is_secret_setting(key.removeprefix(SPARK_CONF_PREFIX))


def redact_text(text: str, cfg: Config | None = None) -> str:
    """Any text made safe to print or store: without the configuration's secret values (when `cfg` is
    given), without URI credentials, and with control characters (ANSI escapes too) shown as escapes."""
    return redact.redact_text(text, cfg.secrets() if cfg is not None else ())


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
                shown = redact.MASK if _looks_secret(key) else repr(value)
                raise ConfigError(f"{key}: Spark settings must be plain values, got {shown}")
            out[key] = value
            continue
        spec = SCHEMA.get(key)
        if spec is None:
            near = [k for k in SCHEMA if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{key}: unknown configuration key{hint}")
        out[key] = _coerce(key, spec, value)
    for key, spec in SCHEMA.items():
        if out.get(key) is None:
            if spec.required:
                raise ConfigError(f"{key}: required but not set")
            out[key] = spec.default
    cols = {r: out.get(f"input.columns.{r}") for r in C.ROLES}
    for role in (C.ROLE_CUSTOMER_ID, C.ROLE_TIMESTAMP):
        if cols[role] == "":
            raise ConfigError(f"input.columns.{role}: required: cannot be switched off")
    if cols[C.ROLE_AMOUNT] == "" and "" in (cols[C.ROLE_QUANTITY], cols[C.ROLE_UNIT_PRICE]):
        raise ConfigError(f"input.columns.amount: required: set {REQUIRED_ONE_OF_AMOUNT}")
    mapped = [c for c in cols.values() if c]
    if dupes := sorted({c for c in mapped if mapped.count(c) > 1}):
        raise ConfigError(f"input.columns: column {dupes[0]!r} is mapped to more than one role")
    for algo in out["segment.algorithms"]:
        if algo not in ALGORITHMS:
            raise ConfigError(f"segment.algorithms: unknown algorithm {algo!r}; choose from {', '.join(ALGORITHMS)}")
    if not out["segment.algorithms"]:
        raise ConfigError("segment.algorithms: must name at least one algorithm")
    if out["attributes.cluster_on"] and not out["attributes.path"]:
        raise ConfigError("attributes.cluster_on: needs customer attributes: set attributes.path")
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
