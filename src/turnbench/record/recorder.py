"""`EventRecorder`: the only writer of `events.db`, batched and off the hot path.

Why a thread: the event loop only appends a struct to a list; a writer thread turns batches
into rows and commits them. A committed batch survives a crash; `close()` writes the rest.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from turnbench.client.attempt import Attempt
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


def connect(path: Path) -> sqlite3.Connection:
    """Open `events.db` for writing, WAL mode, with the schema in place."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(DDL)
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


class EventRecorder:
    """Appends rows in batches from a background thread; `record` is cheap and never blocks."""

    def __init__(self, path: Path, run_id: str, *, batch_s: float = 0.2) -> None:
        self.path = path
        self.run_id = run_id
        self._conn = connect(path)
        self._pending: list[_Row] = []
        self._queue: queue.SimpleQueue[list[_Row] | None] = queue.SimpleQueue()
        self._batch_s = batch_s
        self._last_flush = time.monotonic()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, name="events-db", daemon=True)
        self._thread.start()
        self.rows_written = 0

    def start_run(self, **fields: Any) -> None:
        """Write the run's row (config already stripped of secrets)."""
        fields = {**fields, "run_id": self.run_id}
        if "config_json" in fields and not isinstance(fields["config_json"], str):
            fields["config_json"] = json.dumps(fields["config_json"], sort_keys=True)
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        self._conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", tuple(fields.values()))

    def end_run(self, reason: str) -> None:
        """Stamp the run's end time and why it ended (after `close`)."""
        conn = sqlite3.connect(self.path)
        with conn:
            conn.execute(
                "UPDATE runs SET ended_wall_ns = ?, end_reason = ? WHERE run_id = ?",
                (time.time_ns(), reason, self.run_id),
            )
        conn.close()

    def record(self, row: _Row) -> None:
        """Queue one row; hands a batch to the writer every `batch_s` seconds."""
        self._pending.append(row)
        now = time.monotonic()
        if now - self._last_flush >= self._batch_s:
            self._last_flush = now
            self.flush()

    def flush(self) -> None:
        """Hand what is pending to the writer thread."""
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []

    def close(self) -> None:
        """Write everything still pending and close the database."""
        self.flush()
        self._queue.put(None)
        self._thread.join()
        self._conn.close()
        if self._error is not None:
            raise RuntimeError(f"writing {self.path} failed") from self._error

    def _writer(self) -> None:
        attempt_sql = (
            f"INSERT INTO requests (run_id, {', '.join(ATTEMPT_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' for _ in ATTEMPT_COLUMNS)})"
        )
        session_sql = (
            f"INSERT INTO sessions (run_id, {', '.join(SESSION_COLUMNS)}) "
            f"VALUES (?, {', '.join('?' for _ in SESSION_COLUMNS)})"
        )
        worker_sql = (
            f"INSERT INTO workers ({', '.join(WORKER_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in WORKER_COLUMNS)})"
        )
        run_id = self.run_id
        astuple = msgspec.structs.astuple
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue
            attempts = [(run_id, *astuple(r)) for r in batch if isinstance(r, Attempt)]
            sessions = [(run_id, *astuple(r)) for r in batch if isinstance(r, SessionRecord)]
            workers = [astuple(r) for r in batch if isinstance(r, WorkerRecord)]
            try:
                with self._conn:
                    self._conn.execute("BEGIN")
                    if attempts:
                        self._conn.executemany(attempt_sql, attempts)
                    if sessions:
                        self._conn.executemany(session_sql, sessions)
                    if workers:
                        self._conn.executemany(worker_sql, workers)
                self.rows_written += len(batch)
            except sqlite3.Error as e:  # disk full, locked: keep the error for close()
                self._error = e
