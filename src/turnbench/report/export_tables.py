"""What `turnbench export` can write: each table's columns (name, type, unit, meaning) and the
query that reads them from `events.db`.

Why the columns spelled out here, not read from the database: the type of each column is then
known before the first row (a Parquet schema, a JSON number or text), a column that an older
`events.db` lacks is exported as empty instead of missing, and docs/export.md is checked
against this list by the tests, so the two cannot drift apart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Literal

from turnbench.record.schema import SESSION_COLUMNS

Kind = Literal["int", "float", "text", "ms_list"]
"""`ms_list`: `requests.chunk_gaps` (packed int64 ns) exported as a list of milliseconds."""


@dataclass(frozen=True)
class Column:
    """One exported column: what a reader of the file needs to know about it."""

    name: str
    kind: Kind
    unit: str
    meaning: str


@dataclass(frozen=True)
class ExportTable:
    """A table of the export: its columns, in order, and the SELECT that yields them."""

    name: str
    columns: tuple[Column, ...]
    sql: str
    """A query whose result columns are `columns`, in order; `{requests}` is replaced by the
    requests table with every column of `REQUEST_COLUMNS`, `{sessions}` by the sessions table
    with every column of today's (NULL where an old file lacks one)."""


def _c(name: str, kind: Kind, unit: str, meaning: str) -> Column:
    return Column(name, kind, unit, meaning)


NS = "ns since run start"
REQUEST_COLUMNS = (
    _c("id", "int", "", "row number in events.db"),
    _c("run_id", "text", "", "the run folder's name"),
    _c("stage", "text", "", "`warmup`, `main`, or the name of its stage (`stages:`)"),
    _c("worker", "int", "", "worker process that sent it"),
    _c("session_id", "text", "", "session"),
    _c("conversation_id", "text", "", "workload conversation"),
    _c("turn_index", "int", "", "turn of the conversation, 1-based"),
    _c("attempt", "int", "", "attempt within the turn, 1-based"),
    _c("t_intended_ns", "int", NS, "when the schedule wanted it sent"),
    _c("t_sent_ns", "int", NS, "when sending began"),
    _c("t_first_token_ns", "int", NS, "first content chunk; empty if none"),
    _c("t_last_token_ns", "int", NS, "last content chunk; empty if none"),
    _c("t_end_ns", "int", NS, "end of the stream, error, timeout or cancellation"),
    _c("gate_wait_ns", "int", "ns", "wait at the `max_in_flight` gate"),
    _c(
        "chunk_gaps_ms",
        "ms_list",
        "ms",
        "gaps between consecutive content chunks (the ITL values); empty list with fewer "
        "than 2 chunks",
    ),
    _c("content_chunks", "int", "", "content chunks received"),
    _c("prompt_tokens", "int", "tokens", "`usage.prompt_tokens`; empty without usage"),
    _c("completion_tokens", "int", "tokens", "`usage.completion_tokens` or counted locally"),
    _c("cached_tokens", "int", "tokens", "cached prompt tokens the server reported"),
    _c("token_source", "text", "", "`usage`, `tokenizer` or `chunks`"),
    _c("context_messages", "int", "messages", "messages in the request"),
    _c("dropped_messages", "int", "messages", "messages dropped by truncation so far"),
    _c("status", "text", "", "`ok`, `error` or `cancelled`"),
    _c("http_status", "int", "", "HTTP status; empty if no response arrived"),
    _c("error_kind", "text", "", "kind of failure (docs/events-db.md); empty when ok"),
    _c("error_message", "text", "", "the server's or the client's message"),
    _c("finish_reason", "text", "", "last `finish_reason` streamed"),
    _c("reconnects", "int", "", "fresh connections opened for a closed keep-alive one"),
    _c("replica", "text", "", "replica that served it (`target.replica_header`)"),
    _c("ideal_cached_tokens", "int", "tokens", "prefix an unbounded prefix cache would hold"),
    _c("task_id", "text", "", "agent task: its root session (a conversation is its own)"),
    _c("parent_session_id", "text", "", "session that started this one; empty for a root"),
    _c("depth", "int", "", "0 for a root session, 1 for its sub-agents and forks, ..."),
    _c("branch", "int", "", "the session's number among its parent's children; 0 for a root"),
    _c("tool_wait_ns", "int", "ns", "the tool's latency this turn waited (first attempt)"),
)
_REQUEST_NAMES = tuple(c.name for c in REQUEST_COLUMNS)
_STORED = {"chunk_gaps_ms": "chunk_gaps"}  # exported name -> column in events.db

