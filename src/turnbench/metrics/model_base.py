"""The base of the summary's typed model: its Struct base and the distribution every section
uses.

Why apart from `model.py`: the sections typed beside their builders (`cache_model`...) and
`stats.describe` build on these, and `model.py` builds on them: one way, no cycle.
"""

from __future__ import annotations

import msgspec


class Model(msgspec.Struct, forbid_unknown_fields=True):
    """The base of every part of the summary: unknown keys are refused when summary.json is
    read (subclasses inherit that; not `kw_only`, which a subclass with a default before a
    required field states itself)."""


class Dist(Model):
    """A distribution (`metrics.stats.describe`): exact percentiles from full data; every
    figure but `count` is None when there are no values."""

    count: int
    mean: float | None
    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None

    def at(self, key: str) -> float | None:
        """The figure named `key` (`p50`, `mean`, `max`...): for readers that choose it."""
        value = getattr(self, key)
        return None if value is None else float(value)
