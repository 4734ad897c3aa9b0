"""`turnbench export`: every table of a real run in every format, read back with the standard
readers (csv, json, pyarrow.parquet) and checked row by row against events.db; bad input is one
line `error: ...` and exit 2 through the real CLI.

The run is played against a zero-delay simulator that fails some requests with HTTP 500 under a
retry policy, so turns have several attempts and the `turns` table must pick the final one.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from cli_options import turnbench
from conftest import start_sim
from runs import RunResult, run_bench
from turnbench.report import export
from turnbench.report.export_tables import TABLES, Column

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("csv", "json", "parquet")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunResult]:
    """A real run with retried turns, failed attempts and server metrics."""
    sim = start_sim("--set", "zero_delay=true", "--fault", "http500=0.2")
    try:
        yield run_bench(
            tmp_path_factory.mktemp("export"),
            {
                "target": {"url": sim.v1, "metrics_interval_s": 0.2},
                "workload": {
                    "type": "synthetic",
                    "conversations": 12,
                    "turns": 4,
                    "input_tokens": 40,
                    "output_tokens": 12,
                },
                "session": {
                    "on_failure": "retry",
                    "retry": {"max_attempts": 3, "backoff_s": 0.0, "jitter": 0.0},
                    "think_time": 0.0,
                },
                "load": {"mode": "parallel"},
            },
        )
    finally:
        sim.stop()


def _typed(value: str, column: Column) -> Any:
    """A CSV cell as the value it stands for (the empty cell is NULL)."""
    if column.kind == "ms_list":
        return json.loads(value)
    if value == "":
        return None
    return {"int": int, "float": float, "text": str}[column.kind](value)


def read_back(path: Path, fmt: str, table: str) -> list[dict[str, Any]]:
    """The exported file as a list of rows, by the format's own standard reader."""
    columns = TABLES[table].columns
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            assert header == [c.name for c in columns]
            return [
                {c.name: _typed(v, c) for c, v in zip(columns, row, strict=True)} for row in reader
            ]
    if fmt == "json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        assert all(list(r) == [c.name for c in columns] for r in rows)
        return rows
    data = pq.read_table(path)
    assert data.column_names == [c.name for c in columns]
    return data.to_pylist()


def _db_rows(run: RunResult, sql: str) -> list[dict[str, Any]]:
    return [dict(r) for r in run.rows(sql)]


def expected(run: RunResult, table: str) -> list[dict[str, Any]]:
    """What each table must hold, computed here from events.db in Python (not by the export's
    own SQL)."""
    if table == "requests":
        rows = _db_rows(run, "SELECT * FROM requests ORDER BY id")
        for r in rows:
            r["chunk_gaps_ms"] = (np.frombuffer(r.pop("chunk_gaps"), "<i8") / 1e6).tolist()
        return rows
    if table == "server_metrics":
        return _db_rows(
            run, "SELECT run_id, t_ns, name, labels, value FROM server_metrics ORDER BY t_ns, rowid"
        )
    attempts = _db_rows(run, "SELECT * FROM requests ORDER BY session_id, turn_index, attempt")
    if table == "turns":
        return _turns(attempts)
    return _conversations(run, attempts)


def _ok_figures(a: dict[str, Any]) -> tuple[float | None, float | None]:
    if a["status"] != "ok" or a["t_first_token_ns"] is None:
        return None, None
    return (a["t_first_token_ns"] - a["t_sent_ns"]) / 1e6, (a["t_end_ns"] - a["t_sent_ns"]) / 1e6


