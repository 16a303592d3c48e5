"""The segmentation model bundle: everything needed to give a customer a segment without refitting.

One bundle per segment run, at `<segment.model_root>/as_of_date=D/run_id=R`:
- `pipeline/`: the MLlib PipelineModel, preprocessing (SQLTransformer -> Imputer -> VectorAssembler ->
  StandardScaler [-> PCA]) and the clusterer, as MLlib saves it;
- `meta/`: one line of JSON: the map from MLlib's cluster index to custseg's segment id, the ordered model
  inputs with their transforms, the share-map keys the model was fitted with, centroids in model space
  and in original units, and the training metadata (as-of date, features version, run id, metrics,
  custseg version).
`load` returns a `SegmentationModel`; profile, scoring and every later stage use it and nothing else of
the model's internals. The forward transform of an input (the SQL the pipeline runs) and its inverse
(back to original units) are defined here, side by side.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from custseg.core import columns as C
from custseg.core.errors import ModelMismatchError, StageError

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import Column, DataFrame, SparkSession

BUNDLE_FORMAT = 2  # 2: segment_ids, training (drift baseline) and settings; format 1 bundles still load
PIPELINE_DIR = "pipeline"
META_DIR = "meta"
PREDICTION = "prediction"
MODEL_INPUT_PREFIX = "in__"
IMPUTED_SUFFIX = "__imp"
# the pipeline's stages up to and including the Imputer give the inputs in model units (transformed, imputed)
MODEL_UNITS_STAGES = 2

# customer attributes used as clustering inputs are joined to the features under this prefix (never clashing with a
# feature column); a categorical attribute enters as one 0/1 indicator per value
ATTRIBUTE_PREFIX = "attr__"

IDENTITY = "identity"
SIGNED_LOG1P = "signed_log1p"
TRANSFORMS = (IDENTITY, SIGNED_LOG1P)


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text.lower())


@dataclass(frozen=True)
class ModelInput:
    """One clustering input: a features-table column, or one key of a share-map column, and its transform."""

    name: str  # `column` or `column.key`
    source: str  # the features-table column
    key: str | None = None  # the map key, for share-map inputs
    transform: str = IDENTITY
    equals: str | None = None  # a categorical attribute's value: the input is 1 when `source` equals it, else 0

    @property
    def model_col(self) -> str:
        """The input's column inside the model (prefixed, so the original column stays available)."""
        return MODEL_INPUT_PREFIX + _safe_name(self.name)

    @property
    def imputed_col(self) -> str:
        """The input in model units after imputation (what is assembled, scaled and clustered)."""
        return self.model_col + IMPUTED_SUFFIX

    @property
    def sql(self) -> str:
        """The raw value as a double, from the features table."""
        if self.equals is not None:
            value = self.equals.replace("\\", "\\\\").replace("'", "\\'")  # a Spark SQL string literal
            return f"CASE WHEN `{self.source}` = '{value}' THEN 1.0D ELSE 0.0D END"
        if self.key is None:
            return f"CAST({self.source} AS DOUBLE)"
        return f"{self.source}['{self.key.replace(chr(39), chr(39) * 2)}']"

    @property
    def model_sql(self) -> str:
        """The forward transform; NaN and infinities become null (then imputed) instead of poisoning the scaler."""
        x = f"SIGN({self.sql}) * LN(1 + ABS({self.sql}))" if self.transform == SIGNED_LOG1P else self.sql
        return f"CASE WHEN isnan({x}) OR ABS({x}) = double('inf') THEN NULL ELSE {x} END"

    def inverse(self, x: Column) -> Column:
        """Model units back to original units (the inverse of `model_sql` for finite values)."""
        from pyspark.sql import functions as F

        return F.signum(x) * F.expm1(F.abs(x)) if self.transform == SIGNED_LOG1P else x

    def inverse_value(self, x: float) -> float:
        """`inverse` for one Python float."""
        return math.copysign(math.expm1(abs(x)), x) if self.transform == SIGNED_LOG1P else x


