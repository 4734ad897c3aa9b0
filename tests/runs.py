"""Run a real benchmark (the built-in simulator as a subprocess) and read its events.db."""

from __future__ import annotations

import io
import itertools
import json
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from turnbench.config import RunConfig
from turnbench.run import execute


@dataclass
class RunResult:
    path: Path
    output: str

    def rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.path / "events.db")
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    @property
    def attempts(self) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM requests ORDER BY session_id, turn_index, attempt")

    @property
    def sessions(self) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM sessions ORDER BY t_start_ns")

    def by_session(self) -> dict[str, list[sqlite3.Row]]:
        out: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for r in self.attempts:
            out[r["session_id"]].append(r)
        return out

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text())


def run_bench(tmp_path: Path, config: dict[str, Any], base_dir: Path | None = None) -> RunResult:
    """Validate `config` like a YAML file would be, run it in this process, return the folder."""
    cfg = RunConfig.model_validate(config)
    buf = io.StringIO()
    console = Console(file=buf, width=160)
    path = execute(
        cfg, base_dir=base_dir or tmp_path, out=tmp_path / "runs", console=console, live=False
    )
    return RunResult(path, buf.getvalue())


def assert_one_in_flight(result: RunResult) -> None:
    """No two attempts of one session overlap in time."""
    for sid, rows in result.by_session().items():
        rows = sorted(rows, key=lambda r: r["t_sent_ns"])
        for a, b in itertools.pairwise(rows):
            assert b["t_sent_ns"] >= a["t_end_ns"], f"{sid}: attempts overlap"


def peak_concurrency(intervals: list[tuple[int, int]]) -> int:
    """The most intervals open at once (one ending as another starts does not overlap it)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    active = peak = 0
    for _, step in events:
        active += step
        peak = max(peak, active)
    return peak


def request_intervals(rows: list[sqlite3.Row]) -> list[tuple[int, int]]:
    return [(r["t_sent_ns"], r["t_end_ns"]) for r in rows]


def start_run(cfg: Path, out: Path, *, quiet: bool = False) -> subprocess.Popen[str]:
    """`turnbench run CFG` in its own process group, returned once its events.db exists."""
    sink = subprocess.DEVNULL if quiet else subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "run", str(cfg), "--out", str(out)],
        stdout=sink,
        stderr=sink,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*/events.db")):
        time.sleep(0.2)
    return proc
