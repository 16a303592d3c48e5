"""Every column, table and role name custseg uses, defined once.

Stages meet only through Delta tables; these constants are the contract between them.
"""

from __future__ import annotations

# --- input roles: what `input.columns.<role>` in config may map -------------------------------
ROLE_CUSTOMER_ID = "customer_id"
ROLE_TIMESTAMP = "timestamp"
ROLE_AMOUNT = "amount"
ROLE_QUANTITY = "quantity"
ROLE_UNIT_PRICE = "unit_price"
ROLE_TRANSACTION_ID = "transaction_id"
ROLE_CATEGORY = "category"
ROLE_CHANNEL = "channel"
ROLE_COUNTRY = "country"

ROLES: tuple[str, ...] = (
    ROLE_CUSTOMER_ID,
    ROLE_TIMESTAMP,
    ROLE_AMOUNT,
    ROLE_QUANTITY,
    ROLE_UNIT_PRICE,
    ROLE_TRANSACTION_ID,
    ROLE_CATEGORY,
    ROLE_CHANNEL,
    ROLE_COUNTRY,
)

# --- tables, each at <output.root>/<name> ------------------------------------------------------
TABLE_TRANSACTIONS = "transactions"
TABLE_QUARANTINE = "quarantine"
TABLE_INGESTED_FILES = "ingested_files"
TABLE_CUSTOMER_FEATURES = "customer_features"
TABLE_SEGMENTS = "segments"
TABLE_SEGMENT_PROFILES = "segment_profiles"
TABLE_MODEL_SELECTION = "model_selection"
TABLE_RUNS = "runs"
TABLE_LINEAGE = "lineage"
TABLE_MODELS = "segment_models"
TABLE_SEGMENT_DESCRIPTIONS = "segment_descriptions"
TABLE_SEGMENT_ATTRIBUTE_PROFILES = "segment_attribute_profiles"
TABLE_CUSTOMER_ATTRIBUTES = "customer_attributes"
TABLE_ATTRIBUTES_QUARANTINE = "attributes_quarantine"
TABLE_SEGMENT_REGISTRY = "segment_registry"
TABLE_SEGMENT_DRIFT = "segment_drift"
TABLE_SEGMENT_MIGRATION = "segment_migration"
TABLE_SEGMENT_KPIS = "segment_kpis"

# --- transactions table ------------------------------------------------------------------------
CUSTOMER_ID = "customer_id"
TRANSACTION_ID = "transaction_id"
TXN_TS = "txn_ts"
TXN_DATE = "txn_date"
TXN_MONTH = "txn_month"  # the first day of txn_date's month: the transactions table's partition column
AMOUNT = "amount"
QUANTITY = "quantity"
UNIT_PRICE = "unit_price"
IS_RETURN = "is_return"
CATEGORY = "category"
CHANNEL = "channel"
COUNTRY = "country"
SOURCE_FILE = "source_file"
INGEST_BATCH = "ingest_batch"

# --- quarantine table --------------------------------------------------------------------------
REASON = "reason"
REASONS = "reasons"
RAW_RECORD = "raw_record"
QUARANTINED_AT = "quarantined_at"
QUARANTINE_DATE = "quarantine_date"

# quarantine reason codes, in the order they are checked (the first that applies is `reason`)
REASON_MISSING_CUSTOMER_ID = "missing_customer_id"
REASON_MISSING_TIMESTAMP = "missing_timestamp"
REASON_UNPARSABLE_TIMESTAMP = "unparsable_timestamp"
REASON_FUTURE_TIMESTAMP = "future_timestamp"
REASON_EARLY_TIMESTAMP = "timestamp_before_earliest_date"
REASON_MISSING_AMOUNT = "missing_amount"
REASON_UNPARSABLE_AMOUNT = "unparsable_amount"
REASON_UNPARSABLE_QUANTITY = "unparsable_quantity"
REASON_UNPARSABLE_UNIT_PRICE = "unparsable_unit_price"
REASON_IMPLAUSIBLE_AMOUNT = "implausible_amount"
REASON_IMPLAUSIBLE_QUANTITY = "implausible_quantity"
REASON_IMPLAUSIBLE_UNIT_PRICE = "implausible_unit_price"

REASON_CODES: tuple[str, ...] = (
    REASON_MISSING_CUSTOMER_ID,
    REASON_MISSING_TIMESTAMP,
    REASON_UNPARSABLE_TIMESTAMP,
    REASON_FUTURE_TIMESTAMP,
    REASON_EARLY_TIMESTAMP,
    REASON_MISSING_AMOUNT,
    REASON_UNPARSABLE_AMOUNT,
    REASON_UNPARSABLE_QUANTITY,
    REASON_UNPARSABLE_UNIT_PRICE,
    REASON_IMPLAUSIBLE_AMOUNT,
    REASON_IMPLAUSIBLE_QUANTITY,
    REASON_IMPLAUSIBLE_UNIT_PRICE,
)