_FIGURES_OK = "status = 'ok' AND t_first_token_ns IS NOT NULL"

TURNS = ExportTable(
    "turns",
    (
        _c("run_id", "text", "", "the run folder's name"),
        _c("stage", "text", "", "stage of the final attempt"),
        _c("worker", "int", "", "worker that played the session"),
        _c("session_id", "text", "", "session"),
        _c("conversation_id", "text", "", "workload conversation"),
        _c("turn_index", "int", "", "turn of the conversation, 1-based"),
        _c("attempts", "int", "", "attempts sent for this turn (retries included)"),
        _c("status", "text", "", "final attempt's status: `ok`, `error` or `cancelled`"),
        _c("error_kind", "text", "", "final attempt's kind of failure; empty when ok"),
        _c("http_status", "int", "", "final attempt's HTTP status"),
        _c("t_intended_ns", "int", NS, "when the schedule wanted the turn's first attempt sent"),
        _c("t_sent_ns", "int", NS, "when the final attempt was sent"),
        _c("t_end_ns", "int", NS, "when the final attempt ended"),
        _c("ttft_ms", "float", "ms", "final attempt's first token − send; empty unless ok"),
        _c("e2e_ms", "float", "ms", "final attempt's end − send; empty unless ok"),
        _c(
            "tpot_ms",
            "float",
            "ms",
            "(e2e − ttft) / (completion_tokens − 1); empty unless ok with 2 tokens or more",
        ),
        _c(
            "turn_ms",
            "float",
            "ms",
            "final attempt's end − first attempt's send: the turn with its retries",
        ),
        _c("prompt_tokens", "int", "tokens", "final attempt's prompt tokens"),
        _c("completion_tokens", "int", "tokens", "final attempt's completion tokens"),
        _c("cached_tokens", "int", "tokens", "final attempt's cached prompt tokens"),
        _c("ideal_cached_tokens", "int", "tokens", "final attempt's ideal cached prefix"),
        _c("context_messages", "int", "messages", "messages in the final request"),
        _c("replica", "text", "", "replica that served the final attempt"),
        _c("finish_reason", "text", "", "final attempt's `finish_reason`"),
    ),
    f"""
WITH t AS (
    SELECT run_id, stage, worker, session_id, conversation_id, turn_index, attempt, status,
        error_kind, http_status, t_intended_ns, t_sent_ns, t_first_token_ns, t_end_ns,
        prompt_tokens, completion_tokens, cached_tokens, ideal_cached_tokens, context_messages,
        replica, finish_reason,
        ROW_NUMBER() OVER w AS k, COUNT(*) OVER w AS n,
        MIN(t_intended_ns) OVER w AS first_intended,
        MIN(NULLIF(t_sent_ns, 0)) OVER w AS first_sent
    FROM {{requests}}
    -- one window, in the order of the index (session_id, turn_index, attempt): no sort
    -- when the index is there, and rows come out grouped by session and turn
    WINDOW w AS (PARTITION BY session_id, turn_index ORDER BY attempt
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
)
SELECT run_id, stage, worker, session_id, conversation_id, turn_index, n, status, error_kind,
    http_status, first_intended, t_sent_ns, t_end_ns,
    CASE WHEN {_FIGURES_OK} THEN (t_first_token_ns - t_sent_ns) / 1e6 END,
    CASE WHEN {_FIGURES_OK} THEN (t_end_ns - t_sent_ns) / 1e6 END,
    CASE WHEN {_FIGURES_OK} AND completion_tokens > 1
        THEN (t_end_ns - t_first_token_ns) / 1e6 / (completion_tokens - 1) END,
    CASE WHEN first_sent IS NOT NULL AND t_end_ns > 0 THEN (t_end_ns - first_sent) / 1e6 END,
    prompt_tokens, completion_tokens, cached_tokens, ideal_cached_tokens, context_messages,
    replica, finish_reason
FROM t WHERE k = n
""",
)

