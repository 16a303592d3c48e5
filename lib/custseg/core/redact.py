"""Keeping secrets and raw bytes out of what custseg shows or stores: logs, error lines, the runs table.

- `is_secret_setting`: a free-form Spark/Hadoop setting whose value is a credential (by keyword, by a word of
  its name, or by a list of known credential settings of S3A, Azure, GCS, Spark and the Hive metastore).
- `redact_uris`: the user-info of every URI (`s3a://KEY:SECRET@bucket/x` -> `s3a://***@bucket/x`; but the
  container of `abfss://container@account...`) and the values of signature/token query parameters
  (`?sig=...`) are masked; the rest of the URI stays readable.
- `escape_controls`: C0/C1 control characters other than newline and tab (so ANSI escape sequences too),
  bidirectional-text overrides, Unicode line separators and lone surrogates become visible `\\xNN` / `\\uNNNN`
  text, so bytes from a broken input file never reach a terminal or a log raw.
- `redact_text`: all of that, plus the literal values of known secrets, for any free text.

This module imports no Spark.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

# a setting whose name contains one of these anywhere is a secret (fs.s3a.secret.key, spark.ssl.keyPassword, ...)
SECRET_HINTS = ("secret", "password", "token", "key", "credential")
# ... or has one of these as a word of its name (split at '.', '-', '_' and camelCase)
SECRET_WORDS = frozenset({"sas", "passwd", "pwd", "passphrase", "private", "auth", "jaas", "signature", "sig",
                          "apikey", "bearer"})
# known credential settings (lower case, without the `spark.hadoop.` prefix; `*`: anything, dots included)
SECRET_SETTINGS = (
    # Hadoop S3A (and the retired s3/s3n connectors)
    "fs.s3a.access.key", "fs.s3a.secret.key", "fs.s3a.session.token",
    "fs.s3a.encryption.key", "fs.s3a.server-side-encryption.key", "fs.s3a.server-side-encryption-key",
    "fs.s3a.bucket.*.access.key", "fs.s3a.bucket.*.secret.key", "fs.s3a.bucket.*.session.token",
    "fs.s3a.bucket.*.encryption.key", "fs.s3a.bucket.*.server-side-encryption.key",
    "fs.s3.awsaccesskeyid", "fs.s3.awssecretaccesskey", "fs.s3n.awsaccesskeyid", "fs.s3n.awssecretaccesskey",
    # Azure (ABFS, WASB, ADLS Gen1)
    "fs.azure.account.key*", "fs.azure.sas.*", "fs.azure.account.oauth2.client.secret*",
    "fs.azure.account.oauth2.client.id*", "fs.azure.account.oauth2.refresh.token*",
    "fs.azure.account.oauth2.user.password*", "fs.adl.oauth2.credential", "fs.adl.oauth2.client.id",
    "fs.adl.oauth2.refresh.token", "dfs.adls.oauth2.credential", "dfs.adls.oauth2.client.id",
    "dfs.adls.oauth2.refresh.token",
    # Google Cloud Storage
    "fs.gs.auth.service.account.private.key*", "fs.gs.auth.service.account.json.keyfile",
    "fs.gs.auth.client.secret", "fs.gs.auth.refresh.token", "google.cloud.auth.service.account.json.keyfile",
    "google.cloud.auth.client.secret", "google.cloud.auth.refresh.token",
    # Spark, the Hive metastore, Kafka
    "spark.authenticate.secret*", "spark.ssl.*password", "spark.ssl.*password.*",
    "javax.jdo.option.connectionpassword", "*sasl.jaas.config",
)
_HADOOP_PREFIX = "spark.hadoop."

# scheme://[user[:password]]@ -- the password may hold '/' (AWS secret keys do), so it runs to the '@'
# (the lengths are bounded so that long texts without URIs take linear time)
_URI_USERINFO = re.compile(
    r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}://)(?P<info>[^\s/?#@:\"'<>]{0,256}(?::[^\s@\"'<>]{0,2048})?)@"
)
_QUERY_SECRET = re.compile(
    r"(?i)(?P<name>[?&](?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
    r"x-goog-credential|token|access_token|sas|password|passwd|secret|key|apikey|api_key)=)[^&#\s\"'<>]+"
)
# Azure's file systems put the container where a URI's user name goes: abfss://container@account.dfs...
_CONTAINER_SCHEMES = frozenset({"abfs://", "abfss://", "wasb://", "wasbs://"})
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029"
                       r"\ud800-\udfff]")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
MIN_SECRET_LENGTH = 6  # shorter values are not replaced in free text: they would match ordinary words


def is_secret_setting(name: str) -> bool:
    """True when the Spark/Hadoop setting `name` (with or without `spark.hadoop.`) holds a credential."""
    low = name.lower()
    if any(h in low for h in SECRET_HINTS):
        return True
    if SECRET_WORDS.intersection(re.split(r"[^a-z0-9]+", _CAMEL.sub(r"\1.\2", name).lower())):
        return True
    bare = low[len(_HADOOP_PREFIX):] if low.startswith(_HADOOP_PREFIX) else low
    return any(fnmatch.fnmatchcase(bare, p) for p in SECRET_SETTINGS)


def _mask_userinfo(m: re.Match[str]) -> str:
    info = m["info"]
    if not info or (m["scheme"].lower() in _CONTAINER_SCHEMES and ":" not in info):
        return m[0]
    return f"{m['scheme']}{MASK}@"


def redact_uris(text: str) -> str:
    """Mask the user-info of every URI in `text`, and signature/token query parameters; keep the rest."""
    return _QUERY_SECRET.sub(rf"\g<name>{MASK}", _URI_USERINFO.sub(_mask_userinfo, text))


def redact_value(value: Any) -> Any:
    """A configuration value with URI credentials masked (texts, and texts inside lists); others unchanged."""
    if isinstance(value, str):
        return redact_uris(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    return value


def uri_credentials(value: Any) -> list[str]:
    """The user-info `redact_uris` masks in a value (whole, and its user and password), to be redacted as
    literals elsewhere."""
    if isinstance(value, list):
        return [c for v in value for c in uri_credentials(v)]
    if not isinstance(value, str):
        return []
    found = []
    for m in _URI_USERINFO.finditer(value):
        if _mask_userinfo(m) != m[0]:
            found += [m["info"], *m["info"].split(":", 1)]
    return found


def _escape(m: re.Match[str]) -> str:
    n = ord(m[0])
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}"


def escape_controls(text: str) -> str:
    """Control characters (but newline and tab), bidi overrides and lone surrogates as visible escapes."""
    return _CONTROLS.sub(_escape, text)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secret values, URI credentials or raw control characters."""
    for s in sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return escape_controls(redact_uris(text))


class RedactingFilter(logging.Filter):
    """Redacts every record passing a handler: its message and its traceback text (see `redact_text`).

    `secrets` (the literal values to hide, set once the configuration is known) may be replaced at any time.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: leave it to logging's own error handling
            return True
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, self.secrets)
        return True


def install_log_filter(secrets: Iterable[str] = ()) -> None:
    """Put a `RedactingFilter` on every handler of the root logger; a handler that has one gets `secrets`."""
    shared = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        mine = [f for f in handler.filters if isinstance(f, RedactingFilter)]
        for f in mine:
            f.secrets = shared.secrets
        if not mine:
            handler.addFilter(shared)
