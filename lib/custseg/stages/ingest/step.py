"""Ingest step: read the input log, validate every row, write clean rows, the quarantine and the manifest.

Overwrite replaces the three tables (and fails before writing anything when no row passes validation).
An append claims its new files in the manifest first, then writes transactions and quarantine rows, then
marks the claims done (see `manifest`): two appends started together never add a file twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import InputError, StageError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, sources
from custseg.stages.ingest import manifest, mapping
from custseg.stages.ingest import transform as T

log = logging.getLogger(__name__)


@dataclass
class IngestResult(StageResult):
    mode: str
    new_files: int = 0
    input: int = 0
    clean: int = 0
    quarantined: int = 0
    duplicates: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    duplicate_examples: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"ingest.input": self.input, "ingest.clean": self.clean, "ingest.quarantined": self.quarantined,
                "ingest.duplicates": self.duplicates}

    def details(self) -> dict[str, str]:
        return {"ingest.duplicate_examples": "; ".join(self.duplicate_examples)} if self.duplicate_examples else {}

    def describe(self) -> str:
        if not self.new_files:
            return "no new input files: nothing to add"
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.quarantine_reasons.items())
        examples = f" (e.g. {'; '.join(self.duplicate_examples)})" if self.duplicate_examples else ""
        return (f"{self.input:,} input rows = {self.clean:,} clean + {self.quarantined:,} quarantined"
                f" + {self.duplicates:,} duplicates{examples} ({self.mode}, {self.new_files} files)"
                + (f"; quarantine: {reasons}" if reasons else ""))


def _check_timestamp_format(spark: SparkSession, cfg: Config) -> None:
    """A malformed input.timestamp_format fails here, with its key, rather than deep inside a job."""
    from pyspark.errors import PySparkException

    fmt = cfg["input.timestamp_format"]
    if not fmt:
        return
    try:
        spark.range(1).select(F.try_to_timestamp(F.lit("2024-01-01"), F.lit(fmt))).collect()
    except PySparkException as e:
        raise InputError(f"input.timestamp_format: not a valid Spark datetime pattern {fmt!r}: "
                         f"{str(e).splitlines()[0]}") from None


def run(spark: SparkSession, ctx: StageContext) -> IngestResult:
    """Validate the input, write clean rows to transactions and bad ones to quarantine, record the files."""
    try:
        return _run(spark, ctx)
    except Exception as e:  # an input file Spark fails to read inside a job: one line naming it (sources)
        if (err := sources.explain_read_error(e, ctx.cfg)) is not None:
            raise err from None
        raise


def _run(spark: SparkSession, ctx: StageContext) -> IngestResult:
    cfg = ctx.cfg
    # timestamps without an offset are wall-clock times in input.timezone; dates are taken there too
    spark.conf.set("spark.sql.session.timeZone", cfg["input.timezone"])
    _check_timestamp_format(spark, cfg)
    if cfg["ingest.mode"] == "overwrite":
        return _ingest(spark, ctx, None)
    manifest.recover(spark, cfg, ctx.started)
    every = sources.list_input_files(spark, cfg)
    files = manifest.claim(spark, cfg, every, ctx.run_id, ctx.run_id, ctx.started)
    log.info("ingest: %d input files, %d already ingested or claimed, %d new", len(every), len(every) - len(files),
             len(files))
    if not files:
        return IngestResult("append")
    try:
        result = _ingest(spark, ctx, files)
        if not manifest.finish(spark, cfg, ctx.run_id, ctx.started):
            raise StageError(f"ingest: another append took over this run's files (its claims were older than "
                             f"ingest.claim_timeout_minutes={cfg['ingest.claim_timeout_minutes']}); this run's "
                             "rows were removed and nothing was lost: the other run adds those files")
    except BaseException:
        log.info("ingest: removing this batch's rows and claims, so that its files count as new again")
        try:
            manifest.release(spark, cfg, ctx.run_id)
        except Exception:  # the failure matters more; the next append's recovery removes what is left
            log.warning("ingest: could not remove this batch's rows; the next append will", exc_info=True)
        raise
    return result


def _validated(raw: DataFrame, cfg: Config, ctx: StageContext, columns: dict[str, str]) -> DataFrame:
    return raw.transform(
        T.with_canonical_columns(columns, cfg["input.timestamp_format"], cfg["ingest.missing_id_values"],
                                 cfg["ingest.raw_record_exclude"])
    ).transform(T.with_quarantine_reasons(columns, T.Checks.from_config(cfg, ctx.started)))


def _ingest(spark: SparkSession, ctx: StageContext, files: list[str] | None) -> IngestResult:
    """Read `files` (all of input.path when None: an overwrite) and write their rows."""
    cfg = ctx.cfg
    mode, batch = cfg["ingest.mode"], ctx.run_id
    raw = sources.read_raw(spark, cfg, files)
    columns = mapping.resolve([c for c in raw.columns if c != C.SOURCE_FILE], cfg.column_settings,
                              cfg["input.recognise_columns"])
    for note in columns.notes:
        log.info("%s", note)
    if raw.isEmpty():
        raise InputError(f"input.path: no rows in {cfg['input.path']}; nothing was written")
    input_files = files if files is not None else sorted(raw.inputFiles())
    validated = _validated(raw, cfg, ctx, columns.columns)
    if mode == "overwrite" and validated.transform(T.filter_clean).isEmpty():
        _no_clean_rows(validated, cfg)

    checked = Observation("checked")
    validated = validated.observe(checked, *T.reason_counts())
    repeats, kept = Observation("repeats"), Observation("kept")
    clean = (
        validated.transform(T.filter_clean)
        .transform(T.clustered_by_day)
        .transform(T.mark_duplicate_lines(C.ROLE_TRANSACTION_ID in columns.columns))
        .observe(repeats, *T.duplicate_observations())
        .transform(T.drop_marked_duplicates)
        .transform(T.to_transactions(batch))
        .observe(kept, F.count(F.lit(1)).alias("rows"))
    )
    quarantined = validated.transform(T.filter_quarantined).transform(T.to_quarantine(batch, ctx.started))
    write = delta.overwrite if mode == "overwrite" else delta.append
    writes = {C.TABLE_TRANSACTIONS: write(clean, cfg.table_path(C.TABLE_TRANSACTIONS), C.TABLE_TRANSACTIONS,
                                          ctx.run_id)}
    counts = checked.get  # filled by the pass that wrote the clean rows
    n_input, n_valid, n_clean = int(counts["input"]), int(counts["valid"]), int(kept.get["rows"])
    if n_valid == n_input:
        # that pass saw no bad row: the quarantine's write needs no second read of the input
        log.info("ingest: no row failed a check: the quarantine gets no rows, without a second pass")
        quarantined = spark.createDataFrame([], quarantined.schema)
    writes[C.TABLE_QUARANTINE] = write(quarantined, cfg.table_path(C.TABLE_QUARANTINE), C.TABLE_QUARANTINE,
                                       ctx.run_id)
    if mode == "overwrite":
        rows = manifest.overwrite(spark, input_files, batch, ctx.run_id, ctx.started)
        writes[C.TABLE_INGESTED_FILES] = delta.overwrite(rows, cfg.table_path(C.TABLE_INGESTED_FILES),
                                                         C.TABLE_INGESTED_FILES, ctx.run_id)
    by_reason = {code: int(counts[code]) for code in C.REASON_CODES if counts[code]}
    dup = repeats.get
    examples = sorted({f"transaction {r['id']} in {r['file']}" for r in (dup["first"], dup["last"]) if r is not None})
    result = IngestResult(mode, len(input_files), n_input, n_clean, n_input - n_valid, int(dup["duplicates"]),
                          by_reason, examples, writes=writes)
    if result.duplicates != n_valid - n_clean:  # every valid line is kept or a repeat: nothing else is dropped
        raise StageError(f"ingest: {n_valid:,} valid rows but {n_clean:,} kept + {result.duplicates:,} repeats")
    log.info("ingest: %d input rows = %d clean + %d quarantined + %d duplicates dropped", n_input, n_clean,
             result.quarantined, result.duplicates)
    if examples:
        log.info("ingest: duplicates are repeats of a whole source record, e.g. %s", "; ".join(examples))
    for code, n in by_reason.items():
        log.info("ingest: quarantined %d rows: %s", n, code)
    return result


def _no_clean_rows(validated: DataFrame, cfg: Config) -> None:
    """Stop an overwrite in which no row passed validation, before it replaces the tables with nothing."""
    counts = validated.groupBy(C.REASON).count().orderBy(F.desc("count")).collect()  # bounded by reason codes
    total = sum(int(r["count"]) for r in counts)
    reasons = ", ".join(f"{r[C.REASON]} {int(r['count']):,}" for r in counts[:4])
    raise InputError(f"input.path: none of the {total:,} rows in {cfg['input.path']} passed validation ({reasons}); "
                     "the tables were left as they were: check input.columns, input.timestamp_format and the "
                     "ingest.* bounds")
