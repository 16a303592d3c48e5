"""One hierarchy for every failure custseg explains to its user in one line.

The CLI prints a `CustsegError`'s message as it is and exits non-zero; anything else is an unexpected
failure and is shown with its type. This module imports no Spark.
"""

from __future__ import annotations


class CustsegError(Exception):
    """A problem custseg can name: bad configuration, bad input, a missing table, a mismatched model."""


class ConfigError(CustsegError, ValueError):
    """A configuration or command-line problem, found before Spark starts; the message names the key."""


class InputError(CustsegError):
    """The input log cannot be ingested as configured (missing, empty, columns absent, bad pattern)."""


class StageError(CustsegError):
    """A stage cannot run as asked (its input table or partition is missing, nothing as of the date)."""


class SegmentationError(StageError):
    """Segmentation cannot produce a meaningful model (too few customers, nothing varies)."""


class ModelMismatchError(StageError):
    """A saved segmentation model does not fit the features it is asked to score."""