@dataclass(frozen=True)
class BundleMeta:
    """What a bundle records besides the MLlib pipeline."""

    run_id: str
    as_of_date: str
    features_version: int | None
    algorithm: str
    k: int
    clustering_col: str
    inputs: list[ModelInput]
    cluster_to_segment: list[int]  # segment id of MLlib's cluster i (stable across refits: not always 0..k-1)
    map_keys: dict[str, list[str]] = field(default_factory=dict)  # share-map keys of the map inputs
    centroids_model: list[list[float]] = field(default_factory=list)  # in segment_ids order, clustered space
    centroids_original: list[dict[str, float]] = field(default_factory=list)  # in segment_ids order, original units
    segment_ids: list[int] = field(default_factory=list)  # the model's segment ids, ascending
    # the drift baseline (custseg.stages.segment.drift): input bin edges and shares, segment shares and distances
    training: dict[str, Any] = field(default_factory=dict)
    settings: str = ""  # fingerprint of the segment settings the model was fitted with
    metrics: dict[str, Any] = field(default_factory=dict)
    custseg_version: str = ""
    created_at: str = ""
    format: int = BUNDLE_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> BundleMeta:
        d = json.loads(text)
        if d.get("format") not in (1, BUNDLE_FORMAT):
            raise StageError(f"model bundle format {d.get('format')!r} is not supported (expected {BUNDLE_FORMAT})")
        d["inputs"] = [ModelInput(**i) for i in d["inputs"]]
        if d["format"] == 1:  # ids were 0..k-1, centroids in id order; no drift baseline
            d["segment_ids"], d["format"] = list(range(int(d["k"]))), BUNDLE_FORMAT
        return BundleMeta(**d)


def bundle_path(model_root: str, as_of: dt.date, run_id: str) -> str:
    """Where the bundle of the segment run `run_id` for `as_of` lives."""
    return f"{model_root.rstrip('/')}/as_of_date={as_of}/run_id={run_id}"


def map_keys(df: DataFrame, columns: Sequence[str]) -> dict[str, list[str]]:
    """The keys present in each share-map column (bounded by the configured top N + 'other'), 'other' last."""
    from pyspark.sql import functions as F

    out: dict[str, list[str]] = {}
    for col in columns:
        if col in df.columns:
            keys = [r[0] for r in df.select(F.explode(F.map_keys(col))).distinct().collect()]
            out[col] = sorted(k for k in keys if k != C.OTHER_KEY) + ([C.OTHER_KEY] if C.OTHER_KEY in keys else [])
    return out


def attribute_names(inputs: Sequence[ModelInput]) -> list[str]:
    """The customer_attributes columns the inputs read (none for a model of behavioural features only)."""
    return sorted({i.source[len(ATTRIBUTE_PREFIX):] for i in inputs if i.source.startswith(ATTRIBUTE_PREFIX)})


def with_attributes(spark: SparkSession, attributes_path: str, features_df: DataFrame,
                    names: Sequence[str]) -> DataFrame:
    """`features_df` with the named customer attributes (prefixed `attr__`), null for customers without a row.

    A StageError says when the attributes table or one of the columns is missing."""
    from pyspark.sql import functions as F

    from custseg.io import delta

    if not names:
        return features_df
    if not delta.exists(spark, attributes_path):
        raise StageError(f"the model clusters on customer attributes ({', '.join(names)}) but there is no "
                         f"customer_attributes table at {attributes_path}: set attributes.path and run "
                         "`custseg attributes`")
    attrs = delta.read(spark, attributes_path)
    if missing := [n for n in names if n not in attrs.columns]:
        raise StageError(f"customer_attributes has no column {', '.join(missing)} (columns: "
                         f"{', '.join(c for c in attrs.columns if c != C.CUSTOMER_ID)})")
    picked = attrs.select(C.CUSTOMER_ID, *[F.col(f"`{n}`").alias(ATTRIBUTE_PREFIX + n) for n in names])
    return features_df.join(picked, C.CUSTOMER_ID, "left")


