"""An outage of the summary (`outages`), typed: when the target could not be reached.

Why its own module: `metrics/outages.py` builds these from the `outages` table and the
requests sent in each window, and the report reads them; the keys are those of
docs/metrics.md, so summary.json's `outages` is unchanged.
"""

from __future__ import annotations

from turnbench.metrics.model_base import Model


class Outage(Model):
    """One merged outage window, seconds on the run's clock."""

    start_s: float
    end_s: float | None
    """None when the target was still down at the run's end."""
    duration_s: float
    """Up to the run's last row for a window still down."""
    back: bool
    gave_up: bool
    workers: int
    failed_attempts: int
    failed_by_kind: dict[str, int]
    turns_affected: int
    sessions_affected: int
    sessions_waiting: int
    first_success_s: float | None
    baseline_per_s: float | None
    recovery_s: float | None