_OK_SESSION = f"r.{_FIGURES_OK.replace(' AND ', ' AND r.')}"
_KEPT = "r.status = 'ok' AND r.cached_tokens IS NOT NULL AND r.ideal_cached_tokens > 0"

CONVERSATIONS = ExportTable(
    "conversations",
    (
        _c("run_id", "text", "", "the run folder's name"),
        _c("session_id", "text", "", "session"),
        _c("conversation_id", "text", "", "workload conversation"),
        _c("worker", "int", "", "worker that played it"),
        _c("stage", "text", "", "`warmup` if its first turn was due in the warm-up, else `main`"),
        _c("t_intended_ns", "int", NS, "intended start (its arrival)"),
        _c("t_start_ns", "int", NS, "actual start (after the `max_sessions` gate)"),
        _c("t_end_ns", "int", NS, "end"),
        _c("gate_wait_ns", "int", "ns", "wait at the `max_sessions` gate"),
        _c("turns_planned", "int", "turns", "turns of the conversation"),
        _c("turns_ok", "int", "turns", "turns that succeeded"),
        _c("turns_failed", "int", "turns", "turns whose every attempt failed"),
        _c("attempts", "int", "", "attempts sent, retries included"),
        _c("dropped_messages", "int", "messages", "messages dropped by truncation"),
        _c("outcome", "text", "", "`completed`, `aborted`, `context_full` or `unfinished`"),
        _c("duration_s", "float", "s", "t_end_ns − t_start_ns"),
        _c("requests_ok", "int", "", "successful attempts"),
        _c("requests_failed", "int", "", "failed attempts"),
        _c("requests_cancelled", "int", "", "attempts cut by the run's end"),
        _c("ttft_ms_mean", "float", "ms", "mean TTFT of its successful attempts"),
        _c("ttft_ms_max", "float", "ms", "largest TTFT of its successful attempts"),
        _c("e2e_ms_mean", "float", "ms", "mean E2E latency of its successful attempts"),
        _c("e2e_ms_max", "float", "ms", "largest E2E latency of its successful attempts"),
        _c("prompt_tokens", "int", "tokens", "Σ prompt tokens of its successful attempts"),
        _c("completion_tokens", "int", "tokens", "Σ completion tokens of its successful attempts"),
        _c("cached_tokens", "int", "tokens", "Σ cached prompt tokens of its successful attempts"),
        _c(
            "ideal_cached_tokens",
            "int",
            "tokens",
            "Σ ideal cached prefix of its successful attempts",
        ),
        _c(
            "cache_kept",
            "float",
            "ratio",
            "Σ cached / Σ ideal over its successful attempts that report cached tokens and "
            "have an ideal above 0 (the report's `kept`); empty without one",
        ),
        _c("task_id", "text", "", "agent task: its root session (a conversation is its own)"),
        _c("parent_session_id", "text", "", "session that started it; empty for a root"),
        _c("depth", "int", "", "0 for a root, 1 for its sub-agents and forks, ..."),
        _c("branch", "int", "", "its number among its parent's children; 0 for a root"),
        _c("kind", "text", "", "`session` (a root), `subagent` or `fork`"),
        _c("after_turn", "int", "", "parent's turn it started after (0: with it); empty: root"),
        _c("join_turn", "int", "", "parent's turn that waited for it; empty: none did"),
        _c("children", "int", "", "sub-agents and forks it started"),
        _c("tool_wait_ns", "int", "ns", "time its turns waited for tools"),
    ),
    f"""
WITH r AS (SELECT * FROM {{requests}}),
a AS (
    SELECT r.session_id,
        SUM(r.status = 'ok') AS ok, SUM(r.status = 'error') AS failed,
        SUM(r.status = 'cancelled') AS cancelled,
        AVG(CASE WHEN {_OK_SESSION} THEN (r.t_first_token_ns - r.t_sent_ns) / 1e6 END) AS tm,
        MAX(CASE WHEN {_OK_SESSION} THEN (r.t_first_token_ns - r.t_sent_ns) / 1e6 END) AS tx,
        AVG(CASE WHEN {_OK_SESSION} THEN (r.t_end_ns - r.t_sent_ns) / 1e6 END) AS em,
        MAX(CASE WHEN {_OK_SESSION} THEN (r.t_end_ns - r.t_sent_ns) / 1e6 END) AS ex,
        SUM(CASE WHEN r.status = 'ok' THEN r.prompt_tokens END) AS pt,
        SUM(CASE WHEN r.status = 'ok' THEN r.completion_tokens END) AS ct,
        SUM(CASE WHEN r.status = 'ok' THEN r.cached_tokens END) AS kt,
        SUM(CASE WHEN r.status = 'ok' THEN r.ideal_cached_tokens END) AS it,
        SUM(CASE WHEN {_KEPT} THEN r.cached_tokens END) * 1.0
            / SUM(CASE WHEN {_KEPT} THEN r.ideal_cached_tokens END) AS kept
    FROM r GROUP BY r.session_id
)
SELECT s.run_id, s.session_id, s.conversation_id, s.worker, s.stage, s.t_intended_ns,
    s.t_start_ns, s.t_end_ns, s.gate_wait_ns, s.turns_planned, s.turns_ok, s.turns_failed,
    s.attempts, s.dropped_messages, s.outcome, (s.t_end_ns - s.t_start_ns) / 1e9,
    COALESCE(a.ok, 0), COALESCE(a.failed, 0), COALESCE(a.cancelled, 0), a.tm, a.tx, a.em, a.ex,
    a.pt, a.ct, a.kt, a.it, a.kept, s.task_id, s.parent_session_id, s.depth, s.branch, s.kind,
    s.after_turn, s.join_turn, s.children, s.tool_wait_ns
FROM {{sessions}} s LEFT JOIN a ON a.session_id = s.session_id
ORDER BY s.t_start_ns, s.session_id
""",
)

