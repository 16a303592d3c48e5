"""Ingest step: read the input log, validate every row, write clean rows, the quarantine and the manifest.

An append writes transactions, then quarantine, then the `ingested_files` manifest; only the manifest's
commit makes a batch count (see `recover_unfinished_batches`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import InputError
from custseg.core.stage import StageContext, StageResult
from custseg.io import delta, sources
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

    def counts(self) -> dict[str, int]:
        return {"ingest.input": self.input, "ingest.clean": self.clean, "ingest.quarantined": self.quarantined,
                "ingest.duplicates": self.duplicates}

    def describe(self) -> str:
        if not self.new_files:
            return "no new input files: nothing to add"
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.quarantine_reasons.items())
        return (f"{self.input:,} input rows = {self.clean:,} clean + {self.quarantined:,} quarantined"
                f" + {self.duplicates:,} duplicates ({self.mode}, {self.new_files} files)"
                + (f"; quarantine: {reasons}" if reasons else ""))


def _ingested_files(spark: SparkSession, cfg: Config) -> set[str]:
    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    if not delta.exists(spark, path):
        return set()
    # bounded by the number of input files, not rows
    return {r[0] for r in delta.read(spark, path).select(C.FILE_PATH).distinct().collect()}


def recover_unfinished_batches(spark: SparkSession, cfg: Config) -> None:
    """Delete rows of ingest batches that never reached the manifest (a run that died mid-way).

    Rows of a batch without a manifest commit are removed here so that its files, still unrecorded, are
    ingested again once and only once.
    """
    manifest = cfg.table_path(C.TABLE_INGESTED_FILES)
    committed = []
    if delta.exists(spark, manifest):
        committed = [r[0] for r in delta.read(spark, manifest).select(C.INGEST_BATCH).distinct().collect()]
    in_list = ", ".join("'" + b.replace("'", "''") + "'" for b in committed)
    condition = f"{C.INGEST_BATCH} NOT IN ({in_list})" if committed else "true"
    for table in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE):
        path = cfg.table_path(table)
        if delta.exists(spark, path):
            delta.delete_where(spark, path, condition)


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
    cfg = ctx.cfg
    mode = cfg["ingest.mode"]
    batch = ctx.run_id
    # timestamps without an offset are wall-clock times in input.timezone; dates are taken there too
    spark.conf.set("spark.sql.session.timeZone", cfg["input.timezone"])
    files: list[str] | None = None
    if mode == "append":
        recover_unfinished_batches(spark, cfg)
        done = _ingested_files(spark, cfg)
        every = sources.list_input_files(spark, cfg)
        files = [f for f in every if f not in done]
        log.info("ingest: %d input files, %d already ingested, %d new", len(every), len(every) - len(files),
                 len(files))
        if not files:
            return IngestResult(mode)
    raw = sources.read_raw(spark, cfg, files)
    sources.check_mapped_columns(raw, cfg)
    if raw.isEmpty():
        raise InputError(f"input.path: no rows in {cfg['input.path']}; nothing was written")
    input_files = files if files is not None else sorted(raw.inputFiles())
    _check_timestamp_format(spark, cfg)

    cols = cfg.column_map
    validated = raw.transform(T.with_canonical_columns(cols, cfg["input.timestamp_format"])).transform(
        T.with_quarantine_reasons(cols, ctx.started, dt.timedelta(minutes=cfg["ingest.future_tolerance_minutes"]))
    )
    checked = Observation("checked")
    validated = validated.observe(checked, *T.reason_counts())
    kept = Observation("kept")
    clean = (
        validated.transform(T.filter_clean)
        .transform(T.clustered_by_day)
        .transform(T.drop_duplicate_lines(C.ROLE_TRANSACTION_ID in cols))
        .transform(T.to_transactions(batch))
        .observe(kept, F.count(F.lit(1)).alias("rows"))
    )
    quarantined = validated.transform(T.filter_quarantined).transform(T.to_quarantine(batch, ctx.started))
    manifest = spark.createDataFrame(
        [(f, batch, ctx.run_id, ctx.started) for f in input_files],
        catalog.INGESTED_FILES_SCHEMA,
    )
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
    writes[C.TABLE_INGESTED_FILES] = write(manifest, cfg.table_path(C.TABLE_INGESTED_FILES), C.TABLE_INGESTED_FILES,
                                           ctx.run_id)
    by_reason = {code: int(counts[code]) for code in C.REASON_CODES if counts[code]}
    result = IngestResult(mode, len(input_files), n_input, n_clean, n_input - n_valid, n_valid - n_clean, by_reason,
                          writes=writes)
    log.info("ingest: %d input rows = %d clean + %d quarantined + %d duplicates dropped", n_input, n_clean,
             result.quarantined, result.duplicates)
    for code, n in by_reason.items():
        log.info("ingest: quarantined %d rows: %s", n, code)
    return result
