"""Every configuration key custseg knows, declared once: its type, default, check and meaning.

`custseg.core.config` validates against `SCHEMA`; README.md's configuration table lists the same keys
(a test keeps them in step). This module imports no Spark.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from custseg.core import columns as C

INPUT_FORMATS = ("csv", "parquet", "json", "delta")
INGEST_MODES = ("overwrite", "append")
GENERATE_FORMATS = ("csv", "parquet")
# the generator's planted groups (custseg.sample.generate.GROUPS; kept here so that keys imports no Spark)
GENERATE_GROUPS = ("champions", "loyal_regulars", "big_ticket_rare", "lapsed", "new_customers", "bargain_returners")
ALGORITHMS = ("kmeans", "bisecting_kmeans")
SEGMENT_MODES = ("auto", "fit", "score")
SELECTION_METRICS = ("silhouette", "davies_bouldin", "calinski_harabasz")
EXPORT_FORMATS = ("csv", "parquet")
SPARK_CONF_PREFIX = "spark.conf."


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


def _at_least_8(v: Any) -> str | None:
    return None if v >= 8 else "must be at least 8 (the generator's base categories)"


def _fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _probability(v: Any) -> str | None:
    return None if 0 <= v <= 1 else "must be in [0, 1]"


def _iso_date_or_blank(v: Any) -> str | None:
    return None if not str(v).strip() else _iso_date(v)


def _at_least_2(v: Any) -> str | None:
    return None if v >= 2 else "must be at least 2"


def _tree_depth(v: Any) -> str | None:
    return None if 1 <= v <= 10 else "must be between 1 and 10 (deeper rules are not readable)"


def _iso_date(v: Any) -> str | None:
    try:
        dt.date.fromisoformat(v)
    except ValueError:
        return "must be a date YYYY-MM-DD"
    return None


def _non_blank(v: Any) -> str | None:
    return None if v.strip() else "must not be empty or blank"


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


def _columns_key(role: str) -> Key:
    return Key(str, None, help=f"source column holding the {role.replace('_', ' ')}; unset: recognised by name; "
               "empty: not used")


def _id_placeholders(v: Any) -> str | None:
    if not all(isinstance(x, str) and x.strip() for x in v):
        return "must be a list of non-blank texts"
    return None


def _names(v: Any) -> str | None:
    return None if all(isinstance(x, str) and x for x in v) else "must be a list of column names"


SCHEMA: dict[str, Key] = {
    # Spark session
    "spark.master": Key(str, None, help="Spark master (local[2], spark://host:7077); unset: spark-submit decides"),
    "spark.app_name": Key(str, "custseg", help="Spark application name"),
    "spark.driver_memory": Key(str, None, help="driver memory when custseg starts the JVM itself (local mode)"),
    "spark.shuffle_partitions": Key(int, None, check=_positive, help="initial shuffle partitions (AQE coalesces them)"),
    "spark.log_level": Key(str, "WARN", choices=("ERROR", "WARN", "INFO", "DEBUG"), help="JVM log level"),
    "spark.quiet_logs": Key(bool, True,
        help="drop the JVM's routine warnings (MLlib's double-caching note, native library fallbacks, the "
        "loopback-address notice, plan truncation) with custseg's log4j2 configuration; -v sets it false"),
    # input
    "input.path": Key(str, None, True, check=_non_blank,
        help="file, folder or glob of the transaction log (or a Delta table path)"),
    "input.format": Key(str, "csv", choices=INPUT_FORMATS, help="format of input.path"),
    "input.timestamp_format": Key(str, "",
        help="Spark datetime pattern of the timestamp column; empty: try common formats"),
    "input.timezone": Key(str, "UTC", check=_timezone,
        help="time zone of timestamps without an offset, and of purchase dates"),
    "input.csv.delimiter": Key(str, ",", help="CSV field delimiter"),
    "input.csv.header": Key(bool, True, help="CSV has a header row"),
    "input.csv.encoding": Key(str, "UTF-8", help="CSV character encoding (e.g. ISO-8859-1)"),
    "input.csv.multiline": Key(bool, True,
        help="a quoted CSV field may hold line breaks; false makes large CSV files splittable across tasks, and "
        "is safe only when no quoted field holds a line break"),
    **{f"input.columns.{r}": _columns_key(r) for r in C.ROLES},
    "input.recognise_columns": Key(bool, True,
        help="a role without input.columns.ROLE takes a column with a common name for it (CustomerID, "
        "customer_id, InvoiceDate, ...); the log says which"),
    # ingest
    "ingest.mode": Key(str, "overwrite", choices=INGEST_MODES,
        help="overwrite: the table becomes this input; append: add files not yet ingested"),
    "ingest.future_tolerance_minutes": Key(int, 0, check=_non_negative,
        help="timestamps later than job start plus this are quarantined"),
    "ingest.earliest_date": Key(str, "1970-01-01", check=_iso_date,
        help="timestamps before this date are quarantined (a mis-read format or a placeholder such as 0001-01-01)"),
    "ingest.max_abs_amount": Key(float, 1e9, check=_positive,
        help="lines whose |amount| (or |quantity x unit price|) exceeds this are quarantined as implausible"),
    "ingest.max_abs_quantity": Key(float, 1e7, check=_positive, help="lines with a larger |quantity| are quarantined"),
    "ingest.max_abs_unit_price": Key(float, 1e9, check=_positive,
        help="lines with a larger |unit price| are quarantined"),
    "ingest.missing_id_values": Key(list, ["null", "none", "nan", "n/a", "na", "#n/a", "-", "--", "?", "(null)",
                                           "undefined", "nil", "unknown"], check=_id_placeholders,
        help="customer and transaction ids equal to one of these (ignoring case and surrounding space) are missing"),
    "ingest.raw_record_exclude": Key(list, [], check=_names,
        help="source columns left out of the quarantine's raw_record (e.g. e-mail or card columns)"),
    "ingest.claim_timeout_minutes": Key(int, 60, check=_non_negative,
        help="append: files claimed by a run that has not finished for this long are taken over (that run died); "
        "keep it above your longest ingest"),
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
    "segment.max_iter": Key(int, 30, check=_positive, help="iterations per fit (at most; KMeans stops when it "
        "converges, BisectingKMeans runs them all at every split)"),
    "segment.bisecting_selection_max_iter": Key(int, 10, check=_positive,
        help="BisectingKMeans' iterations per split while selecting; the chosen model is refitted with "
        "segment.max_iter"),
    "segment.restart_margin": Key(float, 0.05, check=_non_negative,
        help="every candidate gets one start; those whose silhouette is within this of the best candidate's "
        "get the other segment.n_starts - 1 (2: every candidate gets every start)"),
    "segment.parallelism": Key(int, 4, check=_positive,
        help="candidate fits run at once (Spark jobs from several threads); the result does not depend on it"),
    "segment.min_segment_share": Key(float, 0.02, check=_fraction,
        help="smallest acceptable segment, as a share of customers"),
    "segment.selection_sample_rows": Key(int, 100_000, check=_positive,
        help="model selection runs on a seeded sample of this many customers when there are more"),
    "segment.rows_per_partition": Key(int, 250_000, check=_positive,
        help="customers per partition of the clustering input: the split depends on "
        "the data and this key, never on the cluster"),
    "segment.pca_components": Key(int, 0, check=_non_negative,
        help="project onto this many principal components first; 0: no PCA"),
    "segment.k": Key(int, 0, check=_non_negative,
        help="fix k (skips selection when segment.algorithm is set too); 0: select"),
    "segment.algorithm": Key(str, "", choices=("", *ALGORITHMS), help="fix the algorithm; empty: select"),
    "segment.selection_metric": Key(str, "silhouette", choices=SELECTION_METRICS,
        help="the validity measure that picks the model among eligible candidates: silhouette (highest), "
        "davies_bouldin (lowest) or calinski_harabasz (highest); all three are recorded in model_selection"),
    "segment.mode": Key(str, "auto", choices=SEGMENT_MODES,
        help="auto: score with the latest model while its drift stays below the drift.* retrain thresholds and it "
        "is younger than segment.max_model_age_days, else refit; fit: always select and fit; score: always "
        "assign with a saved model (segment.model)"),
    "segment.max_model_age_days": Key(int, 90, check=_positive,
        help="segment.mode=auto refits once the latest model was fitted this many days or more before the "
        "as-of date"),
    "segment.match_max_distance": Key(float, 1.0, check=_positive,
        help="a refit's segment keeps the id of the previous model's segment whose centre it is matched to "
        "(one-to-one, nearest overall) when the centres are at most this far apart in the previous model's "
        "scaled space (standard deviations); farther: a new id"),
    "segment.model": Key(str, "latest",
        help="the saved model scoring uses: a segment run id, or latest (the newest model fitted on or before "
        "the as-of date)"),
    "segment.model_root": Key(str, "", help="where fitted models are saved; empty: <output.root>/models"),
    # drift of a date's customers against the model's training (segment_drift); the status of a measure is
    # retrain at or above its retrain threshold, warn at or above its warn threshold, else ok
    "drift.bins": Key(int, 10, check=_at_least_2, help="quantile bins of each model input for the population "
        "stability index (edges from the training data, saved in the model bundle)"),
    "drift.psi_warn": Key(float, 0.1, check=_positive, help="population stability index of an input that warns"),
    "drift.psi_retrain": Key(float, 0.25, check=_positive, help="population stability index that asks to refit"),
    "drift.share_change_warn": Key(float, 0.05, check=_positive,
        help="change of a segment's customer share (absolute, 0.05 = 5 points) that warns"),
    "drift.share_change_retrain": Key(float, 0.10, check=_positive, help="change of a segment's share that asks to "
        "refit"),
    "drift.far_share_warn": Key(float, 0.10, check=_probability, help="share of a segment's customers farther from "
        "its centre than the training's 95th percentile distance (0.05 at training) that warns"),
    "drift.far_share_retrain": Key(float, 0.20, check=_probability, help="that share asking to refit"),
    "drift.distance_change_warn": Key(float, 0.15, check=_positive,
        help="relative change of a segment's mean distance to its centre that warns"),
    "drift.distance_change_retrain": Key(float, 0.30, check=_positive, help="that change asking to refit"),
    # monitor (migration and KPIs)
    "monitor.windows_days": Key(list, [30, 90], check=_positive_ints,
        help="trailing windows of the KPIs: customers active and revenue in the last N days (each must be one "
        "of features.windows_days)"),
    # report
    "report.map_points": Key(int, 3000, check=_positive,
        help="customers drawn (stratified by segment) for the report's 2-D map"),
    "report.features": Key(list, [], check=_names,
        help="features whose distributions the report shows per segment; empty: the model's inputs"),
    # customer attributes (optional second input; the attributes stage)
    "attributes.path": Key(str, "", help="file, folder or glob of a customer attributes table (one row per "
        "customer: an id plus attribute columns); empty: no attributes"),
    "attributes.format": Key(str, "csv", choices=INPUT_FORMATS, help="format of attributes.path"),
    "attributes.customer_id": Key(str, "customer_id", check=_non_blank,
        help="the attributes table's customer id column"),
    "attributes.categorical": Key(list, [], check=_names,
        help="attribute columns profiled as categories; with attributes.numeric both empty: every text column"),
    "attributes.numeric": Key(list, [], check=_names,
        help="attribute columns profiled as numbers (a value that is not a number is quarantined); with "
        "attributes.categorical both empty: every numeric column"),
    "attributes.cluster_on": Key(list, [], check=_names,
        help="customer attributes the segmentation also clusters on (numeric as they are, categorical as one 0/1 "
        "input per value); empty: behaviour only"),
    "attributes.max_values": Key(int, 20, check=_positive,
        help="values per categorical attribute profiled on their own; the rarer ones count as 'other'"),
    # explain (names, rules, actions)
    "explain.naming_rules": Key(str, "conf/naming.toml", check=_non_blank,
        help="TOML file of the segment naming rules (see the file for the vocabulary)"),
    "explain.playbook": Key(str, "conf/playbook.toml", check=_non_blank,
        help="TOML file mapping segment names or conditions to a recommended action"),
    "explain.tree_depth": Key(int, 4, check=_tree_depth,
        help="depth of the surrogate decision tree whose paths are the segments' rules"),
    "explain.rule_min_precision": Key(float, 0.6, check=_probability,
        help="a segment whose best rules are less precise than this is flagged as hard to describe"),
    "explain.rule_min_coverage": Key(float, 0.5, check=_probability,
        help="a segment whose rules together cover less of it than this is flagged as hard to describe"),
    "explain.top_features": Key(int, 5, check=_positive, help="distinguishing features listed per segment"),
    # export
    "export.max_records_per_file": Key(int, 1_000_000, check=_positive,
        help="customers per exported file at most (files are written in parallel, never through one task)"),
    # output and run
    "output.root": Key(str, None, True, check=_non_blank,
        help="folder or URI under which every table lives as <output.root>/<table>"),
    "run.seed": Key(int, 42, help="seed for sampling and model fitting"),
    # sample data generator
    "generate.path": Key(str, "data/sample/transactions.csv", check=_non_blank,
        help="where `custseg generate` writes the log"),
    "generate.truth_path": Key(str, "data/sample/truth", check=_non_blank,
        help="where it writes each customer's planted group (Parquet)"),
    "generate.format": Key(str, "csv", choices=GENERATE_FORMATS, help="format of the generated log"),
    "generate.customers": Key(int, 5000, check=_positive, help="number of customers (about 54 invoice lines each)"),
    "generate.seed": Key(int, 7, help="generator seed: same seed, same log"),
    "generate.start_date": Key(str, "2022-01-01", check=_iso_date, help="first day of generated history"),
    "generate.end_date": Key(str, "2024-12-31", check=_iso_date, help="last day of generated history"),
    "generate.bad_row_fraction": Key(float, 0.002, check=_fraction,
        help="share of rows deliberately broken to exercise the quarantine"),
    "generate.partitions": Key(int, 0, check=_non_negative, help="output files; 0: sized to the data"),
    "generate.activity": Key(float, 1.0, check=_positive,
        help="scales every group's invoices per year (1: about 54 lines per customer; 0.37: about 20)"),
    "generate.categories": Key(int, 8, check=_at_least_8,
        help="product categories (8 base ones; more split each base category into variants, e.g. home_2)"),
    "generate.change_date": Key(str, "", check=_iso_date_or_blank,
        help="a planted change over time: from this date the generate.change_group stops buying, and "
        "generate.arrivals new customers start; empty: no change"),
    "generate.change_group": Key(str, "loyal_regulars", choices=GENERATE_GROUPS,
        help="the planted group that stops buying at generate.change_date"),
    "generate.arrivals": Key(int, 0, check=_non_negative,
        help="extra customers (planted as new_customers) whose first purchase falls between generate.change_date "
        "and generate.end_date"),
}

REQUIRED_ONE_OF_AMOUNT = "input.columns.amount, or both input.columns.quantity and input.columns.unit_price"