SERVER_METRICS = ExportTable(
    "server_metrics",
    (
        _c("run_id", "text", "", "the run folder's name"),
        _c("t_ns", "int", NS, "middle of the scrape (the run's main process clock)"),
        _c("name", "text", "", "sample name as exposed, e.g. `vllm:num_requests_running`"),
        _c("labels", "text", "", "its labels as a JSON object with sorted keys (`{}`: none)"),
        _c("value", "float", "", "its value; empty for NaN; `+Inf` / `-Inf` as they came"),
    ),
    "SELECT run_id, t_ns, name, labels, value FROM server_metrics ORDER BY t_ns, rowid",
)

REQUESTS = ExportTable("requests", REQUEST_COLUMNS, "SELECT * FROM {requests} ORDER BY id")
TABLES = {t.name: t for t in (REQUESTS, TURNS, CONVERSATIONS, SERVER_METRICS)}


def _present(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def query(conn: sqlite3.Connection, table: ExportTable) -> str:
    """The table's SELECT for this events.db: the requests and sessions columns it lacks (an
    older file) read as NULL, so every export of a table has the same columns."""
    stored = _present(conn, "requests")
    cols = []
    for name in _REQUEST_NAMES:
        source = _STORED.get(name, name)
        cols.append(f"{source} AS {name}" if source in stored else f"NULL AS {name}")
    kept = _present(conn, "sessions")
    ses = [c if c in kept else f"NULL AS {c}" for c in ("run_id", *SESSION_COLUMNS)]
    return table.sql.format(
        requests=f"(SELECT {', '.join(cols)} FROM requests)",
        sessions=f"(SELECT {', '.join(ses)} FROM sessions)",
    )
