"""Each stage end to end: read its input tables, call the pure stage, write its output tables, report.

Stages meet only through Delta tables. Each returns a small dict of what it did (row counts, table
versions) for the run summary and the runs table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from custseg import columns as C
from custseg import features, generate, ingest, profile, segment, sources, tables
from custseg.config import Config

log = logging.getLogger(__name__)

STAGES = ("ingest", "features", "segment", "profile")


class StageError(RuntimeError):
    """A stage cannot run as asked (its input table is missing, no customers as of the date, ...)."""


@dataclass
class RunContext:
    """What one invocation shares across its stages."""

    cfg: Config
    run_id: str = field(default_factory=lambda: new_run_id())
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    timings: dict[str, float] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)


def new_run_id() -> str:
    """Sortable, unique: UTC start time plus a random suffix."""
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@contextmanager
def timed(ctx: RunContext, stage: str) -> Iterator[None]:
    """Log a stage's start and end with its wall time, and keep the time for the summary."""
    log.info("%s: started", stage)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        ctx.timings[stage] = round(time.perf_counter() - t0, 2)
        log.info("%s: finished in %.1f s", stage, ctx.timings[stage])


# --- generate -----------------------------------------------------------------------------------

def run_generate(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Write the synthetic log and its truth file (overwriting both)."""
    cfg = ctx.cfg
    with timed(ctx, "generate"):
        log_df, truth_df = generate.generate(
            spark,
            n_customers=cfg["generate.customers"],
            seed=cfg["generate.seed"],
            start_date=dt.date.fromisoformat(cfg["generate.start_date"]),
            end_date=dt.date.fromisoformat(cfg["generate.end_date"]),
            bad_row_fraction=cfg["generate.bad_row_fraction"],
            partitions=cfg["generate.partitions"],
        )
        if cfg["generate.format"] == "parquet":
            log_df = generate.typed_columns(log_df)
        obs = Observation("generated")
        log_df = log_df.observe(obs, F.count(F.lit(1)).alias("rows"))
        writer = log_df.write.mode("overwrite")
        if cfg["generate.format"] == "csv":
            writer.option("header", True).csv(cfg["generate.path"])
        else:
            writer.parquet(cfg["generate.path"])
        truth_df.write.mode("overwrite").parquet(cfg["generate.truth_path"])
        result = {"rows": int(obs.get["rows"]), "customers": cfg["generate.customers"],
                  "path": cfg["generate.path"], "truth_path": cfg["generate.truth_path"]}
    log.info("generate: %d lines for %d customers -> %s", result["rows"], result["customers"], result["path"])
    ctx.results["generate"] = result
    return result


# --- ingest -------------------------------------------------------------------------------------

def _ingested_files(spark: SparkSession, cfg: Config) -> set[str]:
    path = cfg.table_path(C.TABLE_INGESTED_FILES)
    if not tables.exists(spark, path):
        return set()
    # bounded by the number of input files, not rows
    return {r[0] for r in tables.read(spark, path).select(C.FILE_PATH).distinct().collect()}


def recover_unfinished_batches(spark: SparkSession, cfg: Config) -> None:
    """Delete rows of ingest batches that never reached the manifest (a run that died mid-way).

    An append writes transactions, then quarantine, then the `ingested_files` manifest; only the
    manifest's commit makes a batch count. Rows of a batch without it are removed here so that its
    files, still unrecorded, are ingested again once and only once.
    """
    manifest = cfg.table_path(C.TABLE_INGESTED_FILES)
    committed = []
    if tables.exists(spark, manifest):
        committed = [r[0] for r in tables.read(spark, manifest).select(C.INGEST_BATCH).distinct().collect()]
    in_list = ", ".join("'" + b.replace("'", "''") + "'" for b in committed)
    condition = f"{C.INGEST_BATCH} NOT IN ({in_list})" if committed else "true"
    for table in (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE):
        path = cfg.table_path(table)
        if tables.exists(spark, path):
            tables.delete_where(spark, path, condition)


def run_ingest(spark: SparkSession, ctx: RunContext) -> dict[str, Any]:
    """Validate the input, write clean rows to transactions and bad ones to quarantine, record the files."""
    cfg = ctx.cfg
    mode = cfg["ingest.mode"]
    batch = ctx.run_id
    # timestamps without an offset are wall-clock times in input.timezone; dates are taken there too
    spark.conf.set("spark.sql.session.timeZone", cfg["input.timezone"])
    with timed(ctx, "ingest"):
        files: list[str] | None = None
        if mode == "append":
            recover_unfinished_batches(spark, cfg)
            done = _ingested_files(spark, cfg)
            every = sources.list_input_files(spark, cfg)
            files = [f for f in every if f not in done]
            log.info("ingest: %d input files, %d already ingested, %d new", len(every), len(every) - len(files),
                     len(files))
            if not files:
                result = {"mode": mode, "new_files": 0, "input": 0, "clean": 0, "quarantined": 0, "duplicates": 0}
                ctx.results["ingest"] = result
                return result
        raw = sources.read_raw(spark, cfg, files)
        sources.check_mapped_columns(raw, cfg)
        if raw.isEmpty():
            raise sources.InputError(f"input.path: no rows in {cfg['input.path']}; nothing was written")
        input_files = files if files is not None else sorted(raw.inputFiles())
        _check_timestamp_format(spark, cfg)

        cols = cfg.column_map
        validated = raw.transform(ingest.with_canonical_columns(cols, cfg["input.timestamp_format"])).transform(
            ingest.with_quarantine_reasons(cols, ctx.started, dt.timedelta(minutes=cfg["ingest.future_tolerance_minutes"]))
        )
        checked = Observation("checked")
        validated = validated.observe(checked, *ingest.reason_counts())
        kept = Observation("kept")
        clean = (
            validated.transform(ingest.filter_clean)
            .transform(ingest.clustered_by_day)
            .transform(ingest.drop_duplicate_lines(C.ROLE_TRANSACTION_ID in cols))
            .transform(ingest.to_transactions(batch))
            .observe(kept, F.count(F.lit(1)).alias("rows"))
        )
        quarantined = validated.transform(ingest.filter_quarantined).transform(ingest.to_quarantine(batch, ctx.started))
        manifest = spark.createDataFrame(
            [(f, batch, ctx.run_id, ctx.started) for f in input_files],
            f"{C.FILE_PATH} string, {C.INGEST_BATCH} string, {C.RUN_ID} string, {C.INGESTED_AT} timestamp",
        )
        write = tables.overwrite if mode == "overwrite" else tables.append
        write(clean, cfg.table_path(C.TABLE_TRANSACTIONS), [C.TXN_DATE], ctx.run_id)
        counts = checked.get  # filled by the pass that wrote the clean rows
        n_input, n_valid, n_clean = int(counts["input"]), int(counts["valid"]), int(kept.get["rows"])
        if n_valid == n_input:
            # that pass saw no bad row: the quarantine's write needs no second read of the input
            log.info("ingest: no row failed a check: the quarantine gets no rows, without a second pass")
            quarantined = spark.createDataFrame([], quarantined.schema)
        write(quarantined, cfg.table_path(C.TABLE_QUARANTINE), [C.QUARANTINE_DATE], ctx.run_id)
        write(manifest, cfg.table_path(C.TABLE_INGESTED_FILES), [], ctx.run_id)

        by_reason = {code: int(counts[code]) for code in C.REASON_CODES if counts[code]}
        result = {
            "mode": mode,
            "new_files": len(input_files),
            "input": n_input,
            "clean": n_clean,
            "quarantined": n_input - n_valid,
            "duplicates": n_valid - n_clean,
            "quarantine_reasons": by_reason,
            "transactions_version": tables.version(spark, cfg.table_path(C.TABLE_TRANSACTIONS)),
        }
    log.info("ingest: %d input rows = %d clean + %d quarantined + %d duplicates dropped", n_input, n_clean,
             result["quarantined"], result["duplicates"])
    for code, n in by_reason.items():
        log.info("ingest: quarantined %d rows: %s", n, code)
    ctx.results["ingest"] = result
    return result


def _check_timestamp_format(spark: SparkSession, cfg: Config) -> None:
    """A malformed input.timestamp_format fails here, with its key, rather than deep inside a job."""
    from pyspark.errors import PySparkException

    fmt = cfg["input.timestamp_format"]
    if not fmt:
        return
    try:
        spark.range(1).select(F.try_to_timestamp(F.lit("2024-01-01"), F.lit(fmt))).collect()
    except PySparkException as e:
        raise sources.InputError(f"input.timestamp_format: not a valid Spark datetime pattern {fmt!r}: "
                                 f"{str(e).splitlines()[0]}") from None


# --- features -----------------------------------------------------------------------------------

def read_transactions(spark: SparkSession, cfg: Config) -> DataFrame:
    """The transactions table, or a clear error when ingest has not run."""
    path = cfg.table_path(C.TABLE_TRANSACTIONS)
    if not tables.exists(spark, path):
        raise StageError(f"no transactions table at {path}: run `custseg ingest` first")
    return tables.read(spark, path)


def default_as_of(spark: SparkSession, cfg: Config) -> dt.date:
    """The latest transaction date, for runs that do not name one."""
    latest = read_transactions(spark, cfg).agg(F.max(C.TXN_DATE)).first()[0]
    if latest is None:
        raise StageError("the transactions table is empty")
    log.info("as-of date not given: using the latest transaction date, %s", latest)
    return latest


def run_features(spark: SparkSession, ctx: RunContext, as_of: dt.date) -> dict[str, Any]:
    """Compute customer features as of `as_of` and replace that date's partition."""
    cfg = ctx.cfg
    with timed(ctx, "features"):
        tx = read_transactions(spark, cfg).transform(features.filter_as_of(as_of))
        if tx.isEmpty():
            raise StageError(f"no transactions on or before {as_of}: nothing to compute")
        tops = features.top_values(tx, {C.CATEGORY: cfg["features.top_categories"],
                                        C.CHANNEL: cfg["features.top_channels"]})
        top_categories, top_channels = tops[C.CATEGORY], tops[C.CHANNEL]
        log.info("features: as of %s; top categories %s; channels %s", as_of, top_categories or "(none)",
                 top_channels or "(none)")
        obs = Observation("features")
        feats = tx.transform(
            features.customer_features(as_of, top_categories, top_channels, cfg["features.windows_days"])
        ).observe(obs, F.count(F.lit(1)).alias("rows"))
        path = cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
        tables.replace_partition(feats, path, C.AS_OF_DATE, as_of, ctx.run_id)
        result = {"as_of": str(as_of), "customers": int(obs.get["rows"]), "top_categories": top_categories,
                  "top_channels": top_channels, "customer_features_version": tables.version(spark, path)}
    log.info("features: %d customers as of %s", result["customers"], as_of)
    ctx.results["features"] = result
    return result


# --- segment ------------------------------------------------------------------------------------

def read_features(spark: SparkSession, cfg: Config, as_of: dt.date) -> DataFrame:
    """One as-of date's customer features, or a clear error when that partition is missing."""
    path = cfg.table_path(C.TABLE_CUSTOMER_FEATURES)
    if not tables.exists(spark, path):
        raise StageError(f"no customer_features table at {path}: run `custseg features --as-of {as_of}` first")
    df = tables.read(spark, path).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
    if df.isEmpty():
        raise StageError(f"no customer features as of {as_of}: run `custseg features --as-of {as_of}` first")
    return df


def map_keys(df: DataFrame, columns: list[str]) -> dict[str, list[str]]:
    """The keys present in each share-map column (bounded by the configured top N + 'other')."""
    out: dict[str, list[str]] = {}
    for col in columns:
        if col in df.columns:
            keys = [r[0] for r in df.select(F.explode(F.map_keys(col))).distinct().collect()]
            out[col] = sorted(k for k in keys if k != C.OTHER_KEY) + ([C.OTHER_KEY] if C.OTHER_KEY in keys else [])
    return out


def model_path(cfg: Config, as_of: dt.date, run_id: str) -> str:
    """Versioned location of a run's fitted PipelineModel."""
    root = cfg["segment.model_root"] or f"{str(cfg['output.root']).rstrip('/')}/models"
    return f"{root.rstrip('/')}/as_of_date={as_of}/run_id={run_id}"


def _usable_specs(feats: DataFrame, cfg: Config) -> tuple[list[segment.FeatureSpec], dict[str, int]]:
    """Expand the configured features, drop the ones that do not vary, and count non-finite values."""
    requested = list(cfg["segment.features"]) or list(segment.DEFAULT_FEATURES)
    unknown = [r for r in requested if r.partition(".")[0] not in feats.columns]
    if unknown:
        raise StageError(f"segment.features: not a column of customer_features: {', '.join(unknown)}")
    specs = segment.feature_specs(requested, map_keys(feats, [c for c in segment.MAP_FEATURES if c in requested
                                                              or any(r.startswith(c + ".") for r in requested)]))
    stats = feats.agg(*segment.non_finite_counts(feats, specs)).first().asDict()
    non_finite = {s.name: int(stats[f"nonfinite__{s.model_col}"]) for s in specs if stats[f"nonfinite__{s.model_col}"]}
    for name, n in non_finite.items():
        log.warning("segment: %d customers have a NaN or infinite %s: treated as missing and imputed", n, name)
    kept = []
    for s in specs:
        std = stats[f"std__{s.model_col}"]
        if std is None or not std > 1e-12:
            log.warning("segment: feature %s does not vary (std %s): left out of the model", s.name, std)
        else:
            kept.append(s)
    if not kept:
        raise segment.SegmentationError("no feature varies across customers: nothing to cluster on")
    return kept, non_finite


def run_segment(spark: SparkSession, ctx: RunContext, as_of: dt.date) -> dict[str, Any]:
    """Preprocess, select a model, fit it on all customers, and write segments and model_selection."""
    cfg = ctx.cfg
    seed = cfg["run.seed"]
    with timed(ctx, "segment"):
        feats = read_features(spark, cfg, as_of)
        n_customers = feats.count()
        if n_customers < 2:
            raise segment.SegmentationError(f"{n_customers} customer as of {as_of}: at least 2 are needed to segment")
        specs, non_finite = _usable_specs(feats, cfg)
        pca = cfg["segment.pca_components"]
        if pca and pca > len(specs):
            log.warning("segment: segment.pca_components=%d but only %d features: using %d", pca, len(specs),
                        len(specs))
            pca = len(specs)
        log.info("segment: %d customers, %d model inputs: %s", n_customers, len(specs), ", ".join(s.name for s in specs))
        # the model's inputs only, hash-partitioned by customer and sorted: the preprocessing fit (medians,
        # means, deviations) and everything after it see the same partitions wherever the job runs
        n_parts = segment.matrix_partitions(n_customers, cfg["segment.rows_per_partition"])
        inputs = sorted({s.source for s in specs} | {C.CUSTOMER_ID, C.GROSS_SPEND})
        laid_out = feats.select(*inputs).transform(segment.with_canonical_layout(n_parts)).cache()
        fcol = segment.clustering_column(pca)
        try:
            prep = segment.preprocessing_pipeline(specs, pca).fit(laid_out)
            matrix = prep.transform(laid_out).select(C.CUSTOMER_ID, fcol, C.GROSS_SPEND).cache()
            matrix.count()
        finally:
            laid_out.unpersist()
        try:
            result = _select_and_assign(spark, ctx, as_of, matrix, n_customers, fcol, prep, seed)
        finally:
            matrix.unpersist()
        result.update({"model_inputs": [s.name for s in specs], "non_finite_values": non_finite,
                       "features_version": tables.version(spark, cfg.table_path(C.TABLE_CUSTOMER_FEATURES))})
    log.info("segment: %s k=%d, silhouette %.4f, sizes %s", result["algorithm"], result["k"],
             result["silhouette"] if result["silhouette"] is not None else float("nan"), result["segment_sizes"])
    ctx.results["segment"] = result
    return result


def _select_and_assign(spark: SparkSession, ctx: RunContext, as_of: dt.date, matrix: DataFrame, n_customers: int,
                       fcol: str, prep: Any, seed: int) -> dict[str, Any]:
    cfg = ctx.cfg
    n_starts, max_iter, min_share = cfg["segment.n_starts"], cfg["segment.max_iter"], cfg["segment.min_segment_share"]
    seeds = [seed + i for i in range(n_starts)]
    sample_rows = cfg["segment.selection_sample_rows"]
    sampled = n_customers > sample_rows
    # the sample in its own few partitions: at 1.85M customers the matrix has 8, and every MLlib iteration
    # would schedule 8 tasks where 2 do
    train = (segment.selection_sample(matrix, n_customers, sample_rows, seed, cfg["segment.rows_per_partition"])
             .cache() if sampled else matrix)
    n_train = train.count() if sampled else n_customers
    if sampled:
        log.info("segment: model selection on a seeded sample of %d of %d customers", n_train, n_customers)
    if cfg["segment.k"] and cfg["segment.algorithm"]:
        grid = [(cfg["segment.algorithm"], cfg["segment.k"])]
        log.info("segment: algorithm and k fixed by config: %s k=%d", *grid[0])
    else:
        lo, hi = cfg["segment.k_range"]
        ks = [cfg["segment.k"]] if cfg["segment.k"] else list(range(lo, hi + 1))
        algos = [cfg["segment.algorithm"]] if cfg["segment.algorithm"] else list(cfg["segment.algorithms"])
        grid = [(a, k) for a in algos for k in ks]
    candidates: list[segment.Candidate] = []
    models: dict[tuple[str, int], Any] = {}
    try:
        for algo, k in grid:
            if k > n_train:
                c = segment.Candidate(algo, k, outcome=f"skipped: fewer customers ({n_train}) than k")
                log.warning("segment: %s k=%d skipped: only %d customers", algo, k, n_train)
                candidates.append(c)
                continue
            model, c = segment.fit_and_score(algo, k, train, fcol, seeds, max_iter, min_share)
            log.info("segment: %-16s k=%-3d silhouette %s cost %.1f smallest %s (%s) %.1f s", algo, k,
                     f"{c.silhouette:.4f}" if c.silhouette is not None else "-", c.cost or 0.0,
                     f"{c.min_share:.2%}" if c.min_share is not None else "-", c.outcome, c.fit_seconds)
            candidates.append(c)
            models[(algo, k)] = model
    finally:
        if sampled:
            train.unpersist()
    chosen, why = segment.choose(candidates)
    _write_model_selection(spark, ctx, as_of, candidates, chosen, n_train)
    if chosen is None:
        raise segment.SegmentationError(f"{why}: no segmentation as of {as_of}")
    chosen.chosen = True
    log.info("segment: chose %s k=%d (%s)", chosen.algorithm, chosen.k, why)
    if why.startswith("no candidate met"):
        log.warning("segment: %s", why)
    model = models[(chosen.algorithm, chosen.k)]
    final_sil = chosen.silhouette
    if sampled:
        model, final = segment.fit_and_score(chosen.algorithm, chosen.k, matrix, fcol, seeds, max_iter, min_share)
        final_sil = final.silhouette
    centers = [list(map(float, c)) for c in model.clusterCenters()]
    predicted = model.transform(matrix)
    # order ids by mean gross spend per cluster (k rows)
    means = {r[0]: r[1] for r in predicted.groupBy(segment.PREDICTION).agg(F.avg(C.GROSS_SPEND)).collect()}
    ranked = sorted(range(len(centers)), key=lambda i: (-(means.get(i) or 0.0), i))
    relabel = [0] * len(centers)
    for rank, idx in enumerate(ranked):
        relabel[idx] = rank
    obs = Observation("segments")
    segments_df = predicted.transform(segment.with_segment_and_distance(centers, relabel, fcol)).select(
        F.lit(as_of).alias(C.AS_OF_DATE), C.CUSTOMER_ID, C.SEGMENT_ID, C.DISTANCE, F.lit(ctx.run_id).alias(C.RUN_ID)
    ).observe(obs, F.count(F.lit(1)).alias("rows"))
    from pyspark.ml import PipelineModel

    path = model_path(cfg, as_of, ctx.run_id)
    PipelineModel(stages=[*prep.stages, model]).write().overwrite().save(path)
    tables.replace_partition(segments_df, cfg.table_path(C.TABLE_SEGMENTS), C.AS_OF_DATE, as_of, ctx.run_id)
    sizes_by_cluster = [int(s) for s in model.summary.clusterSizes]
    sizes = [0] * len(centers)
    for idx, size in enumerate(sizes_by_cluster):
        sizes[relabel[idx]] = size
    return {
        "algorithm": chosen.algorithm, "k": chosen.k, "silhouette": final_sil, "cost": chosen.cost,
        "selection_rule": why, "segment_sizes": sizes, "customers": int(obs.get["rows"]),
        "selection_sample_rows": n_train, "model_path": path, "candidates": len(candidates),
    }


MODEL_SELECTION_SCHEMA = (
    f"{C.AS_OF_DATE} date, {C.RUN_ID} string, algorithm string, k int, seed long, cost double, silhouette double, "
    "cluster_sizes array<long>, n_clusters int, min_share double, fit_seconds double, starts int, "
    "eligible boolean, chosen boolean, outcome string, sample_rows long"
)


def _write_model_selection(spark: SparkSession, ctx: RunContext, as_of: dt.date,
                           candidates: list[segment.Candidate], chosen: segment.Candidate | None, n_train: int) -> None:
    rows = [(as_of, ctx.run_id, c.algorithm, c.k, c.seed, c.cost, c.silhouette, c.cluster_sizes, c.n_clusters,
             c.min_share, c.fit_seconds, c.starts, c.eligible, c is chosen, c.outcome, n_train) for c in candidates]
    df = spark.createDataFrame(rows, MODEL_SELECTION_SCHEMA)
    tables.replace_partition(df, ctx.cfg.table_path(C.TABLE_MODEL_SELECTION), C.AS_OF_DATE, as_of, ctx.run_id)


# --- profile ------------------------------------------------------------------------------------

def run_profile(spark: SparkSession, ctx: RunContext, as_of: dt.date) -> dict[str, Any]:
    """Profile the segments of `as_of` (from the run that wrote them) into segment_profiles."""
    from pyspark.ml import PipelineModel

    cfg = ctx.cfg
    with timed(ctx, "profile"):
        seg_path = cfg.table_path(C.TABLE_SEGMENTS)
        if not tables.exists(spark, seg_path):
            raise StageError(f"no segments table at {seg_path}: run `custseg segment --as-of {as_of}` first")
        segs = tables.read(spark, seg_path).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
        first = segs.select(C.RUN_ID).first()
        if first is None:
            raise StageError(f"no segments as of {as_of}: run `custseg segment --as-of {as_of}` first")
        seg_run = first[0]
        feats = read_features(spark, cfg, as_of)
        keys = map_keys(feats, sorted(segment.MAP_FEATURES))
        model = PipelineModel.load(model_path(cfg, as_of, seg_run))
        imputer = next(s for s in model.stages if type(s).__name__ == "ImputerModel")
        in_model = list(zip(imputer.getInputCols(), imputer.getOutputCols()))
        model_space = PipelineModel(stages=model.stages[: model.stages.index(imputer) + 1]).transform(feats)
        profile_cols = profile.profile_columns(feats, keys)
        by_model_col = {segment.FeatureSpec(n, "", "", False).model_col: n for n, _ in profile_cols}
        centre_cols = [(by_model_col.get(m, segment.feature_name(m)), out, segment.feature_name(m) in segment.LOG_FEATURES)
                       for m, out in in_model]
        joined = model_space.select(*feats.columns, *[o for _, o in in_model]) \
            .join(segs.select(C.CUSTOMER_ID, C.SEGMENT_ID), C.CUSTOMER_ID)
        profiles = joined.transform(
            profile.segment_profiles(profile_cols, centre_cols, seg_run)
        ).select(F.lit(as_of).alias(C.AS_OF_DATE), "*")
        path = cfg.table_path(C.TABLE_SEGMENT_PROFILES)
        tables.replace_partition(profiles, path, C.AS_OF_DATE, as_of, ctx.run_id)
        summary = (tables.read(spark, path).filter(F.col(C.AS_OF_DATE) == F.lit(as_of))
                   .select(C.SEGMENT_ID, "customers", "customer_share", "revenue_share").orderBy(C.SEGMENT_ID)
                   .collect())  # k + 1 rows
        result = {"segments": [r.asDict() for r in summary], "segments_run_id": seg_run}
    ctx.results["profile"] = result
    return result


# --- runs table -----------------------------------------------------------------------------------

RUNS_SCHEMA = (
    f"{C.RUN_ID} string, {C.AS_OF_DATE} date, started_at timestamp, finished_at timestamp, outcome string, "
    "error string, stages array<string>, config_json string, config_hash string, seed long, "
    "table_versions map<string,long>, counts map<string,long>, algorithm string, k int, silhouette double, "
    "cost double, stage_seconds map<string,double>, model_path string, custseg_version string"
)


def record_run(spark: SparkSession, ctx: RunContext, as_of: dt.date | None, stages: list[str],
               error: BaseException | None) -> None:
    """Append one row describing this run (also for failed runs) to the runs table."""
    import json

    from custseg import __version__

    cfg = ctx.cfg
    versions = {name: v for name in (C.TABLE_TRANSACTIONS, C.TABLE_CUSTOMER_FEATURES, C.TABLE_SEGMENTS,
                                     C.TABLE_SEGMENT_PROFILES)
                if (v := tables.version(spark, cfg.table_path(name))) is not None}
    counts: dict[str, int] = {}
    for stage, r in ctx.results.items():
        for key in ("input", "clean", "quarantined", "duplicates", "customers"):
            if isinstance(r.get(key), int):
                counts[f"{stage}.{key}"] = r[key]
    seg = ctx.results.get("segment", {})
    row = (ctx.run_id, as_of, ctx.started, dt.datetime.now(dt.timezone.utc),
           "failed" if error else "succeeded", (str(error).splitlines() or [""])[0][:1000] if error else None,
           stages, json.dumps(cfg.masked(), default=str), cfg.digest(), cfg["run.seed"], versions, counts,
           seg.get("algorithm"), seg.get("k"), seg.get("silhouette"), seg.get("cost"),
           {k: float(v) for k, v in ctx.timings.items()}, seg.get("model_path"), __version__)
    df = spark.createDataFrame([row], RUNS_SCHEMA)
    tables.append(df, cfg.table_path(C.TABLE_RUNS), [], ctx.run_id)


# --- the run ------------------------------------------------------------------------------------

STAGE_TABLES = {
    "ingest": (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE, C.TABLE_INGESTED_FILES),
    "features": (C.TABLE_CUSTOMER_FEATURES,),
    "segment": (C.TABLE_SEGMENTS, C.TABLE_MODEL_SELECTION),
    "profile": (C.TABLE_SEGMENT_PROFILES,),
}


def table_rows(spark: SparkSession, cfg: Config, stages: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Row count and version of each table `stages` write (all stages by default) and of runs.

    Delta answers the counts from its statistics; each table still costs a log read, so a one-stage run
    reports only its own tables.
    """
    names = [t for st in (stages or list(STAGE_TABLES)) for t in STAGE_TABLES.get(st, ())] + [C.TABLE_RUNS]
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        path = cfg.table_path(name)
        if tables.exists(spark, path):
            out[name] = {"rows": tables.read(spark, path).count(), "version": tables.version(spark, path)}
    return out


def run_stages(spark: SparkSession, ctx: RunContext, stages: list[str], as_of: dt.date | None) -> dict[str, Any]:
    """Run the named stages in pipeline order, record the run (succeeded or failed), return its summary."""
    state: dict[str, dt.date | None] = {"as_of": as_of}
    try:
        summary = _run_stages(spark, ctx, stages, state)
    except Exception as e:
        try:
            record_run(spark, ctx, state["as_of"], stages, e)
        except Exception:  # the original failure matters more than its record
            log.warning("could not record the failed run", exc_info=True)
        raise
    record_run(spark, ctx, state["as_of"], stages, None)
    summary["tables"] = table_rows(spark, ctx.cfg, stages)
    return summary


def _run_stages(spark: SparkSession, ctx: RunContext, stages: list[str],
                state: dict[str, dt.date | None]) -> dict[str, Any]:
    as_of = state["as_of"]
    if "ingest" in stages:
        run_ingest(spark, ctx)
    if as_of is None and any(s != "ingest" for s in stages):
        as_of = state["as_of"] = default_as_of(spark, ctx.cfg)
    if "features" in stages:
        assert as_of is not None
        run_features(spark, ctx, as_of)
    if "segment" in stages:
        assert as_of is not None
        run_segment(spark, ctx, as_of)
    if "profile" in stages:
        assert as_of is not None
        run_profile(spark, ctx, as_of)
    return {
        "run_id": ctx.run_id,
        "as_of": str(as_of) if as_of else None,
        "stages": stages,
        "timings": ctx.timings,
        "results": ctx.results,
        "output_root": ctx.cfg["output.root"],
    }
