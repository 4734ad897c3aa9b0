"""The live progress line: TTFT percentiles of the last seconds, added up over workers.

The line only shows on a terminal, so the run is given one (a pseudo-terminal); the
percentiles it shows are checked against the exact ones events.db holds.
"""

from __future__ import annotations

import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from turnbench.engine.live_latency import LiveLatency
from turnbench.report.progress import merged

LINE = re.compile(r"requests ok +(\d+) .*TTFT p50 +(\d+) p90 +(\d+) ms")


def _on_a_terminal(args: list[str], cwd: Path) -> str:
    """Run `turnbench` with a pseudo-terminal as its stdout; return all it wrote."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "240", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        cwd=cwd,
        env=env,
    )
    os.close(slave)
    out = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(master)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_live_line_shows_ttft_percentiles(tmp_path: Path, workers: str) -> None:
    out = _on_a_terminal(
        [
            "run",
            "--mode",
            "users",
            "--users",
            "8",
            "--turns",
            "3",
            "--duration",
            "3",
            "--set",
            "session.think_time=0",
            "--set",
            "target.sim_args=['--decode-ms-base', '0.5', '--ttft-base-ms', '5']",
            "--workers",
            workers,
            "--out",
            str(tmp_path / "runs"),
        ],
        tmp_path,
    )
    shown = [LINE.search(part) for part in re.split(r"[\r\n\x1b]", out)]
    lines = [(int(m[1]), int(m[2]), int(m[3])) for m in shown if m is not None]
    assert lines, out[-2000:]
    ok, p50, p90 = lines[-1]
    assert ok > 0 and 0 < p50 <= p90
    (run_dir,) = (tmp_path / "runs").iterdir()
    conn = sqlite3.connect(run_dir / "events.db")
    rows = np.array(
        conn.execute(
            "SELECT t_first_token_ns - t_sent_ns, t_end_ns FROM requests "
            "WHERE status = 'ok' AND t_first_token_ns IS NOT NULL ORDER BY t_end_ns"
        ).fetchall(),
        dtype=np.float64,
    )
    conn.close()
    assert len(rows) >= ok > 50
    # the line counted the first `ok` successes; its percentiles are those of the ones that
    # ended in its last 5 s (the line is drawn within 0.25 s of the last one's end), to the
    # histogram's 1 % and whole milliseconds (with two workers, the batches in flight at
    # that moment blur which ones)
    counted = rows[:ok]
    since = counted[-1, 1] + 0.25e9 - 5e9
    ttft_ms = counted[counted[:, 1] >= since, 0] / 1e6
    for value, exact in ((p50, np.percentile(ttft_ms, 50)), (p90, np.percentile(ttft_ms, 90))):
        assert abs(value - exact) <= 0.05 * exact + 2, (value, exact)


def test_intervals_of_several_workers_add_up() -> None:
    """Two workers' encoded intervals, added, give the percentiles of all their values."""
    rng = np.random.default_rng(7)
    values = rng.lognormal(mean=np.log(80e6), sigma=0.6, size=4000).astype(np.int64)
    workers = [LiveLatency(), LiveLatency()]
    for i, v in enumerate(values):
        workers[i % 2].record(int(v))
    coordinator = LiveLatency()
    for w in workers:
        blob = w.take_encoded()
        assert blob is not None
        coordinator.add_encoded(blob)
        assert w.take_encoded() is None  # taken: the next interval starts empty
    total = merged([(0.0, coordinator.take()), (0.1, LiveLatency().take())])
    assert total is not None and total.get_total_count() == len(values)
    for q in (50, 90, 99):
        exact = np.percentile(values / 1000, q)
        assert abs(total.get_value_at_percentile(q) - exact) <= 0.01 * exact
    assert merged([(0.0, LiveLatency().take())]) is None
