"""The tables of `events.db`, the single source of truth of a run (docs/events-db.md).

Why SQLite: one file that any tool reads (WAL mode while a run writes, so a reader can look;
back to one file when it ends, see `journal.py`), and a committed batch survives `kill -9`.
"""

from __future__ import annotations

import msgspec

from turnbench.client.attempt import Attempt

SCHEMA_VERSION = 1


class SessionRecord(msgspec.Struct, gc=False, array_like=True):
    """How one session went, written when it ends (or as `unfinished` when the run does)."""

    session_id: str
    conversation_id: str
    worker: int
    stage: str
    t_intended_ns: int
    t_start_ns: int
    t_end_ns: int
    gate_wait_ns: int
    turns_planned: int
    turns_ok: int
    turns_failed: int
    attempts: int
    dropped_messages: int
    outcome: str
    """completed, aborted, context_full or unfinished."""
    task_id: str = ""
    """The agent task: the root session of its tree (a plain conversation is its own)."""
    parent_session_id: str | None = None
    """The session that started this one (agents); None for a root."""
    depth: int = 0
    """0 for a root, 1 for its sub-agents and forks, and so on."""
    branch: int = 0
    """Its number among its parent's children (1-based); 0 for a root."""
    kind: str = "session"
    """session (a root), subagent (its own context) or fork (a copy of its parent's)."""
    after_turn: int | None = None
    """The parent's turn (1-based, as `requests.turn_index`) whose end it started after; 0:
    with the parent; None for a root."""
    join_turn: int | None = None
    """The parent's turn that waited for it to end; None: nobody waited (a background child,
    or a root)."""
    children: int = 0
    """Sub-agents and forks it started."""
    tool_wait_ns: int = 0
    """Time its turns waited for tools (the sum of its requests' `tool_wait_ns`)."""


class WorkerRecord(msgspec.Struct, gc=False, array_like=True):
    """A worker's clock anchor: its monotonic time at the run's wall-clock start."""

    worker: int
    pid: int
    host: str
    wall_anchor_ns: int
    mono_anchor_ns: int


class NoticeRecord(msgspec.Struct, gc=False, array_like=True):
    """A fact of the run the user must be told (the report prints it after its tables)."""

    t_ns: int
    """When, in nanoseconds since the run's start (the run's clock, like every other row)."""
    kind: str
    """A short name for what happened, e.g. `dataset_exhausted`."""
    message: str
    """One line for the user, saying what to do about it where there is something to do."""
    data_json: str
    """The figures behind the message, a JSON object."""


class OutageEvent(msgspec.Struct, gc=False, array_like=True):
    """A change in whether a worker reaches the target: it went `down` (the circuit breaker
    opened), came `back` (a probe or a request was answered), or the worker `gave_up` waiting.

    Why events, not one row per window: a run that ends (or is killed) during an outage still
    leaves its start on disk; `metrics/` pairs the events and merges the workers' windows.
    """

    worker: int
    kind: str
    """down, back or gave_up."""
    t_ns: int
    """down: when the first unreachable attempt of the streak was sent; back: when the target
    answered again; gave_up: when the wait passed `session.outage.max_wait_s`. Run clock."""
    failed_attempts: int
    """back, gave_up: unreachable attempts of this worker since `down`."""
    sessions_waiting: int
    """back, gave_up: sessions of this worker waiting for the target at that moment."""


class ServerMetricSample(msgspec.Struct, gc=False, array_like=True):
    """One series of one scrape of the target's Prometheus /metrics (`observe/`).

    Why one row per series: every metric is kept as the server exposed it (buckets and
    `_created` series excepted), known or not; `metrics/server.py` reads the ones it knows.
    """

    t_ns: int
    """The middle of the scrape (between sending the GET and the whole answer), run clock."""
    name: str
    """The sample's name as exposed, e.g. `vllm:prefix_cache_hits_total`."""
    labels: str
    """Its labels, a JSON object with sorted keys (`{}` for none)."""
    value: float
    """Its value (NaN is stored as NULL)."""


ATTEMPT_COLUMNS = tuple(Attempt.__struct_fields__)
SESSION_COLUMNS = tuple(SessionRecord.__struct_fields__)
WORKER_COLUMNS = tuple(WorkerRecord.__struct_fields__)
NOTICE_COLUMNS = tuple(NoticeRecord.__struct_fields__)
OUTAGE_COLUMNS = tuple(OutageEvent.__struct_fields__)
SERVER_METRIC_COLUMNS = tuple(ServerMetricSample.__struct_fields__)

_TYPES = {
    int: "INTEGER",
    float: "REAL",
    str: "TEXT",
    bytes: "BLOB",
}


def _columns(struct: type[msgspec.Struct]) -> str:
    cols = []
    for f in msgspec.structs.fields(struct):
        base = (
            f.type
            if f.type in _TYPES
            else next((t for t in getattr(f.type, "__args__", ()) if t in _TYPES), str)
        )
        cols.append(f"{f.name} {_TYPES[base]}")
    return ", ".join(cols)


DDL = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT, turnbench_version TEXT, started_wall_ns INTEGER,
    ended_wall_ns INTEGER, end_reason TEXT, target TEXT, model TEXT, api TEXT,
    max_model_len INTEGER, config_json TEXT
);
CREATE TABLE IF NOT EXISTS workers ({_columns(WorkerRecord)});
CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, run_id TEXT, {_columns(Attempt)});
CREATE TABLE IF NOT EXISTS sessions (run_id TEXT, {_columns(SessionRecord)});
CREATE TABLE IF NOT EXISTS notices (run_id TEXT, {_columns(NoticeRecord)});
CREATE TABLE IF NOT EXISTS outages (run_id TEXT, {_columns(OutageEvent)});
CREATE TABLE IF NOT EXISTS server_metrics (run_id TEXT, {_columns(ServerMetricSample)});
"""

INDEXES = """
CREATE INDEX IF NOT EXISTS requests_session ON requests (session_id, turn_index, attempt);
"""
"""Built once the run's rows are in (see `recorder._write_events`)."""
