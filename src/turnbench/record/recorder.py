"""`EventRecorder`: the only writer of `events.db`, batched and off the hot path.

Why a writer process: the event loop only appends a struct to a list and, every 50 ms, encodes
the batch (msgspec, one C call) for a pipe; a separate process decodes and commits it. A
writer thread would share the GIL with a saturated event loop and fall behind (rows piling up
in memory); a process never competes for it. A committed batch survives a crash of turnbench:
the writer commits what it received and stops when its pipe closes, even after `kill -9` of
its parent.

Why a sender thread: the pipe holds 64 KiB. When the disk stalls (an fsync at a WAL
checkpoint took a second on a busy VM), the writer stops reading, and a blocking send would
freeze the event loop, and with it every session's timing. The thread makes the blocking
send instead, with the GIL released; batches wait in its queue, never the run.

Why WAL during the run and not after: WAL lets anyone read the file while the run writes it;
once the writer is done it leaves WAL mode (`journal.leave_wal`), so the run folder holds one
database file that can be copied alone.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import signal
import sqlite3
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec

from turnbench.client.attempt import Attempt
from turnbench.entry import start_uninterrupted
from turnbench.errors import EngineError
from turnbench.record.journal import leave_wal
from turnbench.record.schema import (
    ATTEMPT_COLUMNS,
    DDL,
    INDEXES,
    NOTICE_COLUMNS,
    OUTAGE_COLUMNS,
    SCHEMA_VERSION,
    SERVER_METRIC_COLUMNS,
    SESSION_COLUMNS,
    WORKER_COLUMNS,
    NoticeRecord,
    OutageEvent,
    ServerMetricSample,
    SessionRecord,
    WorkerRecord,
)

_Row = Attempt | SessionRecord | WorkerRecord | NoticeRecord | OutageEvent | ServerMetricSample
NOTICE_KEYS = frozenset({"kind", "message", "t_s"})
"""The keys of a notice in summary.json, which its `data` must leave alone."""


class Rows(msgspec.Struct):
    """Rows on their way to events.db: what a worker's batch carries, and what the writer
    process reads from its pipe, a list of them per transaction (the same encoding, so a
    coordinator forwards a worker's rows without decoding them)."""

    attempts: list[Attempt] = []
    sessions: list[SessionRecord] = []
    workers: list[WorkerRecord] = []
    notices: list[NoticeRecord] = []
    outages: list[OutageEvent] = []
    server_metrics: list[ServerMetricSample] = []

    def record(self, row: _Row) -> None:
        """Add one row to its table's list."""
        if isinstance(row, Attempt):
            self.attempts.append(row)
        elif isinstance(row, SessionRecord):
            self.sessions.append(row)
        elif isinstance(row, WorkerRecord):
            self.workers.append(row)
        elif isinstance(row, OutageEvent):
            self.outages.append(row)
        elif isinstance(row, ServerMetricSample):
            self.server_metrics.append(row)
        else:
            self.notices.append(row)

    def __len__(self) -> int:
        return (
            len(self.attempts)
            + len(self.sessions)
            + len(self.workers)
            + len(self.notices)
            + len(self.outages)
            + len(self.server_metrics)
        )


def connect(path: Path) -> sqlite3.Connection:
    """Open `events.db` for writing while the run goes: WAL mode, the schema in place."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # no fsync: a committed batch is in the OS's hands, so it survives a crash or `kill -9`
    # of turnbench (not of the machine); an fsync could stall the writer for a second
    conn.execute("PRAGMA synchronous=OFF")
    conn.executescript(DDL)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


class EventRecorder:
    """Collects rows and ships them to the writer process; `record` is cheap and never waits."""

    def __init__(self, path: Path, run_id: str, *, batch_s: float = 0.05) -> None:
        self.path = path
        self.run_id = run_id
        connect(path).close()  # the schema exists before anyone writes or reads
        self._rows = Rows()
        self._forwarded: list[msgspec.Raw] = []
        self._forwarded_count = 0
        self._batch_s = batch_s
        self._last_flush = time.monotonic()
        self._encode = msgspec.msgpack.Encoder().encode
        ctx = mp.get_context("spawn")
        receive, self._send = ctx.Pipe(duplex=False)
        _widen(self._send.fileno())
        self._process = ctx.Process(
            target=_write_events, args=(str(path), run_id, receive), name="turnbench-events-db"
        )
        try:
            start_uninterrupted(self._process)
        except BaseException:  # a Ctrl-C, taken once the writer had started: it ends at once
            receive.close()
            self._send.close()
            self._process.join()
            raise
        receive.close()
        self.broken = False
        """True once the writer process is gone: the run must stop, nothing more is kept."""
        self.lost_rows = 0
        self._queue: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_all, name="events-db-sender", daemon=True)
        self._sender.start()
        self._closed = False

    def _execute(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement written from this process, in the journal mode the file is in: a
        write after the writer's end must not put the file back in WAL mode."""
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            conn.execute(sql, params)
        finally:
            conn.close()

    def start_run(self, **fields: Any) -> None:
        """Write the run's row (config already stripped of secrets)."""
        fields = {**fields, "run_id": self.run_id}
        if "config_json" in fields and not isinstance(fields["config_json"], str):
            fields["config_json"] = json.dumps(fields["config_json"], sort_keys=True)
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        self._execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(fields.values()))

    def end_run(self, reason: str) -> None:
        """Stamp the run's end time and why it ended (after `close`)."""
        self._execute(
            "UPDATE runs SET ended_wall_ns = ?, end_reason = ? WHERE run_id = ?",
            (time.time_ns(), reason, self.run_id),
        )

    def notice(self, kind: str, message: str, t_ns: int, data: dict[str, Any]) -> None:
        """Keep a fact of the run the user must be told: the report prints `message` after its
        tables, and summary.json lists it with `data` (a JSON object's worth of figures).

        Called in the process that owns this recorder (the run's main process). `t_ns` is
        on the run's clock, nanoseconds since the run's start, like every other row. While
        the run goes the notice rides with the next batch, so the event loop never waits for
        the disk; after `close` it is written at once, so the end of a run can still say
        something.
        """
        if clash := NOTICE_KEYS & data.keys():
            raise ValueError(f"notice data must not use the keys {sorted(clash)}")
        row = NoticeRecord(t_ns, kind, message, json.dumps(data, sort_keys=True, default=str))
        if self._closed:
            self._execute(
                _insert("notices", ("run_id", *NOTICE_COLUMNS)),
                (self.run_id, *msgspec.structs.astuple(row)),
            )
        else:
            self.record(row)

    def record(self, row: _Row) -> None:
        """Keep one row; hands a batch to the writer every `batch_s` seconds."""
        self._rows.record(row)
        self._due()

    def forward(self, rows: msgspec.Raw, count: int) -> None:
        """Keep `count` rows a worker already encoded as `Rows`: they go on as they are."""
        self._forwarded.append(rows)
        self._forwarded_count += count
        self._due()

    def _due(self) -> None:
        now = time.monotonic()
        if now - self._last_flush >= self._batch_s:
            self._last_flush = now
            self.flush()

    def flush(self) -> None:
        """Hand what is pending to the sender thread (which drops it once the writer is gone
        and counts it in `lost_rows`)."""
        if len(self._rows) or self._forwarded:
            parts: list[Rows | msgspec.Raw] = [self._rows, *self._forwarded]
            count = len(self._rows) + self._forwarded_count
            self._rows, self._forwarded, self._forwarded_count = Rows(), [], 0
            self._queue.put((self._encode(parts), count))

    def _send_all(self) -> None:
        """The sender thread: pipes each batch to the writer until told to stop (None)."""
        while (item := self._queue.get()) is not None:
            payload, rows = item
            if self.broken:
                self.lost_rows += rows
                continue
            try:
                self._send.send_bytes(payload)
            except OSError:
                self.broken = True
                self.lost_rows += rows

    def close(self) -> None:
        """Send the rest, let the writer commit it, and wait for it to finish."""
        self._closed = True
        self.flush()
        self._queue.put(None)
        self._sender.join()
        self._send.close()
        self._process.join()
        if self._process.exitcode != 0 or self.broken:
            raise EngineError(
                f"the events.db writer stopped (exit code {self._process.exitcode}); "
                f"{self.lost_rows} rows were not written to {self.path}"
            )


