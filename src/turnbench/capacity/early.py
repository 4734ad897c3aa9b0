"""Early stop of a probe that has clearly failed: enough requests already missed an SLO that
its percentile cannot pass whatever the rest of the probe does.

Why it is safe to stop: a percentile objective `pNN <= T` fails once more than (100 - NN) %
of the judged requests are above T (numpy's linear rule: more than (1 - NN/100)(N - 1) + 1
of N). The number N the probe would end with is not known while it runs, so the rule takes
an upper bound: twice the requests judged so far, scaled to the whole measured part of the
probe (the rate so far, doubled). If the misses already pass that bound's share, no way the
rest of the probe goes lowers the percentile back under T; the failed-request limit
(`--max-failures`) is bounded the same way. Judged from events.db alone, twice a second, on
main-stage requests (after the warm-up), as the summary will judge them.

Only percentile criteria stop early (ttft, tpot, e2e, output_tokens_per_s; not itl, whose
percentile pools chunk gaps); a goodput criterion runs its probe to the end. A probe is
never stopped before a fifth of its measured part has run.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from turnbench.capacity.criteria import Criteria
from turnbench.slo import Objective, SloConfig

SAFETY = 2.0
"""The bound on the probe's final request count: this many times the rate so far."""
MIN_PART = 0.2
"""The share of the measured part that must have run before any early stop."""

_VALUE = {
    "ttft": "(t_first_token_ns - t_sent_ns) / 1e6",
    "e2e": "(t_end_ns - t_sent_ns) / 1e6",
    "tpot": "CASE WHEN completion_tokens > 1 THEN (t_end_ns - t_first_token_ns) / 1e6 "
    "/ (completion_tokens - 1) END",
    "output_tokens_per_s": "CASE WHEN completion_tokens > 1 AND t_end_ns > t_first_token_ns "
    "THEN (completion_tokens - 1) / ((t_end_ns - t_first_token_ns) / 1e9) END",
}
_TURNS = {"all": "1", "first": "turn_index = 1", "later": "turn_index > 1"}
_MAIN_OK = "stage != 'warmup' AND status = 'ok'"


def _misses_sql(o: Objective) -> str:
    """Judged requests and misses of one objective, in one query."""
    value = _VALUE[o.metric]
    miss = f"v < {o.threshold!r}" if o.floor else f"v > {o.threshold!r}"
    return (
        f"SELECT count(v), coalesce(sum({miss}), 0) FROM (SELECT {value} AS v FROM requests "
        f"WHERE {_MAIN_OK} AND {_TURNS[o.turns]}) WHERE v IS NOT NULL"
    )


def _allowed(tail: float, bound: float) -> float:
    """The most misses N <= `bound` judged values may hold with the percentile still
    passing, `tail` the share a percentile leaves above (or, for a floor, below) it."""
    return tail * max(bound - 1.0, 0.0) + 1.0


@dataclass(frozen=True)
class ProbeStop:
    """The early-stop rule of one probe (`pacing.ends.EarlyStop`)."""

    objectives: tuple[tuple[str, Objective], ...]
    """(label, objective) of each percentile objective judged."""
    max_failures: float
    warmup_s: float
    duration_s: float

    def verdict(self, db: Path, elapsed_s: float) -> str | None:
        measured = elapsed_s - self.warmup_s
        whole = self.duration_s - self.warmup_s
        if whole <= 0 or measured < MIN_PART * whole:
            return None
        scale = SAFETY * whole / measured
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)
        except sqlite3.Error:
            return None
        try:
            return self._judge(conn, scale)
        except sqlite3.Error:  # the writer holds a lock, or no table yet: ask again later
            return None
        finally:
            conn.close()

    def _judge(self, conn: sqlite3.Connection, scale: float) -> str | None:
        for label, o in self.objectives:
            judged, misses = conn.execute(_misses_sql(o)).fetchone()
            tail = o.percentile / 100 if o.floor else 1 - o.percentile / 100
            if judged and misses > _allowed(tail, judged * scale):
                return (
                    f"{label}: {misses} of {judged} requests missed it, more than the "
                    f"percentile allows of even {judged * scale:.0f} requests"
                )
        ok, failed = conn.execute(
            "SELECT coalesce(sum(status = 'ok'), 0), coalesce(sum(status = 'error'), 0) "
            "FROM requests WHERE stage != 'warmup'"
        ).fetchone()
        bound = (ok + failed) * scale
        if failed and failed > self.max_failures / 100 * bound:
            return (
                f"{failed} of {ok + failed} requests failed, more than {self.max_failures:g} % "
                f"of even {bound:.0f} requests"
            )
        return None


def probe_stop(
    slo: SloConfig | None, criteria: Criteria, *, warmup_s: float, duration_s: float
) -> ProbeStop | None:
    """The early-stop rule for probes judged by `criteria`; None for goodput criteria."""
    if criteria.goodput is not None or slo is None:
        return None
    objectives = tuple((o.label, o) for name in criteria.tiers for o in slo.tiers[name].objectives)
    judged = tuple((label, o) for label, o in objectives if o.metric in _VALUE)
    return ProbeStop(judged, criteria.max_failures, warmup_s, duration_s)