def _turns(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_turn: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for a in attempts:
        by_turn.setdefault((a["session_id"], a["turn_index"]), []).append(a)
    out = []
    for (_session, _turn), rows in sorted(by_turn.items()):
        final, first = rows[-1], rows[0]
        ttft, e2e = _ok_figures(final)
        tokens = final["completion_tokens"]
        tpot = (e2e - ttft) / (tokens - 1) if e2e is not None and tokens > 1 else None
        out.append(
            {
                "session_id": final["session_id"],
                "turn_index": final["turn_index"],
                "attempts": len(rows),
                "status": final["status"],
                "error_kind": final["error_kind"],
                "t_intended_ns": first["t_intended_ns"],
                "t_sent_ns": final["t_sent_ns"],
                "ttft_ms": ttft,
                "e2e_ms": e2e,
                "tpot_ms": tpot,
                "turn_ms": (final["t_end_ns"] - first["t_sent_ns"]) / 1e6,
                "prompt_tokens": final["prompt_tokens"],
                "cached_tokens": final["cached_tokens"],
                "ideal_cached_tokens": final["ideal_cached_tokens"],
            }
        )
    return out


def _conversations(run: RunResult, attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for s in _db_rows(run, "SELECT * FROM sessions ORDER BY t_start_ns, session_id"):
        mine = [a for a in attempts if a["session_id"] == s["session_id"]]
        ok = [a for a in mine if a["status"] == "ok"]
        ttfts = [t for t, _ in map(_ok_figures, ok) if t is not None]
        kept = [a for a in ok if a["cached_tokens"] is not None and a["ideal_cached_tokens"]]
        ideal = sum(a["ideal_cached_tokens"] for a in kept)
        out.append(
            {
                **s,
                "duration_s": (s["t_end_ns"] - s["t_start_ns"]) / 1e9,
                "requests_ok": len(ok),
                "requests_failed": sum(a["status"] == "error" for a in mine),
                "ttft_ms_max": max(ttfts) if ttfts else None,
                "ttft_ms_mean": sum(ttfts) / len(ttfts) if ttfts else None,
                "completion_tokens": sum(a["completion_tokens"] for a in ok) if ok else None,
                "cache_kept": sum(a["cached_tokens"] for a in kept) / ideal if ideal else None,
            }
        )
    return out


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, list):
        return len(got) == len(want) and all(map(_same, got, want))
    return bool(got == want)


def assert_rows(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key, value in w.items():
            assert _same(g[key], value), (key, g[key], value)


def test_the_run_has_what_the_export_must_get_right(run: RunResult) -> None:
    """Retried turns, failed attempts, chunk gaps and server metrics are there to export."""
    (retried,) = run.rows("SELECT COUNT(*) FROM requests WHERE attempt > 1")[0]
    (failed,) = run.rows("SELECT COUNT(*) FROM requests WHERE status = 'error'")[0]
    (gaps,) = run.rows("SELECT COUNT(*) FROM requests WHERE length(chunk_gaps) > 0")[0]
    (metrics,) = run.rows("SELECT COUNT(*) FROM server_metrics")[0]
    assert retried and failed and gaps and metrics


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", list(TABLES))
def test_every_table_in_every_format(table: str, fmt: str, run: RunResult, tmp_path: Path) -> None:
    """Through the real CLI: the file lands next to the run, its path the last line, and its
    rows are the ones events.db holds."""
    run_dir = tmp_path / run.path.name
    shutil.copytree(run.path, run_dir)
    proc = turnbench("export", str(run_dir), "--format", fmt, "--table", table, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    path = run_dir / f"{table}.{fmt}"
    want = expected(run, table)
    assert proc.stdout.splitlines() == [f"{len(want):,} rows of {table} ({fmt})", f"export: {path}"]
    assert_rows(read_back(path, fmt, table), want)
    assert not list(run_dir.glob("*.partial"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_stream_in_batches(
    fmt: str, run: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch far smaller than the table: the file is the same whole (JSON commas between
    batches, one Parquet row group per batch)."""
    monkeypatch.setattr(export, "BATCH", 7)
    out = tmp_path / f"requests.{fmt}"
    path, n = export.export_table(run.path, "requests", fmt, out)
    want = expected(run, "requests")
    assert path == out and n == len(want) > 7
    assert_rows(read_back(path, fmt, "requests"), want)
    if fmt == "parquet":
        assert pq.ParquetFile(path).num_row_groups == math.ceil(n / 7)


def test_out_names_a_file_or_a_folder(run: RunResult, tmp_path: Path) -> None:
    file = tmp_path / "mine.csv"
    assert export.export_table(run.path, "turns", "csv", file)[0] == file
    folder = tmp_path / "into"
    folder.mkdir()
    assert export.export_table(run.path, "turns", "json", folder)[0] == folder / "turns.json"


def test_an_older_events_db_exports_its_missing_columns_empty(
    run: RunResult, tmp_path: Path
) -> None:
    """A file from before `replica` and `ideal_cached_tokens`: same columns, empty cells."""
    run_dir = tmp_path / "old"
    shutil.copytree(run.path, run_dir)
    conn = sqlite3.connect(run_dir / "events.db")
    conn.execute("ALTER TABLE requests DROP COLUMN replica")
    conn.execute("ALTER TABLE requests DROP COLUMN ideal_cached_tokens")
    conn.commit()
    conn.close()
    for table in ("requests", "turns", "conversations"):
        path, n = export.export_table(run_dir, table, "parquet")
        rows = read_back(path, "parquet", table)
        assert len(rows) == n > 0
        assert all(r.get("ideal_cached_tokens") is None and r.get("replica") is None for r in rows)


def test_infinite_values_stay_readable_json(tmp_path: Path, run: RunResult) -> None:
    """JSON has no Infinity: a Prometheus `+Inf` sample is written as the string `+Inf`."""
    run_dir = tmp_path / "inf"
    shutil.copytree(run.path, run_dir)
    conn = sqlite3.connect(run_dir / "events.db")
    conn.execute(
        "INSERT INTO server_metrics VALUES ('r', 1e18, 'm', '{}', ?), ('r', 2e18, 'm', '{}', ?)",
        (math.inf, -math.inf),
    )
    conn.commit()
    conn.close()
    path, _ = export.export_table(run_dir, "server_metrics", "json")
    text = path.read_text()
    assert "Infinity" not in text
    rows = json.loads(text)
    assert [r["value"] for r in rows[-2:]] == ["+Inf", "-Inf"]
    back = read_back(
        export.export_table(run_dir, "server_metrics", "parquet")[0], "parquet", "server_metrics"
    )
    assert [r["value"] for r in back[-2:]] == [math.inf, -math.inf]


BAD = {
    "not a folder": (["{missing}", "--format", "csv"], r"\{missing\}: not a folder"),
    "no events.db": (["{empty}", "--format", "csv"], r"no events.db in this folder"),
    "not a database": (["{garbage}", "--format", "csv"], r"events.db cannot be read"),
    "unknown table": (
        ["{run}", "--format", "csv", "--table", "bogus"],
        r"unknown table 'bogus' \(one of requests, turns, conversations, server_metrics\)",
    ),
    "unknown format": (
        ["{run}", "--format", "xml"],
        r"unknown format 'xml' \(one of csv, json, parquet\)",
    ),
    "no such out folder": (
        ["{run}", "--format", "csv", "--out", "{missing}/x.csv"],
        r"the folder to write into does not exist",
    ),
    "no format": (["{run}"], r"Missing option '--format'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(case: str, run: RunResult, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "events.db").write_text("not sqlite at all\n" * 100)
    places = {
        "{missing}": str(tmp_path / "missing"),
        "{empty}": str(tmp_path / "empty"),
        "{garbage}": str(tmp_path / "garbage"),
        "{run}": str(run.path),
    }
    args, pattern = BAD[case]
    for key, value in places.items():
        args = [a.replace(key, value) for a in args]
        pattern = pattern.replace(re.escape(key), re.escape(value))
    proc = turnbench("export", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: ")
    assert re.search(pattern, proc.stderr), proc.stderr
    assert not list(run.path.glob("*.csv"))


def test_docs_list_every_column_of_every_table() -> None:
    """docs/export.md has a section per table whose rows name its columns, in order."""
    text = (ROOT / "docs" / "export.md").read_text()
    for name, table in TABLES.items():
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.M)
        assert documented == [c.name for c in table.columns], name