def with_segment_and_distance(
    centers: Sequence[Sequence[float]], cluster_to_segment: Sequence[int], features_col: str, keep: Sequence[str] = ()
) -> Callable[[DataFrame], DataFrame]:
    """Map MLlib's prediction to the segment id and add the Euclidean distance to the cluster's centre.

    Built-in array functions only: the k centres travel as a literal array, not a Python UDF.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    centre_array = F.array(*[F.array(*[F.lit(float(x)) for x in c]) for c in centers])
    relabel_array = F.array(*[F.lit(int(i)) for i in cluster_to_segment])

    def transform(df: DataFrame) -> DataFrame:
        vec = vector_to_array(F.col(features_col))  # a JVM function: no Python worker involved
        cluster = F.col(PREDICTION).cast("int") + 1
        centre = F.element_at(centre_array, cluster)
        sq = F.aggregate(F.zip_with(vec, centre, lambda a, b: (a - b) * (a - b)), F.lit(0.0), lambda acc, x: acc + x)
        return df.select(
            F.col(C.CUSTOMER_ID),
            F.element_at(relabel_array, cluster).alias(C.SEGMENT_ID),
            F.sqrt(sq).alias(C.DISTANCE),
            *keep,
        )

    return transform


class SegmentationModel:
    """A loaded (or just fitted) bundle: the fitted pipeline and its metadata."""

    def __init__(self, pipeline: PipelineModel, meta: BundleMeta, path: str = "") -> None:
        self.pipeline = pipeline
        self.meta = meta
        self.path = path

    @property
    def run_id(self) -> str:
        return self.meta.run_id

    @property
    def clusterer(self) -> Any:
        return self.pipeline.stages[-1]

    def check_features(self, features_df: DataFrame, as_of: dt.date | str) -> None:
        """Raise ModelMismatchError naming the difference when `features_df` cannot be scored by this model."""
        where = f"customer_features as of {as_of} cannot be scored with model {self.run_id}"
        missing = sorted({i.source for i in self.meta.inputs} - set(features_df.columns))
        if missing:
            raise ModelMismatchError(f"{where}: missing column(s) {', '.join(missing)}")
        present = map_keys(features_df, sorted(self.meta.map_keys))
        for col, keys in sorted(self.meta.map_keys.items()):
            have = present.get(col, [])
            if have != keys:
                gone, new = sorted(set(keys) - set(have)), sorted(set(have) - set(keys))
                raise ModelMismatchError(f"{where}: the {col} keys differ from the model's "
                                         f"(missing: {', '.join(gone) or '-'}; new: {', '.join(new) or '-'})")

    def assign(self, features_df: DataFrame) -> DataFrame:
        """customer_id, segment_id and distance to the segment's centre (in the clustered space) for each row."""
        return self.assign_predicted(self.pipeline.transform(features_df))

    def assign_predicted(self, predicted_df: DataFrame, keep: Sequence[str] = ()) -> DataFrame:
        """`assign` for rows that already carry the clusterer's prediction and the clustered vector (and the
        columns `keep`)."""
        centers = [list(map(float, c)) for c in self.clusterer.clusterCenters()]
        return predicted_df.transform(
            with_segment_and_distance(centers, self.meta.cluster_to_segment, self.meta.clustering_col, keep))

    def model_units(self, features_df: DataFrame) -> DataFrame:
        """`features_df` with each input's `imputed_col`: transformed and imputed, before scaling."""
        from pyspark.ml import PipelineModel

        return PipelineModel(stages=self.pipeline.stages[:MODEL_UNITS_STAGES]).transform(features_df)

    def save(self, spark: SparkSession) -> None:
        """Write the bundle to `self.path` (overwriting a bundle of the same run)."""
        self.pipeline.write().overwrite().save(f"{self.path}/{PIPELINE_DIR}")
        spark.createDataFrame([(self.meta.to_json(),)], "value string").coalesce(1) \
            .write.mode("overwrite").text(f"{self.path}/{META_DIR}")