class _TupleRows(msgspec.Struct):
    """`Rows` as the writer reads them: each row a tuple in column order (the row structs
    are array-like), ready for `executemany` with no Python work per row."""

    attempts: list[tuple[Any, ...]] = []
    sessions: list[tuple[Any, ...]] = []
    workers: list[tuple[Any, ...]] = []
    notices: list[tuple[Any, ...]] = []
    outages: list[tuple[Any, ...]] = []
    server_metrics: list[tuple[Any, ...]] = []


def _write_events(path: str, run_id: str, receive: Connection) -> None:
    """The writer process: a transaction per batch until the pipe closes, then the file
    out of WAL mode.

    It runs at a lower priority (nice 10): it only has to keep up on average, while a worker
    that waits for a core is a request sent late.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent decides, then closes
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)
    db = connect(Path(path))
    decode = msgspec.msgpack.Decoder(list[_TupleRows]).decode
    run = "'" + run_id.replace("'", "''") + "'"  # a SQL string literal: rows carry no run id
    attempt_sql = _insert("requests", ATTEMPT_COLUMNS, run)
    session_sql = _insert("sessions", SESSION_COLUMNS, run)
    worker_sql = _insert("workers", WORKER_COLUMNS)
    notice_sql = _insert("notices", NOTICE_COLUMNS, run)
    outage_sql = _insert("outages", OUTAGE_COLUMNS, run)
    server_metric_sql = _insert("server_metrics", SERVER_METRIC_COLUMNS, run)
    try:
        while True:
            try:
                parts = decode(receive.recv_bytes())
            except EOFError:
                break
            with db:
                db.execute("BEGIN")
                for rows in parts:
                    db.executemany(attempt_sql, rows.attempts)
                    db.executemany(session_sql, rows.sessions)
                    db.executemany(worker_sql, rows.workers)
                    db.executemany(notice_sql, rows.notices)
                    db.executemany(outage_sql, rows.outages)
                    db.executemany(server_metric_sql, rows.server_metrics)
        db.executescript(INDEXES)  # at the end: an index kept up during the run costs per row
        leave_wal(db)
    except sqlite3.Error as e:  # disk full, unwritable: the parent reports the exit code
        print(f"error: writing {path}: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        db.close()


def _widen(pipe_fd: int) -> None:
    """Give a pipe 1 MiB of buffer where Linux allows it (64 KiB by default): a batch then
    goes in one write instead of a dozen alternating with the reader, each of which made the
    sender thread take the GIL back from the event loop."""
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        fcntl.fcntl(pipe_fd, fcntl.F_SETPIPE_SZ, 1 << 20)


def _insert(table: str, columns: tuple[str, ...], run_literal: str | None = None) -> str:
    """An INSERT of `columns` from parameters, after a `run_id` given as a literal, if any."""
    names = ", ".join(("run_id", *columns) if run_literal else columns)
    values = ", ".join(([run_literal] if run_literal else []) + ["?"] * len(columns))
    return f"INSERT INTO {table} ({names}) VALUES ({values})"
