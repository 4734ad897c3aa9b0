"""`turnbench compare`: two or more runs side by side, each figure's difference from the first
run (the baseline), and whether that difference is within run-to-run noise (docs/compare.md).

Why from events.db alone, like `report`: any two runs, old or new, can be compared, and the
figures are the ones their own reports show (`summarize`). The requests are read once more for
the bootstrap (`metrics/bootstrap.py`), as numpy columns, so a run of millions of requests
compares in seconds.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from turnbench.errors import InputError
from turnbench.metrics import bootstrap
from turnbench.metrics.agents_model import Agents
from turnbench.metrics.model import Requests, Summary
from turnbench.metrics.summary import MAIN, MS, read_matrix, summarize
from turnbench.record.journal import open_readonly

REQUEST_PERCENTILES = (50, 90, 99)
TURN_PERCENTILES = (50, 90)
LATENCIES = (("TTFT", "ttft_ms"), ("E2E", "e2e_ms"), ("TPOT", "tpot_ms"), ("ITL", "itl_ms"))
LEFT_OUT_KEYS = frozenset({"resolved.cache_salt"})
"""Config keys every run draws anew (the salt): a difference there says nothing."""
SECRET_KEYS = frozenset({"api_key", "password", "secret", "token", "authorization"})
REDACTED = "<redacted>"
_GAP_BATCH = 10_000


@dataclass
class Run:
    """One run to compare: its letter (A is the baseline), folder, summary and the bootstrap
    replicates of its figures (by figure label; absent: too few values)."""

    letter: str
    path: Path
    summary: Summary
    replicates: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Difference:
    """A run's figure against the baseline's: `within_noise` None when either run has no
    noise estimate for it (throughput, counts; or too few values)."""

    delta: float | None
    relative: float | None
    within_noise: bool | None


@dataclass(frozen=True)
class Figure:
    """One row of a comparison table: a figure's value in every run and its differences."""

    label: str
    values: list[float | None]
    differences: list[Difference]
    """Against the baseline, one per run after the first."""


@dataclass(frozen=True)
class Section:
    """A titled group of figures (one table)."""

    title: str
    figures: list[Figure]


@dataclass
class Comparison:
    """Everything `compare` shows: the runs, the tables of figures, what differs in the runs'
    configs (key, a value per run), and notes on what could not be compared."""

    runs: list[Run]
    sections: list[Section]
    config_diff: list[tuple[str, list[str]]]
    notes: list[str]


