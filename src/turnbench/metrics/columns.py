"""Reading `events.db` columns into numpy, the one way every metrics module reads rows.

Why batches of float64: a long run has millions of rows; as Python objects they would need
gigabytes, as float64 columns 8 bytes a value, and NULL becomes NaN, which numpy skips where
asked. Its own module: `summary.py` composes the figures of the others, which all read rows.
"""

from __future__ import annotations

import sqlite3

import numpy as np

BATCH = 100_000
"""Rows fetched from SQLite at a time."""


def read_matrix(
    conn: sqlite3.Connection, sql: str, n_cols: int, params: tuple[object, ...] = ()
) -> np.ndarray:
    """A query's rows as a float64 matrix (NULL as NaN), read in batches."""
    cursor = conn.execute(sql, params)
    parts: list[np.ndarray] = []
    while rows := cursor.fetchmany(BATCH):
        parts.append(np.array(rows, dtype=np.float64).reshape(len(rows), n_cols))
    return np.concatenate(parts) if parts else np.empty((0, n_cols))
