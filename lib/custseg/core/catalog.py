"""Every table custseg writes: its schema, partitioning and the stage that produces it, declared once.

Tables are created from these declarations before their first write (`custseg.io.delta`), and every
write is conformed to them: a column missing, extra or of the wrong type is an error, never a silent
change of the table. `customer_features` is the one table whose columns follow the configuration
(`features.windows_days`, the share maps), so its schema is the features stage's output.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import types as T

from custseg.core import columns as C

_S, _D, _L, _I, _B = T.StringType(), T.DoubleType(), T.LongType(), T.IntegerType(), T.BooleanType()
_TS, _DATE = T.TimestampType(), T.DateType()


def _fields(*spec: tuple[str, T.DataType] | tuple[str, T.DataType, bool]) -> T.StructType:
    return T.StructType([T.StructField(s[0], s[1], s[2] if len(s) > 2 else True) for s in spec])


@dataclass(frozen=True)
class Table:
    """One Delta table at <output.root>/<name>."""

    name: str
    producer: str  # the stage (or the runner) that writes it
    schema: T.StructType | None  # None: defined by the producing stage's output
    partition_by: tuple[str, ...] = ()
    description: str = ""


TRANSACTIONS_SCHEMA = _fields(
    (C.CUSTOMER_ID, _S, False), (C.TRANSACTION_ID, _S), (C.TXN_TS, _TS, False), (C.AMOUNT, _D, False),
    (C.QUANTITY, _D), (C.UNIT_PRICE, _D), (C.IS_RETURN, _B, False), (C.CATEGORY, _S), (C.CHANNEL, _S),
    (C.COUNTRY, _S), (C.SOURCE_FILE, _S), (C.INGEST_BATCH, _S, False), (C.TXN_DATE, _DATE, False),
    (C.TXN_MONTH, _DATE, False),
)

QUARANTINE_SCHEMA = _fields(
    (C.REASON, _S), (C.REASONS, T.ArrayType(_S)), (C.RAW_RECORD, T.MapType(_S, _S)), (C.SOURCE_FILE, _S),
    (C.INGEST_BATCH, _S), (C.QUARANTINED_AT, _TS), (C.QUARANTINE_DATE, _DATE),
)

INGESTED_FILES_SCHEMA = _fields((C.FILE_PATH, _S), (C.INGEST_BATCH, _S), (C.RUN_ID, _S), (C.INGESTED_AT, _TS),
                                (C.FILE_STATE, _S))

SEGMENTS_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.CUSTOMER_ID, _S), (C.SEGMENT_ID, _I), (C.DISTANCE, _D), (C.RUN_ID, _S),
    (C.MODEL_RUN_ID, _S), (C.ASSIGNMENT, _S),
)

MODEL_SELECTION_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.RUN_ID, _S), ("algorithm", _S), ("k", _I), ("seed", _L), ("cost", _D),
    ("silhouette", _D), ("cluster_sizes", T.ArrayType(_L)), ("n_clusters", _I), ("min_share", _D),
    ("fit_seconds", _D), ("starts", _I), ("eligible", _B), ("chosen", _B), ("outcome", _S), ("sample_rows", _L),
    ("max_iter", _I), ("davies_bouldin", _D), ("calinski_harabasz", _D),
)

MODELS_SCHEMA = _fields(
    (C.MODEL_RUN_ID, _S), (C.AS_OF_DATE, _DATE), ("path", _S), ("algorithm", _S), ("k", _I), ("silhouette", _D),
    ("features_version", _L), ("customers", _L), ("created_at", _TS), ("custseg_version", _S),
)

_DOUBLE_MAP = T.MapType(_S, _D)
SEGMENT_PROFILES_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.SEGMENT_ID, _I), ("is_population", _B), ("customers", _L), ("customer_share", _D),
    ("revenue", _D), ("revenue_share", _D), ("feature_mean", _DOUBLE_MAP), ("feature_median", _DOUBLE_MAP),
    ("feature_lift", _DOUBLE_MAP), ("centroid", _DOUBLE_MAP), (C.RUN_ID, _S), (C.MODEL_RUN_ID, _S),
)

# a readable rule that recognises members: a path of the surrogate decision tree, with how much of the segment it
# captures (coverage) and how many of the customers it matches are in the segment (precision)
RULE_TYPE = T.StructType([T.StructField("condition", _S), T.StructField("customers", _L),
                          T.StructField("coverage", _D), T.StructField("precision", _D)])
# a feature that sets the segment apart: direction (higher / lower), standardised mean difference, lift
TOP_FEATURE_TYPE = T.StructType([T.StructField("feature", _S), T.StructField("direction", _S),
                                 T.StructField("smd", _D), T.StructField("lift", _D),
                                 T.StructField("segment_mean", _D), T.StructField("population_mean", _D)])
SEGMENT_DESCRIPTIONS_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.SEGMENT_ID, _I), (C.SEGMENT_NAME, _S), ("name_rule", _S), ("reasons", _S),
    ("customers", _L), ("customer_share", _D), ("revenue_share", _D), ("rules", T.ArrayType(RULE_TYPE)),
    ("rule_quality", _S), ("rule_note", _S), ("tree_fidelity", _D), ("tree_depth", _I),
    ("top_features", T.ArrayType(TOP_FEATURE_TYPE)), ("action", _S), ("action_goal", _S), ("action_channel", _S),
    ("action_offer", _S), ("action_message", _S), ("action_priority", _I), ("action_reason", _S),
    ("action_is_fallback", _B), (C.RUN_ID, _S), (C.MODEL_RUN_ID, _S),
)

SEGMENT_ATTRIBUTE_PROFILES_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.SEGMENT_ID, _I), (C.ATTRIBUTE, _S), (C.ATTRIBUTE_KIND, _S), (C.ATTRIBUTE_VALUE, _S),
    ("customers", _L), ("share", _D), ("population_share", _D), ("lift", _D), ("p_value", _D), ("mean", _D),
    ("median", _D), ("population_mean", _D), (C.RUN_ID, _S), (C.MODEL_RUN_ID, _S),
)

# every segment id ever issued, one row each (never reused once retired): the segment stage adds ids and centres,
# the explain stage the date's name
CENTRE_TYPE = T.StructType([T.StructField(C.AS_OF_DATE, _DATE), T.StructField(C.RUN_ID, _S),
                            T.StructField(C.MODEL_RUN_ID, _S), T.StructField("centre", _DOUBLE_MAP),
                            T.StructField("match_distance", _D)])
NAME_TYPE = T.StructType([T.StructField(C.AS_OF_DATE, _DATE), T.StructField(C.RUN_ID, _S),
                          T.StructField(C.SEGMENT_NAME, _S)])
SEGMENT_REGISTRY_SCHEMA = _fields(
    (C.SEGMENT_ID, _I, False), ("status", _S), ("created_as_of", _DATE), ("created_run_id", _S),
    ("first_as_of", _DATE), ("last_as_of", _DATE), ("retired_as_of", _DATE), (C.MODEL_RUN_ID, _S),
    ("centre_history", T.ArrayType(CENTRE_TYPE)), ("name_history", T.ArrayType(NAME_TYPE)), ("updated_at", _TS),
)

# drift of the date's customers against a model's training: one row per model input (scope input: psi), per segment
# (scope segment: share, distance changes) and one overall row (worst status, reasons, the refresh policy's decision)
SEGMENT_DRIFT_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), ("scope", _S), ("item", _S), (C.SEGMENT_ID, _I), ("psi", _D), ("training_share", _D),
    ("share", _D), ("share_change", _D), ("training_mean_distance", _D), ("mean_distance", _D),
    ("mean_distance_change", _D), ("far_share", _D), ("status", _S), ("reasons", _S), ("decision", _S),
    ("model_age_days", _I), ("model_as_of_date", _DATE), (C.RUN_ID, _S), (C.MODEL_RUN_ID, _S),
)

# customers present at the previous and/or this date, from each segment to each segment (null: entered / left)
SEGMENT_MIGRATION_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.PREVIOUS_AS_OF_DATE, _DATE), (C.FROM_SEGMENT_ID, _I), (C.TO_SEGMENT_ID, _I),
    (C.MOVEMENT, _S), ("customers", _L), ("share_of_from", _D), ("share_of_to", _D), (C.RUN_ID, _S),
)

# per segment (and the population, segment_id -1) and KPI: the value, the previous date's value and the change
SEGMENT_KPIS_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.SEGMENT_ID, _I), (C.KPI, _S), ("value", _D), (C.PREVIOUS_AS_OF_DATE, _DATE),
    ("previous_value", _D), ("change", _D), ("relative_change", _D), (C.RUN_ID, _S), (C.MODEL_RUN_ID, _S),
)

RUNS_SCHEMA = _fields(
    (C.RUN_ID, _S), (C.AS_OF_DATE, _DATE), ("started_at", _TS), ("finished_at", _TS), ("outcome", _S), ("error", _S),
    ("stages", T.ArrayType(_S)), ("config_json", _S), ("config_hash", _S), ("seed", _L),
    ("table_versions", T.MapType(_S, _L)), ("counts", T.MapType(_S, _L)), ("algorithm", _S), ("k", _I),
    ("silhouette", _D), ("cost", _D), ("stage_seconds", _DOUBLE_MAP), ("model_path", _S), ("custseg_version", _S),
    ("details", T.MapType(_S, _S)),
)

LINEAGE_SCHEMA = _fields(
    (C.AS_OF_DATE, _DATE), (C.STAGE, _S), (C.RUN_ID, _S), (C.READS, T.MapType(_S, _L)), (C.WRITES, T.MapType(_S, _L)),
    (C.RECORDED_AT, _TS),
)

TABLES: dict[str, Table] = {t.name: t for t in (
    Table(C.TABLE_TRANSACTIONS, "ingest", TRANSACTIONS_SCHEMA, (C.TXN_MONTH,), "clean, deduplicated lines"),
    Table(C.TABLE_QUARANTINE, "ingest", QUARANTINE_SCHEMA, (C.QUARANTINE_DATE,), "rejected lines with their reasons"),
    Table(C.TABLE_INGESTED_FILES, "ingest", INGESTED_FILES_SCHEMA, (), "the files each ingest batch added"),
    Table(C.TABLE_CUSTOMER_FEATURES, "features", None, (C.AS_OF_DATE,), "one row per customer and as-of date"),
    Table(C.TABLE_SEGMENTS, "segment", SEGMENTS_SCHEMA, (C.AS_OF_DATE,), "each customer's segment"),
    Table(C.TABLE_MODEL_SELECTION, "segment", MODEL_SELECTION_SCHEMA, (C.AS_OF_DATE,), "every candidate model"),
    Table(C.TABLE_MODELS, "segment", MODELS_SCHEMA, (), "every saved segmentation model bundle"),
    Table(C.TABLE_SEGMENT_PROFILES, "profile", SEGMENT_PROFILES_SCHEMA, (C.AS_OF_DATE,), "segments described"),
    Table(C.TABLE_CUSTOMER_ATTRIBUTES, "attributes", None, (), "one row per customer: the attributes input, clean"),
    Table(C.TABLE_ATTRIBUTES_QUARANTINE, "attributes", QUARANTINE_SCHEMA, (C.QUARANTINE_DATE,),
          "rejected attribute rows with their reasons"),
    Table(C.TABLE_SEGMENT_DESCRIPTIONS, "explain", SEGMENT_DESCRIPTIONS_SCHEMA, (C.AS_OF_DATE,),
          "each segment's name, rules, top features and recommended action"),
    Table(C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, "explain", SEGMENT_ATTRIBUTE_PROFILES_SCHEMA, (C.AS_OF_DATE,),
          "customer attributes by segment"),
    Table(C.TABLE_SEGMENT_REGISTRY, "segment", SEGMENT_REGISTRY_SCHEMA, (),
          "every segment id ever issued: dates, centres and names over time"),
    Table(C.TABLE_SEGMENT_DRIFT, "segment", SEGMENT_DRIFT_SCHEMA, (C.AS_OF_DATE,),
          "drift against the model's training, and the refresh policy's decision"),
    Table(C.TABLE_SEGMENT_MIGRATION, "monitor", SEGMENT_MIGRATION_SCHEMA, (C.AS_OF_DATE,),
          "customers moving between segments since the previous date"),
    Table(C.TABLE_SEGMENT_KPIS, "monitor", SEGMENT_KPIS_SCHEMA, (C.AS_OF_DATE,),
          "per-segment KPIs and their change since the previous date"),
    Table(C.TABLE_LINEAGE, "runner", LINEAGE_SCHEMA, (), "table versions each stage read and wrote"),
    Table(C.TABLE_RUNS, "runner", RUNS_SCHEMA, (), "one row per invocation, failed ones too"),
)}


def table(name: str) -> Table:
    """The declaration of table `name` (a KeyError names an undeclared table: a programming error)."""
    return TABLES[name]
