"""Session affinity's section of the summary (`affinity`), typed: did sessions stick?

Why its own module: `metrics/affinity.py` builds these from the `replica` column and the
report reads them; the keys are those of docs/metrics.md, so summary.json's `affinity` is
unchanged.
"""

from __future__ import annotations

from turnbench.metrics.model_base import Dist, Model


class AffinityTurns(Model):
    """The main-stage turns that stayed on their session's replica, or those that moved."""

    turns: int
    cached_ratio: float | None
    """Σ cached / Σ prompt tokens; None when none reported cached tokens or no prompt."""
    ttft_ms: Dist


class Affinity(Model):
    """Which replica served each turn of a session, and what moving cost."""

    replicas: int
    requests_by_replica: dict[str, int]
    sessions: int
    """Sessions with a main-stage turn that stayed or moved."""
    sessions_never_moved: int
    replica_changes: Dist
    """Over those sessions: their turns that moved."""
    changes_per_session: dict[str, int]
    """{"k": sessions with k changes}."""
    migration_rate: float | None
    stayed: AffinityTurns
    moved: AffinityTurns