def _db(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise InputError("not a folder", file=str(run_dir))
    db = run_dir / "events.db"
    if not db.is_file():
        raise InputError("no events.db in this folder (not a turnbench run)", file=str(run_dir))
    return db


def _ok_columns(conn: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TTFT, E2E and TPOT (ms) and the turn index of every successful main-stage attempt."""
    rows = read_matrix(
        conn,
        "SELECT t_sent_ns, t_first_token_ns, t_end_ns, completion_tokens, turn_index "
        f"FROM requests WHERE {MAIN} AND status = 'ok'",
        5,
    )
    sent, first, end, out, turn = rows.T
    ttft = (first - sent) / MS
    e2e = (end - sent) / MS
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
    return ttft, e2e, tpot, turn


def _gap_sample(
    conn: sqlite3.Connection, total_gaps: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """ITL values (ms) of whole requests kept at random so that about
    `MAX_CLUSTER_VALUES` gaps remain, each gap's request (0..m-1), and the run's number of
    requests with gaps (read in batches: the kept gaps only are ever held)."""
    keep = min(1.0, bootstrap.MAX_CLUSTER_VALUES / total_gaps) if total_gaps else 1.0
    cursor = conn.execute(
        f"SELECT chunk_gaps FROM requests WHERE {MAIN} AND status = 'ok' AND length(chunk_gaps) > 0"
    )
    values: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    clusters = 0
    while rows := cursor.fetchmany(_GAP_BATCH):
        chosen = rng.random(len(rows)) < keep
        for (blob,), take in zip(rows, chosen, strict=True):
            if take:
                gaps = np.frombuffer(blob, dtype="<i8") / MS
                values.append(gaps)
                owners.append(np.full(gaps.size, len(owners)))
        clusters += len(rows)
    if not values:
        return np.empty(0), np.empty(0, dtype=np.int64), clusters
    return np.concatenate(values), np.concatenate(owners), clusters


def _label(name: str, p: int) -> str:
    return f"{name} p{p}"


def _turn_label(turn: int, p: int) -> str:
    return f"turn {turn} p{p}"


def load_run(letter: str, run_dir: Path) -> Run:
    """Summarize one run and bootstrap its latency percentiles, overall and per turn."""
    db = _db(run_dir)
    summary = summarize(db)
    run = Run(letter, run_dir, summary)
    conn = open_readonly(db)
    try:
        ttft, e2e, tpot, turn = _ok_columns(conn)
        total_gaps = int(summary.requests.itl_ms.count)
        gaps, owners, clusters = _gap_sample(conn, total_gaps, bootstrap.rng_for(run_dir, "itl"))
    finally:
        conn.close()
    columns = {"ttft_ms": ttft, "e2e_ms": e2e, "tpot_ms": tpot}
    for name, key in LATENCIES:
        if key == "itl_ms":
            dev = bootstrap.clustered_replicates(
                gaps, owners, clusters, REQUEST_PERCENTILES, bootstrap.rng_for(run_dir, key)
            )
            points = np.array(
                [getattr(summary.requests, key).at(f"p{p}") or 0 for p in REQUEST_PERCENTILES]
            )
            reps = None if dev is None else dev + points[:, None]
        else:
            reps = bootstrap.replicates(
                columns[key], REQUEST_PERCENTILES, bootstrap.rng_for(run_dir, key)
            )
        if reps is not None:
            for p, row in zip(REQUEST_PERCENTILES, reps, strict=True):
                run.replicates[_label(name, p)] = row
    for t in np.unique(turn).astype(int).tolist():
        reps = bootstrap.replicates(
            ttft[turn == t], TURN_PERCENTILES, bootstrap.rng_for(run_dir, "turn", t)
        )
        if reps is not None:
            for p, row in zip(TURN_PERCENTILES, reps, strict=True):
                run.replicates[_turn_label(t, p)] = row
    return run


def _figure(label: str, values: list[Any], runs: list[Run] | None = None) -> Figure:
    """A figure and its differences from the first value; with `runs`, whether each is
    within noise, from the runs' replicates of `label`."""
    base = values[0]
    diffs = []
    for i, value in enumerate(values[1:], start=1):
        delta = value - base if value is not None and base is not None else None
        relative = delta / base if delta is not None and base else None
        noise = (
            bootstrap.within_noise(runs[0].replicates.get(label), runs[i].replicates.get(label))
            if runs is not None and delta is not None
            else None
        )
        diffs.append(Difference(delta, relative, noise))
    return Figure(label, values, diffs)


def _turns(runs: list[Run]) -> tuple[Section, list[str]]:
    """TTFT p50 / p90 by turn index, for the turns every run has; a note names the others."""
    by_run = [{t.turn: t for t in r.summary.per_turn if t.ttft_ms.count} for r in runs]
    shared = sorted(set.intersection(*(set(b) for b in by_run)))
    figures = [
        _figure(_turn_label(t, p), [b[t].ttft_ms.at(f"p{p}") for b in by_run], runs)
        for t in shared
        for p in TURN_PERCENTILES
    ]
    notes = []
    others = sorted(set.union(*(set(b) for b in by_run)) - set(shared))
    if others:
        having = "; ".join(
            f"{r.letter}: {_span(sorted(b))}" for r, b in zip(runs, by_run, strict=True)
        )
        notes.append(
            f"turn indexes {_span(others)} are not in every run and are not compared "
            f"(turns with a successful request, {having})"
        )
    return Section("Per-turn TTFT (ms), the turns every run has", figures), notes


def _span(turns: list[int]) -> str:
    """1-5, 8 for [1, 2, 3, 4, 5, 8]."""
    if not turns:
        return "none"
    parts, start, prev = [], turns[0], turns[0]
    for t in [*turns[1:], None]:
        if t is not None and t == prev + 1:
            prev = t
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if t is not None:
            start = prev = t
    return ", ".join(parts)


def _requests(runs: list[Run]) -> Section:
    figures = [
        _figure(_label(name, p), [getattr(r.summary.requests, key).at(f"p{p}") for r in runs], runs)
        for name, key in LATENCIES
        for p in REQUEST_PERCENTILES
    ]
    return Section("Per request (ms, successful requests)", figures)


def _throughput(runs: list[Run]) -> Section:
    rows = (
        ("requests/s", "requests_per_s"),
        ("output tokens/s", "output_tokens_per_s"),
        ("total tokens/s", "total_tokens_per_s"),
    )
    figures = [
        _figure(label, [getattr(r.summary.requests.throughput, key) for r in runs])
        for label, key in rows
    ]
    return Section("Throughput (over each run's measured window)", figures)


def _errors(runs: list[Run]) -> Section:
    def rate(req: Requests) -> float | None:
        sent = req.ok + req.failed + req.cancelled
        return 100.0 * req.failed / sent if sent else None

    reqs = [r.summary.requests for r in runs]
    figures = [
        _figure("failed attempts", [q.failed for q in reqs]),
        _figure("failed %", [rate(q) for q in reqs]),
        _figure("cancelled attempts", [q.cancelled for q in reqs]),
    ]
    # `cancelled` is the row above; the others are kinds of failure
    kinds = sorted({k for r in runs for k in r.summary.errors} - {"cancelled"})
    figures += [
        _figure(f"  {kind}", [r.summary.errors.get(kind, 0) for r in runs]) for kind in kinds
    ]
    return Section("Errors (main stage)", figures)


def _goodput(runs: list[Run]) -> Section | None:
    """Request goodput of the SLO tiers that every run with SLOs judged; None without any."""
    tiers = [r.summary.slo.tiers for r in runs if r.summary.slo]
    if not tiers:
        return None
    figures = []
    for name in sorted(set.intersection(*(set(t) for t in tiers))):
        tier = [r.summary.slo.tiers.get(name) if r.summary.slo else None for r in runs]
        all_ = [t.requests.all if t else None for t in tier]
        figures += [
            _figure(f"{name}: requests good %", [_pct(a.ratio) if a else None for a in all_]),
            _figure(f"{name}: good requests/s", [a.per_s if a else None for a in all_]),
        ]
    return Section("Goodput (SLO tiers)", figures)


def _cache(runs: list[Run]) -> Section | None:
    """Cached prompt tokens and, where the ideal was counted, kept %; None when no run has
    either."""
    cached = [r.summary.requests.cached_token_ratio for r in runs]
    totals = [r.summary.cache.totals if r.summary.cache else None for r in runs]
    kept = [t.kept if t else None for t in totals]
    figures = []
    if any(v is not None for v in cached):
        figures.append(_figure("cached prompt tokens %", [_pct(v) for v in cached]))
    if any(v is not None for v in kept):
        figures.append(_figure("kept % (realised / ideal)", [_pct(v) for v in kept]))
    return Section("Prefix cache", figures) if figures else None


def _agents(runs: list[Run]) -> Section | None:
    """Agent tasks (summary.json `agents`): completion time, its model and tool shares, the
    work per task, and TTFT by depth; None when no run has agents."""
    agents = [r.summary.agents for r in runs]
    if not any(agents):
        return None

    def each(figure: Callable[[Agents], float | int | None]) -> list[float | int | None]:
        return [None if a is None else figure(a) for a in agents]

    figures = [
        _figure("tasks completed", each(lambda a: a.completed)),
        _figure("tasks/h", each(lambda a: a.tasks_per_h)),
        _figure("task completion s p50", each(lambda a: a.completion_s.p50)),
        _figure("task completion s p90", each(lambda a: a.completion_s.p90)),
        _figure("model time %", each(lambda a: _pct(a.time_shares.model))),
        _figure("tool time %", each(lambda a: _pct(a.time_shares.tool))),
        _figure("requests per task (mean)", each(lambda a: a.requests_per_task.mean)),
        _figure("sub-agents per task (mean)", each(lambda a: a.subagents_per_task.mean)),
    ]
    depths = sorted({row.depth for a in agents if a for row in a.by_depth})
    for d in depths:
        rows = [{r.depth: r for r in a.by_depth}.get(d) if a else None for a in agents]
        figures.append(
            _figure(f"TTFT p90 ms at depth {d}", [r.ttft_ms.p90 if r else None for r in rows])
        )
    return Section("Agent tasks", figures)


def _pct(ratio: float | None) -> float | None:
    return ratio * 100 if ratio is not None else None


def _flat(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys and printable values (a list as JSON)."""
    if isinstance(data, dict) and data:
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    key = prefix.rstrip(".")
    if not isinstance(data, str):
        data = json.dumps(data)
    return {key: data}


def _secret(key: str) -> bool:
    """A key whose value is never shown: an API key, a password, an auth header."""
    from turnbench.config import SECRET_HEADERS

    parts = key.lower().split(".")
    if parts[-1] in SECRET_KEYS:
        return True
    header = len(parts) == 3 and parts[:2] == ["target", "headers"]
    return header and (parts[2] in SECRET_HEADERS or "key" in parts[2] or "token" in parts[2])


def config_differences(configs: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """Every config key whose value is not the same in all runs (`-`: the run lacks it),
    secrets redacted, the per-run salt left out."""
    flats = [_flat(c) for c in configs]
    keys = sorted(set().union(*flats) - LEFT_OUT_KEYS)
    out = []
    for key in keys:
        values = [f.get(key, "-") for f in flats]
        if len(set(values)) > 1:
            out.append((key, [REDACTED if _secret(key) else v for v in values]))
    return out


def compare(run_dirs: list[Path]) -> Comparison:
    """Load every run and build the comparison against the first."""
    if len(run_dirs) < 2:
        raise InputError("compare needs two runs or more")
    if len(run_dirs) > 26:
        raise InputError("compare takes at most 26 runs (A to Z)")
    for run_dir in run_dirs:  # every folder checked before the first is summarized
        _db(run_dir)
    runs = [load_run(chr(ord("A") + i), d) for i, d in enumerate(run_dirs)]
    turns, notes = _turns(runs)
    sections = [turns, _requests(runs), _throughput(runs)]
    sections += [s for s in (_goodput(runs), _cache(runs), _agents(runs)) if s is not None]
    sections.append(_errors(runs))
    diff = config_differences([r.summary.config for r in runs])
    return Comparison(runs, sections, diff, notes)
