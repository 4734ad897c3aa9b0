"""`turnbench export`: a table of a run's events.db as CSV, JSON or Parquet (columns in
docs/export.md, defined in `export_tables.py`).

Why streamed: a long run has millions of requests; rows go from the SQLite cursor to the file
in batches of `BATCH`, so memory stays that of one batch whatever the run's size. Why written
to a `.partial` file first and then renamed: an export cut short (Ctrl-C, a full disk) never
leaves a file that looks whole.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from turnbench.errors import InputError
from turnbench.record.journal import open_readonly
from turnbench.report.export_tables import TABLES, Column, query

FORMATS = {"csv": "csv", "json": "json", "parquet": "parquet"}
"""Format name -> file extension."""
BATCH = 50_000
"""Rows read, converted and written at once."""

Rows = list[tuple[Any, ...]]


def _gaps_ms(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", dtype="<i8") / 1e6


def _listed(rows: Rows, columns: Sequence[Column]) -> Iterator[list[Any]]:
    """Rows with `ms_list` cells as Python lists of milliseconds (for CSV and JSON)."""
    lists = [i for i, c in enumerate(columns) if c.kind == "ms_list"]
    for row in rows:
        out = list(row)
        for i in lists:
            out[i] = _gaps_ms(out[i]).tolist()
        yield out


def _write_csv(f: IO[str], columns: Sequence[Column], batches: Iterator[Rows]) -> int:
    """Header row, then one row per record; empty cell for NULL, a list as JSON text."""
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow([c.name for c in columns])
    lists = [i for i, c in enumerate(columns) if c.kind == "ms_list"]
    n = 0
    for rows in batches:
        for row in _listed(rows, columns):
            for i in lists:
                row[i] = json.dumps(row[i])
            writer.writerow(row)
        n += len(rows)
    return n


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: a Prometheus `+Inf` / `-Inf` stays a string as exposed."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return value


def _write_json(f: IO[str], columns: Sequence[Column], batches: Iterator[Rows]) -> int:
    """One JSON array of objects, one object per line (readable by `json.load`, greppable)."""
    names = [c.name for c in columns]
    floats = [i for i, c in enumerate(columns) if c.kind == "float"]
    n = 0
    f.write("[")
    for rows in batches:
        for row in _listed(rows, columns):
            for i in floats:
                row[i] = _finite(row[i])
            f.write(",\n" if n else "\n")
            f.write(json.dumps(dict(zip(names, row, strict=True)), allow_nan=False))
            n += 1
    f.write("\n]\n" if n else "]\n")
    return n


def _arrow_schema(columns: Sequence[Column]) -> Any:
    import pyarrow as pa

    types = {
        "int": pa.int64(),
        "float": pa.float64(),
        "text": pa.string(),
        "ms_list": pa.list_(pa.float64()),
    }
    return pa.schema([pa.field(c.name, types[c.kind]) for c in columns])


def _arrow_column(values: Sequence[Any], column: Column, field: Any) -> Any:
    import pyarrow as pa

    if column.kind != "ms_list":
        return pa.array(values, type=field.type)
    blobs = [blob or b"" for blob in values]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int32)
    np.cumsum([len(blob) // 8 for blob in blobs], out=offsets[1:])
    flat = _gaps_ms(b"".join(blobs))  # one decode for the batch, not one per row
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.float64()))


def _write_parquet(path: Path, columns: Sequence[Column], batches: Iterator[Rows]) -> int:
    """One row group per batch; `ms_list` as a list<double> column built from numpy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(columns)
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for rows in batches:
            cells = list(zip(*rows, strict=True))
            arrays = [_arrow_column(cells[i], c, schema.field(i)) for i, c in enumerate(columns)]
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            n += len(rows)
    return n


def _batches(cursor: sqlite3.Cursor) -> Iterator[Rows]:
    while rows := cursor.fetchmany(BATCH):
        yield rows


def _open_db(run_dir: Path) -> sqlite3.Connection:
    """The run's events.db, read-only; a folder that is not a run is a one-line error."""
    if not run_dir.is_dir():
        raise InputError("not a folder", file=str(run_dir))
    db = run_dir / "events.db"
    if not db.is_file():
        raise InputError("no events.db in this folder (not a turnbench run)", file=str(run_dir))
    try:
        conn = open_readonly(db)
        conn.execute("SELECT 1 FROM requests LIMIT 1").fetchall()
    except sqlite3.DatabaseError as e:
        raise InputError(f"events.db cannot be read as a run's record: {e}", file=str(db)) from None
    return conn


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def destination(run_dir: Path, table: str, fmt: str, out: Path | None) -> Path:
    """Where the export goes: `out` (a folder: `<table>.<ext>` inside it), else the run folder."""
    name = f"{table}.{FORMATS[fmt]}"
    if out is None:
        return run_dir / name
    if out.is_dir():
        return out / name
    if not out.parent.is_dir():
        raise InputError("the folder to write into does not exist", file=str(out.parent))
    return out


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """An unknown table or format is a one-line error that lists the known ones."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r} (one of {', '.join(choices)})")


def _write(path: Path, fmt: str, columns: Sequence[Column], batches: Iterator[Rows]) -> int:
    if fmt == "parquet":
        return _write_parquet(path, columns, batches)
    writers: dict[str, Callable[[IO[str], Sequence[Column], Iterator[Rows]], int]] = {
        "csv": _write_csv,
        "json": _write_json,
    }
    with path.open("w", encoding="utf-8", newline="") as f:
        return writers[fmt](f, columns, batches)


def export_table(run_dir: Path, table: str, fmt: str, out: Path | None = None) -> tuple[Path, int]:
    """Write one table of the run in one format; returns the file written and its rows."""
    check_choice("table", table, list(TABLES))
    check_choice("format", fmt, list(FORMATS))
    spec = TABLES[table]
    conn = _open_db(run_dir)
    try:
        source = {"turns": "requests", "conversations": "sessions"}.get(table, table)
        if not _has_table(conn, source):
            raise InputError(
                f"this events.db has no {source} table (recorded by an older turnbench)",
                file=str(run_dir / "events.db"),
            )
        path = destination(run_dir, table, fmt, out)
        partial = path.with_name(path.name + ".partial")
        try:
            n = _write(partial, fmt, spec.columns, _batches(conn.execute(query(conn, spec))))
            os.replace(partial, path)
        except OSError as e:
            raise InputError(f"cannot write: {e.strerror or e}", file=str(path)) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
    finally:
        conn.close()
    return path, n
