"""The stage registry: the one place the pipeline's order lives.

Each stage is a folder under `custseg/stages/` with pure transforms and a `step` that reads its input
tables, calls them and writes its outputs. The CLI's subcommands, `custseg run`, the runs table and the
run summary all read this registry; a new stage is one folder and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from custseg.core import columns as C
from custseg.core.config import Config
from custseg.core.stage import StageContext, StageResult
from custseg.stages.attributes import step as attributes
from custseg.stages.explain import step as explain
from custseg.stages.features import step as features
from custseg.stages.ingest import step as ingest
from custseg.stages.monitor import step as monitor
from custseg.stages.profile import step as profile
from custseg.stages.report import step as report
from custseg.stages.segment import step as segment


@dataclass(frozen=True)
class Stage:
    """One stage: what it reads and writes, and the step that does it."""

    name: str
    help: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    step: Callable[[SparkSession, StageContext], StageResult]
    dated: bool = True  # runs for one as-of date (ingest does not)
    # checks the stage's own settings (files it reads besides tables) before Spark starts; raises ConfigError
    check: Callable[[Config], None] | None = None


ORDER: tuple[Stage, ...] = (
    Stage("ingest", "validate the input log; clean rows -> transactions, bad rows -> quarantine (with a reason)",
          (), (C.TABLE_TRANSACTIONS, C.TABLE_QUARANTINE, C.TABLE_INGESTED_FILES), ingest.run, dated=False),
    Stage("attributes", "validate the optional customer attributes (attributes.path) -> customer_attributes, "
                        "attributes_quarantine",
          (), (C.TABLE_CUSTOMER_ATTRIBUTES, C.TABLE_ATTRIBUTES_QUARANTINE), attributes.run, dated=False,
          check=attributes.check),
    Stage("features", "per-customer behavioural features as of a date -> customer_features",
          (C.TABLE_TRANSACTIONS,), (C.TABLE_CUSTOMER_FEATURES,), features.run),
    Stage("segment", "score with the latest model or refit, as segment.mode and drift decide; refits keep "
                     "segment ids -> segments, model_selection, segment_drift, segment_registry, segment_models",
          (C.TABLE_CUSTOMER_FEATURES,), (C.TABLE_SEGMENTS, C.TABLE_MODEL_SELECTION, C.TABLE_SEGMENT_DRIFT,
                                         C.TABLE_SEGMENT_REGISTRY, C.TABLE_MODELS), segment.run),
    Stage("profile", "describe each segment against the whole population -> segment_profiles",
          (C.TABLE_CUSTOMER_FEATURES, C.TABLE_SEGMENTS), (C.TABLE_SEGMENT_PROFILES,), profile.run),
    Stage("explain", "name each segment, give rules that recognise its members and a recommended action "
                     "-> segment_descriptions, segment_attribute_profiles",
          (C.TABLE_SEGMENT_PROFILES, C.TABLE_SEGMENTS, C.TABLE_CUSTOMER_FEATURES, C.TABLE_CUSTOMER_ATTRIBUTES),
          (C.TABLE_SEGMENT_DESCRIPTIONS, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, C.TABLE_SEGMENT_REGISTRY), explain.run,
          check=explain.check),
    Stage("monitor", "customers' movements between segments since the previous date and each segment's KPIs "
                     "-> segment_migration, segment_kpis",
          (C.TABLE_SEGMENTS, C.TABLE_CUSTOMER_FEATURES), (C.TABLE_SEGMENT_MIGRATION, C.TABLE_SEGMENT_KPIS), monitor.run,
          check=monitor.check),
    Stage("report", "one self-contained HTML page of the date's segments, profiles, model and run "
                    "-> <output.root>/reports/as_of_date=D/index.html, summary.json",
          (C.TABLE_SEGMENT_PROFILES, C.TABLE_SEGMENTS, C.TABLE_CUSTOMER_FEATURES, C.TABLE_SEGMENT_DESCRIPTIONS,
           C.TABLE_MODEL_SELECTION, C.TABLE_MODELS, C.TABLE_RUNS, C.TABLE_LINEAGE, C.TABLE_QUARANTINE,
           C.TABLE_CUSTOMER_ATTRIBUTES, C.TABLE_SEGMENT_ATTRIBUTE_PROFILES, C.TABLE_SEGMENT_DRIFT,
           C.TABLE_SEGMENT_MIGRATION, C.TABLE_SEGMENT_KPIS), (), report.run),
)

STAGES: tuple[str, ...] = tuple(s.name for s in ORDER)
BY_NAME: dict[str, Stage] = {s.name: s for s in ORDER}


def check(cfg: Config, names: list[str] | tuple[str, ...]) -> None:
    """Every named stage's own check of the configuration, before Spark starts (a ConfigError names the problem)."""
    for stage in in_order(names):
        if stage.check is not None:
            stage.check(cfg)


def in_order(names: list[str] | tuple[str, ...]) -> list[Stage]:
    """The named stages, in pipeline order."""
    return [s for s in ORDER if s.name in names]
