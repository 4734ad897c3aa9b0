"""events.db as one file: WAL while a run writes it, a rollback journal once the run is done.

Why: WAL lets readers look at a run while it writes, but it keeps two files beside the
database (`-wal`, `-shm`), and a reader that opens a WAL database read-only creates them again
and cannot remove them. A finished run folder should hold one database file that can be
copied alone, so the writer leaves the file in DELETE mode, and a reader first converts an old
run's file that is still in WAL mode. Neither ever waits for another connection: while
anyone else has the file open (a live run, a user's sqlite3 shell) the file stays as it is.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

_WAL_FORMAT = 2
"""Bytes 18 and 19 of a SQLite header (file format write / read versions): 2 in WAL mode."""


def leave_wal(conn: sqlite3.Connection) -> None:
    """Move everything into the main file and switch the file out of WAL mode.

    The checkpoint comes first, so that even when the switch fails (another connection is
    open) the main file alone holds every row, and the `-wal` file is empty.
    """
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.execute("PRAGMA journal_mode=DELETE").fetchall()


def is_wal(path: Path) -> bool:
    """Whether the database file is in WAL mode, from its header (opening it could create the
    `-wal` and `-shm` files this module avoids)."""
    with path.open("rb") as f:
        header = f.read(20)
    return len(header) == 20 and header[18] == _WAL_FORMAT


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection that leaves no `-wal` or `-shm` file behind.

    A file still in WAL mode (a run of an older turnbench, or a run whose end could not
    switch it) is switched first if nothing else has it open; a read-only folder, or a
    live run, is read as it is.
    """
    if is_wal(path):
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(path, isolation_level=None, timeout=0)
            try:
                conn.execute("PRAGMA journal_mode=DELETE").fetchall()
            finally:
                conn.close()
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
