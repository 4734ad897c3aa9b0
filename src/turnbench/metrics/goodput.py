"""SLOs and goodput: did the run meet its service-level objectives, and how much of its work
did (formulas in docs/metrics.md, section "SLOs and goodput").

Why two judgements: a percentile SLO (`ttft p90 <= 500 ms`) is a statement about the run,
judged once over its successful requests; goodput (as DistServe and GuideLLM define it) counts
the requests that *each* met every threshold of a tier, failed ones never, so a run whose
failures or slow tail a percentile hides still shows what it delivered within the targets.
Conversations are judged on top: a conversation is good when every one of its requests was.

Why from events.db alone, like `summary.py`: the objectives are in the resolved config the run
wrote (`runs.config_json`), so `turnbench report RUN_DIR` re-judges any run.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import ValidationError

from turnbench.errors import InputError
from turnbench.metrics.slo_model import (
    ByTurns,
    ConversationShare,
    ObjectiveResult,
    Share,
    Slo,
    TierResult,
    Unit,
)
from turnbench.record.journal import open_readonly
from turnbench.slo import METRICS, Objective, SloConfig, Tier

MS = 1e6  # nanoseconds per millisecond
S = 1e9  # nanoseconds per second
JUDGED = "stage != 'warmup' AND status IN ('ok', 'error')"
"""Main-stage attempts that ended on their own: cancelled ones (cut by the run's end) are not
judged, as they are not counted as failures elsewhere either."""
_COLUMNS = "turn_index, status = 'ok', t_sent_ns, t_first_token_ns, t_end_ns, completion_tokens"
_BATCH = 50_000


@dataclass(frozen=True)
class Requests:
    """The judged attempts as columns: one entry per attempt, one per chunk gap in `gaps`."""

    ok: np.ndarray
    turn: np.ndarray
    session: np.ndarray
    """Index into the sessions list, -1 for an attempt of a session not judged (warm-up)."""
    tokens: np.ndarray
    values: dict[str, np.ndarray]
    """Per-attempt ttft, e2e, tpot (ms) and output_tokens_per_s; NaN where not defined."""
    gaps: np.ndarray
    """Chunk gaps of successful attempts, ms (read only when an objective bounds itl)."""
    gap_owner: np.ndarray


@dataclass(frozen=True)
class Sessions:
    """The main-stage conversations: outcome and duration (seconds), in one order."""

    ids: list[str]
    outcome: np.ndarray
    duration_s: np.ndarray


def _metric_values(cols: np.ndarray) -> dict[str, np.ndarray]:
    _turn, _ok, sent, first, end, out = cols.T
    ttft = (first - sent) / MS
    e2e = (end - sent) / MS
    decode_ms = e2e - ttft
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, decode_ms / (out - 1), np.nan)
        speed = np.where((out > 1) & (decode_ms > 0), (out - 1) / (decode_ms / 1000), np.nan)
    return {"ttft": ttft, "e2e": e2e, "tpot": tpot, "output_tokens_per_s": speed}


def _of_stage(stage: str | None) -> tuple[str, tuple[str, ...]]:
    """The extra condition (and its parameter) that keeps one stage's rows; none for the run."""
    return ("", ()) if stage is None else (" AND stage = ?", (stage,))


def read_sessions(conn: sqlite3.Connection, stage: str | None = None) -> Sessions:
    """Every main-stage session of the run, or those that started in `stage`."""
    cond, params = _of_stage(stage)
    rows = conn.execute(
        "SELECT session_id, outcome, t_end_ns - t_start_ns FROM sessions "
        f"WHERE stage != 'warmup'{cond}",
        params,
    ).fetchall()
    return Sessions(
        ids=[r[0] for r in rows],
        outcome=np.array([r[1] for r in rows], dtype=object),
        duration_s=np.array([r[2] for r in rows], dtype=np.float64) / S,
    )


def read_requests(
    conn: sqlite3.Connection, sessions: Sessions, with_gaps: bool, stage: str | None = None
) -> Requests:
    """The judged attempts, read in batches; chunk gaps only when `with_gaps`; only those
    intended in `stage` when given (an attempt of a session of another stage is judged as a
    request but left out of the conversations, which are `sessions`')."""
    index = {sid: i for i, sid in enumerate(sessions.ids)}
    gaps_col = ", chunk_gaps" if with_gaps else ""
    cond, params = _of_stage(stage)
    cursor = conn.execute(
        f"SELECT session_id, {_COLUMNS}{gaps_col} FROM requests WHERE {JUDGED}{cond}", params
    )
    cols: list[np.ndarray] = []
    codes: list[int] = []
    gaps: list[np.ndarray] = []
    owners: list[int] = []  # the attempt each array of `gaps` belongs to
    seen = 0
    while rows := cursor.fetchmany(_BATCH):
        codes.extend(index.get(r[0], -1) for r in rows)
        cols.append(np.array([r[1:7] for r in rows], dtype=np.float64).reshape(len(rows), 6))
        if with_gaps:
            for i, r in enumerate(rows):
                if r[2] and r[7]:
                    gaps.append(np.frombuffer(r[7], dtype="<i8"))
                    owners.append(seen + i)
        seen += len(rows)
    matrix = np.concatenate(cols) if cols else np.empty((0, 6))
    return Requests(
        ok=matrix[:, 1] == 1,
        turn=matrix[:, 0],
        session=np.array(codes, dtype=np.int64),
        tokens=np.nan_to_num(matrix[:, 5]),
        values=_metric_values(matrix),
        gaps=np.concatenate(gaps).astype(np.float64) / MS if gaps else np.empty(0),
        gap_owner=np.repeat(np.array(owners, dtype=np.int64), [len(g) for g in gaps]),
    )


def grouped_percentile(values: np.ndarray, owner: np.ndarray, n: int, p: float) -> np.ndarray:
    """Each owner's own percentile `p` of its values (numpy's linear rule, as `describe`);
    NaN for an owner with none. Vectorised: a long run has millions of chunk gaps."""
    order = np.lexsort((values, owner))
    ordered = values[order]
    counts = np.bincount(owner, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.full(n, np.nan)
    has = counts > 0
    rank = (counts[has] - 1) * p / 100
    lo = np.floor(rank).astype(np.int64)
    hi = np.minimum(lo + 1, counts[has] - 1)
    low, high = ordered[starts[has] + lo], ordered[starts[has] + hi]
    out[has] = low + (high - low) * (rank - lo)
    return out


def _applies(objective: Objective, turn: np.ndarray) -> np.ndarray:
    if objective.turns == "first":
        return turn == 1
    if objective.turns == "later":
        return turn > 1
    return np.ones(turn.shape, dtype=bool)


def _request_value(objective: Objective, req: Requests) -> np.ndarray:
    """Each attempt's value of the objective's metric; itl: the attempt's own percentile of
    its chunk gaps, at the objective's percentile."""
    if objective.metric == "itl":
        return grouped_percentile(req.gaps, req.gap_owner, len(req.ok), objective.percentile)
    return req.values[objective.metric]


def _meets(objective: Objective, values: np.ndarray) -> np.ndarray:
    """Whether each value meets the threshold; a value that is not defined (NaN) meets it: a
    one-token reply has no tpot, a reply in one chunk no itl, and neither is a miss."""
    with np.errstate(invalid="ignore"):
        within = values >= objective.threshold if objective.floor else values <= objective.threshold
    return within | np.isnan(values)


def _judge(objective: Objective, req: Requests, per_request: np.ndarray) -> ObjectiveResult:
    """The run's percentile of the metric over the successful attempts it applies to, against
    the threshold; itl pools every chunk gap of those attempts (as `itl_ms` does)."""
    applies = req.ok & _applies(objective, req.turn)
    if objective.metric == "itl":
        pool = req.gaps[applies[req.gap_owner]] if req.gaps.size else req.gaps
    else:
        pool = per_request[applies]
        pool = pool[~np.isnan(pool)]
    measured = float(np.percentile(pool, objective.percentile)) if pool.size else None
    judged = applies & ~np.isnan(per_request)
    met = int(_meets(objective, per_request[judged]).sum())
    passed = None
    if measured is not None:
        passed = (
            measured >= objective.threshold if objective.floor else measured <= objective.threshold
        )
    return ObjectiveResult(
        slo=objective.label,
        metric=objective.metric,
        percentile=objective.percentile,
        threshold=objective.threshold,
        turns=objective.turns,
        unit=cast(Unit, METRICS[objective.metric]),
        bound="min" if objective.floor else "max",
        measured=measured,
        values=int(pool.size),
        met_ratio=met / int(judged.sum()) if judged.any() else None,
        passed=passed,
    )


def _share(good: int, total: int, window_s: float) -> Share:
    return Share(
        total=total,
        good=good,
        ratio=good / total if total else None,
        per_s=good / window_s if window_s else None,
    )


def _by_turns(good: np.ndarray, req: Requests, weight: np.ndarray, window_s: float) -> ByTurns:
    """A share for every turn, first turns and later turns; `weight` what each attempt counts
    for (1 for request goodput, its output tokens for token goodput)."""

    def share(mask: np.ndarray) -> Share:
        return _share(int(weight[good & mask].sum()), int(weight[mask].sum()), window_s)

    return ByTurns(
        all=share(np.ones(req.ok.shape, dtype=bool)),
        first=share(req.turn == 1),
        later=share(req.turn > 1),
    )


def _conversations(
    tier: Tier, good: np.ndarray, req: Requests, sessions: Sessions, window_s: float
) -> ConversationShare:
    """A conversation is judged unless the run's end cut it (`unfinished`); it is good when
    it sent at least one attempt, every attempt was good, and it lasted at most
    `conversation_s`."""
    n = len(sessions.ids)
    mine = req.session >= 0
    bad = np.zeros(n, dtype=bool)
    bad[req.session[mine & ~good]] = True
    played = np.bincount(req.session[mine], minlength=n) > 0
    judged = sessions.outcome != "unfinished"
    ok = judged & played & ~bad
    if tier.conversation_s is not None:
        ok &= sessions.duration_s <= tier.conversation_s
    total = int(judged.sum())
    share = _share(int(ok.sum()), total, window_s)
    return ConversationShare(
        total=share.total,
        good=share.good,
        ratio=share.ratio,
        per_s=share.per_s,
        unfinished=n - total,
    )


def judge_tier(tier: Tier, req: Requests, sessions: Sessions, window_s: float) -> TierResult:
    """One tier: each objective's pass or fail over the run, then request, output-token and
    conversation goodput (a request is good when it succeeded and met every objective that
    applies to its turn)."""
    good = req.ok.copy()
    objectives = []
    for objective in tier.objectives:
        per_request = _request_value(objective, req)
        objectives.append(_judge(objective, req, per_request))
        good &= _meets(objective, per_request) | ~_applies(objective, req.turn)
    verdicts = [o.passed for o in objectives]
    passed: bool | None = None  # no objective, or one with nothing to measure
    if False in verdicts:
        passed = False
    elif verdicts and None not in verdicts:
        passed = True
    return TierResult(
        passed=passed,
        objectives=objectives,
        conversation_s=tier.conversation_s,
        requests=_by_turns(good, req, np.ones(req.ok.shape), window_s),
        output_tokens=_by_turns(good, req, np.where(req.ok, req.tokens, 0.0), window_s),
        conversations=_conversations(tier, good, req, sessions, window_s),
    )


def describe_slo(db_path: Path, slo: dict[str, Any] | None, window_s: float) -> Slo | None:
    """Every tier of the run's SLO section (`runs.config_json`'s `slo`) judged on its
    events.db; None when the run had none. Rates are over the measured window `window_s`."""
    if not slo:
        return None
    try:
        cfg = SloConfig.model_validate(slo)
    except ValidationError as e:
        raise InputError(f"the run's slo section is not valid: {e.errors()[0]['msg']}") from None
    conn = open_readonly(db_path)
    try:
        return judge_all(conn, cfg, window_s)
    finally:
        conn.close()


def judge_all(
    conn: sqlite3.Connection, cfg: SloConfig, window_s: float, stage: str | None = None
) -> Slo:
    """Every tier judged on the run's judged attempts and sessions, or on one stage's (the
    attempts intended in it, the sessions that started in it: `metrics/stages.py`)."""
    with_gaps = any(o.metric == "itl" for t in cfg.tiers.values() for o in t.objectives)
    sessions = read_sessions(conn, stage)
    req = read_requests(conn, sessions, with_gaps, stage)
    return Slo(
        window_s=window_s,
        tiers={name: judge_tier(t, req, sessions, window_s) for name, t in cfg.tiers.items()},
    )
