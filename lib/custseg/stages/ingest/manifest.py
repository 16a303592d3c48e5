"""The `ingested_files` manifest: which input files each ingest batch added, and how appends take turns.

An append first *claims* the files it will add: one MERGE into the manifest inserts a `claimed` row per
file not yet listed. MERGE reads the manifest, so Delta's optimistic concurrency makes two runs claiming
at the same time conflict: one commits, the other retries and finds those files taken. The batch then
writes its transactions and quarantine rows, and finally marks its claims `done`. A file is therefore
ingested by one batch only, even when two appends start together.

A run that fails releases its claims (and deletes its rows), so its files are new again. A run that was
killed cannot: its claims stay until they are older than `ingest.claim_timeout_minutes`, when the next
append takes them over (deletes that batch's rows and claims) and ingests the files itself. If the owner
was in fact still running, it finds its claims gone when it tries to mark them done, removes its rows and
fails with a message saying so. Rows of a batch with no manifest row at all (a run killed between the
take-over and its clean-up) are deleted by the next append.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from custseg.core import catalog
from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.errors import StageError
from custseg.io import delta

log = logging.getLogger(__name__)

CLAIMED, DONE = "claimed", "done"
_ATTEMPTS = 5


def _sql_text(values: list[str]) -> str:
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def entries(spark: SparkSession, cfg: Config) -> list[Row]:
    """Every manifest row (bounded by the input files, not rows); a manifest from before claims has no
    state: its rows are done."""
    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    if not delta.exists(spark, path):
        return []
    df = delta.read(spark, path)
    state = F.col(C.FILE_STATE) if C.FILE_STATE in df.columns else F.lit(None).cast("string")
    return df.select(C.FILE_PATH, C.INGEST_BATCH, F.coalesce(state, F.lit(DONE)).alias(C.FILE_STATE),
                     C.INGESTED_AT).collect()


def recover(spark: SparkSession, cfg: Config, now: dt.datetime) -> None:
    """Take over the claims of batches older than the timeout, and delete rows of batches the manifest
    does not know."""
    rows = entries(spark, cfg)
    cutoff = now - dt.timedelta(minutes=cfg["ingest.claim_timeout_minutes"])
    stale = sorted({r[C.INGEST_BATCH] for r in rows if r[C.FILE_STATE] == CLAIMED
                    and r[C.INGESTED_AT] is not None and _aware(r[C.INGESTED_AT]) <= cutoff})
    fresh = sorted({r[C.INGEST_BATCH] for r in rows if r[C.FILE_STATE] == CLAIMED} - set(stale))
    for b in fresh:
        log.warning("ingest: batch %s has claimed files and not finished (another append still running?); "
                    "its files are skipped. If that run died, they are taken over after "
                    "ingest.claim_timeout_minutes=%d", b, cfg["ingest.claim_timeout_minutes"])
    if stale:
        log.warning("ingest: taking over the unfinished claims of batch(es) %s (older than %d minutes)",
                    ", ".join(stale), cfg["ingest.claim_timeout_minutes"])
        delta.delete_where(spark, cfg.table_path(C.TABLE_INGESTED_FILES),
                           f"{C.INGEST_BATCH} IN ({_sql_text(stale)}) AND {C.FILE_STATE} = '{CLAIMED}'")
    known = sorted({r[C.INGEST_BATCH] for r in rows} - set(stale))
    condition = f"{C.INGEST_BATCH} NOT IN ({_sql_text(known)})" if known else "true"
    for table in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE):
        path = cfg.table_path(table)
        if delta.exists(spark, path):
            delta.delete_where(spark, path, condition)


def _aware(ts: dt.datetime) -> dt.datetime:
    # collected timestamps are naive, in the Python process's local zone
    return ts.astimezone(dt.UTC) if ts.tzinfo is None else ts


def claim(spark: SparkSession, cfg: Config, files: list[str], batch: str, run_id: str,
          now: dt.datetime) -> list[str]:
    """Claim those of `files` no batch has listed; return the files this batch now owns (maybe none)."""
    from delta.tables import DeltaTable

    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    delta.ensure(spark, path, C.TABLE_INGESTED_FILES)
    for attempt in range(1, _ATTEMPTS + 1):
        listed = {r[C.FILE_PATH] for r in entries(spark, cfg)}
        todo = [f for f in files if f not in listed]
        if not todo:
            return []
        rows = spark.createDataFrame([(f, batch, run_id, now, CLAIMED) for f in todo],
                                     catalog.INGESTED_FILES_SCHEMA)
        try:
            (DeltaTable.forPath(spark, path).alias("m")
             .merge(rows.alias("n"), f"m.{C.FILE_PATH} = n.{C.FILE_PATH}")
             .whenNotMatchedInsertAll().execute())
            break
        except Exception as e:
            if not delta.is_concurrent_change(e) or attempt == _ATTEMPTS:
                if delta.is_concurrent_change(e):
                    raise StageError("ingest: another ingest run kept changing the manifest "
                                     f"({C.TABLE_INGESTED_FILES}); nothing was written: run again") from None
                raise
            log.info("ingest: another run claimed files at the same time; looking again (%d)", attempt)
            time.sleep(0.2 * attempt)  # back off a little: the other run is committing the same table
    owned = [r[C.FILE_PATH] for r in entries(spark, cfg) if r[C.INGEST_BATCH] == batch]
    if len(owned) < len(todo):
        log.warning("ingest: %d of the new files were claimed by another run meanwhile; this run adds the "
                    "other %d", len(todo) - len(owned), len(owned))
    return sorted(owned)


def finish(spark: SparkSession, cfg: Config, batch: str, now: dt.datetime) -> bool:
    """Mark the batch's claims done; False when they are gone (another run took them over)."""
    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    out = spark.sql(f"UPDATE delta.`{path}` SET {C.FILE_STATE} = '{DONE}', {C.INGESTED_AT} = "
                    f"timestamp'{now.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S.%f}+00:00' "
                    f"WHERE {C.INGEST_BATCH} = {_sql_text([batch])} AND {C.FILE_STATE} = '{CLAIMED}'").first()
    return bool(out is not None and out[0] > 0)


def release(spark: SparkSession, cfg: Config, batch: str) -> None:
    """Undo a batch: delete its rows, then its claims (its files are new again)."""
    condition = f"{C.INGEST_BATCH} = {_sql_text([batch])}"
    for table in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE):
        path = cfg.table_path(table)
        if delta.exists(spark, path):
            delta.delete_where(spark, path, condition)
    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    if delta.exists(spark, path):
        delta.delete_where(spark, path, f"{condition} AND {C.FILE_STATE} = '{CLAIMED}'")


def overwrite(spark: SparkSession, files: list[str], batch: str, run_id: str, now: dt.datetime) -> DataFrame:
    """The manifest rows of an overwrite: every input file, done."""
    return spark.createDataFrame([(f, batch, run_id, now, DONE) for f in files], catalog.INGESTED_FILES_SCHEMA)