def original_units(pipeline: PipelineModel, inputs: Sequence[ModelInput], centre: Sequence[float]) -> dict[str, float]:
    """A point of the clustered space (scaled, or PCA-projected) in the inputs' original units."""
    import numpy as np
    from pyspark.ml.feature import PCAModel, StandardScalerModel

    stages = pipeline.stages
    point = np.asarray(centre, dtype=float)
    scaler = stages[3]
    assert isinstance(scaler, StandardScalerModel), "the bundle's fourth stage is its StandardScaler"
    if isinstance(stages[4], PCAModel):  # a PCA stage precedes the clusterer: back to the scaled space
        point = stages[4].pc.toArray() @ point
    model_units = point * scaler.std.toArray()
    if scaler.getWithMean():
        model_units = model_units + scaler.mean.toArray()
    return {i.name: i.inverse_value(float(v)) for i, v in zip(inputs, model_units, strict=False)}


def load(spark: SparkSession, path: str) -> SegmentationModel:
    """Read the bundle at `path` (once while it is unchanged: `memo.bundle`); a clear StageError when nothing
    (or something else) is there."""
    from custseg.io import memo

    pipeline, meta = memo.bundle(spark, path, f"{path}/{META_DIR}", lambda: _read(spark, path))
    return SegmentationModel(pipeline, meta, path)


def _read(spark: SparkSession, path: str) -> tuple[PipelineModel, BundleMeta]:
    from pyspark.ml import PipelineModel

    try:
        rows = spark.read.text(f"{path}/{META_DIR}").collect()
    except Exception as e:  # Spark's AnalysisException for a missing path
        raise StageError(f"no segmentation model bundle at {path}: {str(e).splitlines()[0]}") from None
    if len(rows) != 1:
        raise StageError(f"the model bundle at {path} has {len(rows)} metadata lines (expected 1)")
    return PipelineModel.load(f"{path}/{PIPELINE_DIR}"), BundleMeta.from_json(rows[0][0])


def register(spark: SparkSession, models_table: str, model: SegmentationModel, customers: int) -> int:
    """Add a saved bundle to the models table (the index `find` reads); returns the version written."""
    from custseg import __version__
    from custseg.core import catalog
    from custseg.io import delta, memo

    m = model.meta
    row = (m.run_id, dt.date.fromisoformat(m.as_of_date), model.path, m.algorithm, m.k, m.metrics.get("silhouette"),
           m.features_version, customers, dt.datetime.now(dt.UTC), __version__)
    df = spark.createDataFrame([row], catalog.MODELS_SCHEMA)
    version = delta.append(df, models_table, C.TABLE_MODELS, m.run_id)
    memo.appended(models_table, version, df)
    return version


def find(spark: SparkSession, models_table: str, as_of: dt.date, which: str) -> str:
    """The path of a saved bundle: `which` is a segment run id, or `latest` (the newest model fitted on or
    before `as_of`). A StageError says what is missing."""
    from custseg.io import memo

    models = memo.rows(spark, models_table)
    if models is None:
        raise StageError(f"no saved segmentation model (no models table at {models_table}): "
                         "run `custseg segment` with segment.mode=fit first")
    if which == "latest":
        fitted = [r for r in models if r[C.AS_OF_DATE] <= as_of]
        if not fitted:
            raise StageError(f"no segmentation model fitted on or before {as_of}: "
                             "run `custseg segment` with segment.mode=fit first")
        newest = max(fitted, key=lambda r: (r[C.AS_OF_DATE], r["created_at"] is not None,
                                            r["created_at"] or dt.datetime.min))
        return str(newest["path"])
    named = next((r for r in models if r[C.MODEL_RUN_ID] == which), None)
    if named is None:
        raise StageError(f"segment.model: no saved model of run {which!r} in {models_table}")
    return str(named["path"])
