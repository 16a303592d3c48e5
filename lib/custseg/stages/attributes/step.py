"""Attributes step: read the optional customer attributes input (demographics, CRM fields, ...), validate every
row, write the clean rows to customer_attributes and the bad ones to attributes_quarantine.

The input is read with the transaction log's reader (`custseg.io.sources`), so CSV options and the one-line
explanations of unreadable files are the same; its problems name the attributes.* keys. Both tables are
snapshots of the input: each is replaced in one commit. Without attributes.path the step writes nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import ConfigError, InputError, StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, sources
from custseg.stages.attributes import transform as T

log = logging.getLogger(__name__)

NOT_CONFIGURED = "no customer attributes configured (attributes.path)"


@dataclass
class AttributesResult(StageResult):
    configured: bool = True
    input: int = 0
    clean: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        if not self.configured:
            return {}
        return {"attributes.input": self.input, "attributes.clean": self.clean,
                "attributes.quarantined": self.quarantined, "attributes.duplicates": self.duplicates}

    def describe(self) -> str:
        if not self.configured:
            return NOT_CONFIGURED
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.quarantine_reasons.items())
        return (f"{self.input:,} attribute rows = {self.clean:,} customers + {self.quarantined:,} quarantined + "
                f"{self.duplicates:,} duplicates ({len(self.categorical)} categorical, {len(self.numeric)} numeric "
                "attributes)" + (f"; quarantine: {reasons}" if reasons else ""))


def check(cfg: Config) -> None:
    """The attributes settings, before Spark starts: a local attributes.path must exist, and no column may be
    both categorical and numeric. Raises ConfigError naming the key."""
    path = cfg["attributes.path"]
    if not path.strip():
        return
    try:
        sources.check_local_input(path)
    except InputError:
        raise ConfigError(f"attributes.path: nothing found at {path}") from None
    both = [c for c in cfg["attributes.numeric"] if c in cfg["attributes.categorical"]]
    if both:
        raise ConfigError(f"attributes.numeric: column {both[0]!r} is also named in attributes.categorical "
                          "(an attribute is one or the other)")


def run(spark: SparkSession, ctx: StageContext) -> AttributesResult:
    """Validate the attributes input; clean rows -> customer_attributes, bad rows -> attributes_quarantine."""
    cfg = ctx.cfg
    if not cfg["attributes.path"].strip():
        log.info("attributes: %s: nothing to do", NOT_CONFIGURED)
        return AttributesResult(configured=False)
    check(cfg)
    # the transaction log's reader and its explanations, pointed at the attributes input
    source = cfg.with_overrides({"input.path": cfg["attributes.path"], "input.format": cfg["attributes.format"]})
    try:
        return _run(spark, ctx, source)
    except InputError as e:
        raise InputError(_about_attributes(str(e))) from None
    except Exception as e:  # a file Spark fails to read inside a job: one line naming it
        if (err := sources.explain_read_error(e, source)) is not None:
            raise InputError(_about_attributes(str(err))) from None
        raise


def _about_attributes(message: str) -> str:
    """A reader's message about input.path / input.format, told about the attributes keys it came from."""
    return re.sub(r"\binput\.(path|format)\b", r"attributes.\1", message)


def _run(spark: SparkSession, ctx: StageContext, source: Config) -> AttributesResult:
    cfg, batch = ctx.cfg, ctx.run_id
    raw = sources.read_raw(spark, source)
    attributes = T.choose_attributes(raw.schema, cfg["attributes.customer_id"], cfg["attributes.categorical"],
                                     cfg["attributes.numeric"])
    categorical = [a.name for a in attributes if a.kind == C.KIND_CATEGORICAL]
    numeric = [a.name for a in attributes if a.kind == C.KIND_NUMERIC]
    how = "as configured" if cfg["attributes.categorical"] or cfg["attributes.numeric"] else \
        "every text column categorical, every numeric column numeric"
    log.info("attributes: categorical %s; numeric %s (%s)", ", ".join(categorical) or "-", ", ".join(numeric) or "-",
             how)
    for a in attributes:
        if a.name != a.source:
            log.info("attributes: column %r is %r in customer_attributes (Delta refuses ' ,;{}()=' in names)",
                     a.source, a.name)
    if raw.isEmpty():
        raise InputError(f"attributes.path: no rows in {cfg['attributes.path']}; nothing was written")
    validated = raw.transform(T.with_parsed_attributes(cfg["attributes.customer_id"], attributes,
                                                       cfg["ingest.missing_id_values"],
                                                       cfg["ingest.raw_record_exclude"]))
    if validated.filter(F.col(C.REASON).isNull()).isEmpty():
        _no_valid_rows(validated, cfg)

    checked = Observation("attributes")
    marked = validated.transform(T.mark_repeats_and_conflicts(attributes)).observe(checked, *T.row_counts())
    clean = marked.transform(T.filter_clean).transform(T.to_customer_attributes(attributes, batch))
    writes = {C.TABLE_CUSTOMER_ATTRIBUTES: delta.overwrite(clean, cfg.table_path(C.TABLE_CUSTOMER_ATTRIBUTES),
                                                           C.TABLE_CUSTOMER_ATTRIBUTES, ctx.run_id)}
    counts = checked.get  # filled by the pass that wrote the clean rows
    n_input, n_clean, n_dup = int(counts["input"]), int(counts["clean"]), int(counts["duplicates"])
    by_reason = {code: int(counts[code]) for code in T.REASON_CODES if counts[code]}
    n_bad = sum(by_reason.values())
    quarantined = marked.transform(T.filter_quarantined).transform(T.to_quarantine(batch, ctx.started))
    if not n_bad:  # that pass saw no bad row: the quarantine's write needs no second read of the input
        quarantined = spark.createDataFrame([], quarantined.schema)
    writes[C.TABLE_ATTRIBUTES_QUARANTINE] = delta.overwrite(
        quarantined, cfg.table_path(C.TABLE_ATTRIBUTES_QUARANTINE), C.TABLE_ATTRIBUTES_QUARANTINE, ctx.run_id)
    if n_input != n_clean + n_bad + n_dup:  # every row is kept, quarantined or a repeat: nothing else is dropped
        raise StageError(f"attributes: {n_input:,} input rows but {n_clean:,} clean + {n_bad:,} quarantined + "
                         f"{n_dup:,} duplicates")
    log.info("attributes: %d input rows = %d clean + %d quarantined + %d duplicates dropped", n_input, n_clean,
             n_bad, n_dup)
    for code, n in by_reason.items():
        log.info("attributes: quarantined %d rows: %s", n, code)
    return AttributesResult(True, n_input, n_clean, n_bad, n_dup, by_reason, categorical, numeric, writes=writes)


def _no_valid_rows(validated: DataFrame, cfg: Config) -> None:
    """Stop before replacing the tables when no row has a usable id and parsable numbers."""
    counts = validated.groupBy(C.REASON).count().orderBy(F.desc("count")).collect()  # bounded by reason codes
    total = sum(int(r["count"]) for r in counts)
    reasons = ", ".join(f"{r[C.REASON]} {int(r['count']):,}" for r in counts)
    raise InputError(f"attributes.path: none of the {total:,} rows in {cfg['attributes.path']} passed validation "
                     f"({reasons}); the tables were left as they were: check attributes.customer_id, "
                     "attributes.numeric and ingest.missing_id_values")