# --- ingested_files table (the manifest that makes append idempotent) ---------------------------
FILE_PATH = "file_path"
INGESTED_AT = "ingested_at"
FILE_STATE = "state"  # claimed (a batch is adding the file) or done
RUN_ID = "run_id"

# --- customer_features table -------------------------------------------------------------------
AS_OF_DATE = "as_of_date"
FIRST_PURCHASE_DATE = "first_purchase_date"
LAST_PURCHASE_DATE = "last_purchase_date"
RECENCY_DAYS = "recency_days"
N_TRANSACTIONS = "n_transactions"
N_PURCHASE_TRANSACTIONS = "n_purchase_transactions"
N_RETURN_TRANSACTIONS = "n_return_transactions"
N_LINES = "n_lines"
N_PURCHASE_DAYS = "n_purchase_days"
REPEAT_FREQUENCY = "repeat_frequency"
TENURE_DAYS = "tenure_days"
AGE_AT_LAST_PURCHASE_DAYS = "age_at_last_purchase_days"
TOTAL_SPEND = "total_spend"
GROSS_SPEND = "gross_spend"
RETURNED_VALUE = "returned_value"
AVG_SPEND_PER_TRANSACTION = "avg_spend_per_transaction"
AVG_GROSS_PER_TRANSACTION = "avg_gross_per_transaction"
AVG_SPEND_PER_DAY = "avg_spend_per_purchase_day"
AVG_GROSS_PER_DAY = "avg_gross_per_purchase_day"
RETURN_RATE = "return_rate"
RETURNED_SHARE = "returned_share"
GAP_MEAN_DAYS = "gap_mean_days"
GAP_STD_DAYS = "gap_std_days"
SPEND_PREV_90D = "spend_prev_90d"
TREND_RATIO_90D = "trend_ratio_90d"
CATEGORY_SPEND_SHARE = "category_spend_share"
CHANNEL_SPEND_SHARE = "channel_spend_share"
OTHER_KEY = "other"


def spend_last(days: int) -> str:
    """Net spend in the `days` days up to and including the as-of date."""
    return f"spend_{days}d"


def transactions_last(days: int) -> str:
    """Transactions in the `days` days up to and including the as-of date."""
    return f"n_transactions_{days}d"


# --- lineage: which table versions each stage read and wrote, per as-of date --------------------
STAGE = "stage"
READS = "reads"
WRITES = "writes"
RECORDED_AT = "recorded_at"

# --- segments and later stages -----------------------------------------------------------------
SEGMENT_ID = "segment_id"
MODEL_RUN_ID = "model_run_id"
ASSIGNMENT = "assignment"
ASSIGNMENT_FITTED = "fitted"  # the rows the model was fitted on
ASSIGNMENT_SCORED = "scored"  # assigned by a saved model, without refitting
DISTANCE = "distance_to_centre"
FEATURES_VECTOR = "features"
SCALED_VECTOR = "scaled_features"

# --- customer attributes (optional second input) and their profiles ----------------------------
ATTRIBUTE = "attribute"
ATTRIBUTE_KIND = "kind"  # categorical or numeric
ATTRIBUTE_VALUE = "value"
KIND_CATEGORICAL = "categorical"
KIND_NUMERIC = "numeric"
UNKNOWN_VALUE = "unknown"  # a customer without the attribute (or without attributes at all)
REASON_CONFLICTING_ATTRIBUTES = "conflicting_customer_attributes"
REASON_UNPARSABLE_ATTRIBUTE = "unparsable_numeric_attribute"

# --- segment descriptions (explain) --------------------------------------------------------------
SEGMENT_NAME = "segment_name"

# --- segments over time (segment: registry, drift; monitor: migration, KPIs) ----------------------
PREVIOUS_AS_OF_DATE = "previous_as_of_date"
FROM_SEGMENT_ID = "from_segment_id"  # null: the customer entered (not in the previous date's segments)
TO_SEGMENT_ID = "to_segment_id"  # null: the customer left (not in this date's segments)
MOVEMENT = "movement"
MOVEMENT_STAYED = "stayed"
MOVEMENT_MOVED = "moved"
MOVEMENT_ENTERED = "entered"
MOVEMENT_LEFT = "left"
KPI = "kpi"
POPULATION_SEGMENT_ID = -1  # the whole population's row in segment_profiles and segment_kpis
DRIFT_SCOPE_INPUT = "input"  # one model input's population stability index
DRIFT_SCOPE_SEGMENT = "segment"  # one segment's share and distance changes
DRIFT_SCOPE_OVERALL = "overall"  # the worst status, its reasons and the policy's decision
STATUS_OK = "ok"
STATUS_WARN = "warn"
STATUS_RETRAIN = "retrain"
DECISION_SCORE = "score"
DECISION_RETRAIN = "retrain"
REGISTRY_ACTIVE = "active"
REGISTRY_RETIRED = "retired"
