"""What a stage's step is given (`StageContext`) and what it returns (a `StageResult` subclass).

A step gets everything it needs from its context, decided before it runs (the configuration, the run
id, the as-of date), and returns a typed result: its counts for the runs table, the table versions it
read and wrote for the lineage, and one line for a person. No value travels back up into the context.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from custseg.core.config import Config


@dataclass(frozen=True)
class StageContext:
    """One invocation's settings, as every step of it sees them."""

    cfg: Config
    run_id: str
    started: dt.datetime
    as_of: dt.date | None = None  # None only for undated stages (ingest)

    @property
    def date(self) -> dt.date:
        """The as-of date of a dated stage (the runner resolves it before the first one runs)."""
        if self.as_of is None:
            raise RuntimeError("a dated stage ran without an as-of date")
        return self.as_of


@dataclass
class StageResult:
    """The common part of every stage's result."""

    reads: dict[str, int] = field(default_factory=dict, kw_only=True)  # table -> version read
    writes: dict[str, int] = field(default_factory=dict, kw_only=True)  # table -> version written

    def counts(self) -> dict[str, int]:
        """Row counts worth keeping in the runs table (name -> count)."""
        return {}

    def run_fields(self) -> dict[str, Any]:
        """Columns of the runs table this stage fills (algorithm, k, silhouette, cost, model_path)."""
        return {}

    def details(self) -> dict[str, str]:
        """Facts worth keeping in the runs table's `details` map, as text (name -> text)."""
        return {}

    def describe(self) -> str:
        """One line (or a few) for the run summary."""
        return ""
