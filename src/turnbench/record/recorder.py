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
"""

from __future__ import annotations

import json
import multiprocessing as mp
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
from turnbench.errors import EngineError
from turnbench.record.schema import (
    ATTEMPT_COLUMNS,
    DDL,
    SCHEMA_VERSION,
    SESSION_COLUMNS,
    WORKER_COLUMNS,
    SessionRecord,
    WorkerRecord,
)

_Row = Attempt | SessionRecord | WorkerRecord


class _Batch(msgspec.Struct):
    attempts: list[Attempt]
    sessions: list[SessionRecord]
    workers: list[WorkerRecord]


def connect(path: Path) -> sqlite3.Connection:
    """Open `events.db` for writing, WAL mode, with the schema in place."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(DDL)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


class EventRecorder:
    """Collects rows and ships them to the writer process; `record` is cheap and never waits."""

    def __init__(self, path: Path, run_id: str, *, batch_s: float = 0.05) -> None:
        self.path = path
        self.run_id = run_id
        connect(path).close()  # the schema exists before anyone writes or reads
        self._attempts: list[Attempt] = []
        self._sessions: list[SessionRecord] = []
        self._workers: list[WorkerRecord] = []
        self._batch_s = batch_s
        self._last_flush = time.monotonic()
        self._encode = msgspec.msgpack.Encoder().encode
        ctx = mp.get_context("spawn")
        receive, self._send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_write_events, args=(str(path), run_id, receive), name="turnbench-events-db"
        )
        self._process.start()
        receive.close()
        self.broken = False
        """True once the writer process is gone: the run must stop, nothing more is kept."""
        self.lost_rows = 0
        self._queue: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_all, name="events-db-sender", daemon=True)
        self._sender.start()

    def start_run(self, **fields: Any) -> None:
        """Write the run's row (config already stripped of secrets)."""
        fields = {**fields, "run_id": self.run_id}
        if "config_json" in fields and not isinstance(fields["config_json"], str):
            fields["config_json"] = json.dumps(fields["config_json"], sort_keys=True)
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        conn = connect(self.path)
        with conn:
            conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(fields.values()))
        conn.close()

    def end_run(self, reason: str) -> None:
        """Stamp the run's end time and why it ended (after `close`)."""
        conn = connect(self.path)
        with conn:
            conn.execute(
                "UPDATE runs SET ended_wall_ns = ?, end_reason = ? WHERE run_id = ?",
                (time.time_ns(), reason, self.run_id),
            )
        conn.close()

    def record(self, row: _Row) -> None:
        """Keep one row; hands a batch to the writer every `batch_s` seconds."""
        if isinstance(row, Attempt):
            self._attempts.append(row)
        elif isinstance(row, SessionRecord):
            self._sessions.append(row)
        else:
            self._workers.append(row)
        now = time.monotonic()
        if now - self._last_flush >= self._batch_s:
            self._last_flush = now
            self.flush()

    def flush(self) -> None:
        """Hand what is pending to the sender thread (which drops it once the writer is gone
        and counts it in `lost_rows`)."""
        if self._attempts or self._sessions or self._workers:
            batch = _Batch(self._attempts, self._sessions, self._workers)
            self._attempts, self._sessions, self._workers = [], [], []
            self._queue.put((self._encode(batch), len(batch.attempts) + len(batch.sessions)))

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


def _write_events(path: str, run_id: str, receive: Connection) -> None:
    """The writer process: a transaction per batch until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent decides, then closes
    db = connect(Path(path))
    decode = msgspec.msgpack.Decoder(_Batch).decode
    astuple = msgspec.structs.astuple
    attempt_sql = _insert("requests", ("run_id", *ATTEMPT_COLUMNS))
    session_sql = _insert("sessions", ("run_id", *SESSION_COLUMNS))
    worker_sql = _insert("workers", WORKER_COLUMNS)
    try:
        while True:
            try:
                batch = decode(receive.recv_bytes())
            except EOFError:
                break
            with db:
                db.execute("BEGIN")
                db.executemany(attempt_sql, [(run_id, *astuple(r)) for r in batch.attempts])
                db.executemany(session_sql, [(run_id, *astuple(r)) for r in batch.sessions])
                db.executemany(worker_sql, [astuple(r) for r in batch.workers])
    except sqlite3.Error as e:  # disk full, unwritable: the parent reports the exit code
        print(f"error: writing {path}: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        db.close()


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
