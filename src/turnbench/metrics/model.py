"""The run's summary as one typed model: what summary.json holds, and what the console, the
HTML report, `compare` and the capacity search read.

Why typed: every reader used to index nested dicts by key strings that only a test run
could check; now a key that is not there is a type error (mypy) or a decode error naming it,
and summary.json is read back into the same model (`load_summary`) by whoever reads a run
folder. Why msgspec Structs: strict decoding of summary.json (an unknown or mistyped key is
an error, not a silent None), field names that are the JSON keys (docs/metrics.md), and a
summary that encodes to the same JSON as the dicts it replaced.

The core sections are typed here; the others in a module of their own beside their builder
(`cache_model`, `server_model`, `affinity_model`, `outages_model`, `slo_model`,
`stages_model`, `agents_model`), all on `model_base`. The notices stay JSON objects: each
kind carries data keys of its own (`EventRecorder.notice`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from turnbench.metrics import (
    affinity_model,
    agents_model,
    cache_model,
    outages_model,
    server_model,
    slo_model,
    stages_model,
)
from turnbench.metrics.model_base import Dist, Model


class Run(Model):
    """The run's row of `runs` (its configuration apart, in `Summary.config`); empty for an
    events.db without one."""

    run_id: str | None = None
    name: str | None = None
    turnbench_version: str | None = None
    started_wall_ns: int | None = None
    ended_wall_ns: int | None = None
    end_reason: str | None = None
    target: str | None = None
    model: str | None = None
    api: str | None = None
    max_model_len: int | None = None


class Throughput(Model):
    """Successful work per second of the measured window; None when the window is empty."""

    requests_per_s: float | None
    output_tokens_per_s: float | None
    total_tokens_per_s: float | None


class Requests(Model):
    """Counts by status, throughput and the per-request distributions (main stage)."""

    attempts: int
    warmup: int
    ok: int
    failed: int
    cancelled: int
    token_sources: dict[str, int]
    window_s: float
    throughput: Throughput
    cached_token_ratio: float | None
    ttft_ms: Dist
    ttft_from_intended_ms: Dist
    e2e_ms: Dist
    e2e_from_intended_ms: Dist
    tpot_ms: Dist
    ntpot_ms: Dist
    itl_ms: Dist
    schedule_lag_ms: Dist
    gate_wait_ms: Dist
    prompt_tokens: Dist
    completion_tokens: Dist
    cached_tokens: Dist


class Timeline(Model):
    """Warm-up, arrivals, drain and the measured window, seconds on the run's clock."""

    warmup_s: float
    arrivals_s: float | None
    arrivals_end: str | None
    drain_s: float | None
    last_end_s: float | None
    window_start_s: float | None
    window_end_s: float | None


class TurnRow(Model):
    """One turn index: its attempts and latencies."""

    turn: int
    ok: int
    failed: int
    ttft_ms: Dist
    e2e_ms: Dist
    mean_prompt_tokens: float | None
    mean_cached_tokens: float | None
    cached_ratio: float | None


class Conversations(Model):
    """The run's sessions: outcomes, durations and turns."""

    sessions: int
    outcomes: dict[str, int]
    duration_s: Dist
    turns_completed: Dist
    turns_failed: int
    turn_success_rate: float | None
    sessions_fully_ok: int
    dropped_messages: int
    session_gate_wait_ms: Dist


class Verdict(Model):
    """Whether the client or a cap held work back (latencies from the send then understate)."""

    client_bound: bool
    capacity_bound: bool
    schedule_lag_p99_ms: float
    gate_wait_p99_ms: float
    notes: list[str]
    threshold_ms: float


class Summary(Model):
    """Every figure of a run (summary.json), built from its events.db alone."""

    run: Run
    config: dict[str, Any]
    length_source: str | None
    requests: Requests
    timeline: Timeline
    per_turn: list[TurnRow]
    per_conversation: Conversations
    errors: dict[str, int]
    verdict: Verdict
    notices: list[dict[str, Any]]
    outages: list[outages_model.Outage]
    downtime_s: float
    affinity: affinity_model.Affinity | None
    server: server_model.Server | None
    slo: slo_model.Slo | None
    agents: agents_model.Agents | None
    cache: cache_model.Cache | None
    stages: list[stages_model.Stage]
    frontier: list[stages_model.FrontierPoint]


def _plain(value: Any) -> Any:
    """A value JSON has no type for: a numpy scalar as its number, anything else as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def to_json(summary: Summary) -> bytes:
    """summary.json's bytes: indented, keys in the model's order."""
    return msgspec.json.format(msgspec.json.encode(summary, enc_hook=_plain), indent=2)


def load_summary(path: Path) -> Summary:
    """A run folder's summary.json (`path`: the file), as the model."""
    return msgspec.json.decode(path.read_bytes(), type=Summary)
