"""Typed load modes, stages of a run and sweeps: the config's one-line errors, the labels and
ends of stages, a staged run against the simulator read back from events.db, and both
shapes of `turnbench sweep`."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cli_options import turnbench
from conftest import SimProcess
from runs import peak_concurrency, run_bench
from turnbench.capacity.sweep import parse_points
from turnbench.config import RunConfig
from turnbench.config_load import load_config
from turnbench.errors import InputError
from turnbench.metrics.stages import pareto
from turnbench.pacing.arrivals import AllAtOnce, Constant, Recorded
from turnbench.pacing.modes import ParallelMode, SequentialMode, SessionRateMode, UsersMode
from turnbench.pacing.stages import Timeline, steps

NS = 1_000_000_000

BAD_CONFIGS = {
    "unknown mode": ({"load.mode": "bursty"}, "[load.mode]: unknown load mode; expected"),
    "key of another mode": (
        {"load.mode": "users", "load.rate": 2},
        "[load.rate]: unknown key (got 2); `rate` is for mode session-rate, not users",
    ),
    "rate missing": ({"load.mode": "session-rate"}, "mode session-rate needs `rate`"),
    "stage with no end": (
        {"stages": [{"mode": "users", "users": 2}]},
        "[stages.0]: Value error, a stage needs duration_s",
    ),
    "parallel stage with no count": (
        {"stages": [{"mode": "parallel", "duration_s": 1}]},
        "a parallel stage needs sessions",
    ),
    "no stage": ({"stages": []}, "[stages]: List should have at least 1 item"),
    "unknown stage mode": (
        {"stages": [{"mode": "ramp", "duration_s": 1}]},
        "[stages.0.mode]: unknown load mode",
    ),
    "stages and a load mode": (
        {"stages": [{"mode": "users", "duration_s": 1}], "load.users": 3},
        "with stages, each stage has its own mode and duration: remove load.users",
    ),
    "two stages of one name": (
        {"stages": [{"name": "a", "duration_s": 1}, {"name": "a", "duration_s": 1}]},
        "two stages are named 'a'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_load_and_stages_are_one_line(case: str) -> None:
    overrides, words = BAD_CONFIGS[case]
    with pytest.raises(InputError) as err:
        load_config(None, overrides)
    assert "\n" not in str(err.value) and words in str(err.value), str(err.value)


def test_each_mode_is_its_own_model_with_its_pacer() -> None:
    rng = random.Random(1)
    parallel = RunConfig.model_validate({"load": {"mode": "parallel", "sessions": 3}}).load
    assert isinstance(parallel, ParallelMode) and not parallel.closed_loop
    assert isinstance(parallel.pacer(rng, None), AllAtOnce)
    rate = RunConfig.model_validate({"load": {"mode": "session-rate", "rate": 4}}).load
    assert isinstance(rate, SessionRateMode) and rate.rate == 4
    pacer = rate.model_copy(update={"arrival": "constant"}).pacer(rng, None)
    assert isinstance(pacer, Constant) and [pacer.due(k) for k in range(3)] == [0, 0.25, 0.5]
    trace = rate.model_copy(update={"arrival": "trace", "time_scale": 2.0})
    assert isinstance(trace.pacer(rng, [1.0, 3.0]), Recorded)
    users = RunConfig().load  # no mode given: users
    assert isinstance(users, UsersMode) and users.closed_loop and users.user_count() == 4
    sequential = RunConfig.model_validate({"load": {"mode": "sequential"}}).load
    assert isinstance(sequential, SequentialMode) and sequential.user_count() == 1
    with pytest.raises(TypeError, match="closed loop"):
        users.pacer(rng, None)


def test_stages_follow_one_another_and_label_rows_by_intended_time() -> None:
    cfg = RunConfig.model_validate(
        {
            "load": {"warmup_s": 0.5},
            "stages": [
                {"name": "ramp", "mode": "users", "users": 2, "duration_s": 2},
                {"mode": "session-rate", "rate": 3, "duration_s": 1.5, "at_end": "cut"},
            ],
        }
    )
    plan = steps(cfg)
    assert [(s.name, s.start_ns, s.end_ns, s.cut) for s in plan] == [
        ("ramp", 0, 2 * NS, False),
        ("stage-2", 2 * NS, int(3.5 * NS), True),
    ]
    assert cfg.duration_s == 3.5 and cfg.waits_for_session_ends and not cfg.chains_sessions
    timeline = Timeline(cfg)
    labels = [timeline.at(int(t * NS)) for t in (0.1, 0.5, 1.99, 2.0, 3.4, 9.0)]
    assert labels == ["warmup", "ramp", "ramp", "stage-2", "stage-2", "stage-2"]
    one = RunConfig()
    assert [s.name for s in steps(one)] == ["main"] and Timeline(one).at(5 * NS) == "main"


@pytest.mark.parametrize(
    ("spec", "over", "points"),
    [
        ("2,4,8", "users", (2, 4, 8)),
        ("2..32x2", "users", (2, 4, 8, 16, 32)),
        ("1..4", "users", (1, 2, 3, 4)),
        ("0.5..2+0.5", "rate", (0.5, 1.0, 1.5, 2.0)),
        ("1..10x3", "rate", (1, 3, 9)),
        ("4,4,2", "users", (4, 2)),
    ],
)
def test_sweep_points(spec: str, over: Any, points: tuple[float, ...]) -> None:
    assert parse_points(spec, over) == points


@pytest.mark.parametrize(
    ("spec", "over", "words"),
    [
        ("8..2", "users", "--users '8..2': the range is empty (8 > 2)"),
        ("2..8x1", "users", "a geometric range needs a factor above 1"),
        ("1.5,2", "users", "a user count is a whole number"),
        ("0..4", "rate", "every load must be above 0"),
        ("a,b", "rate", "'a' is not a number"),
        (",", "rate", "give a list (2,4,8) or a range (2..32x2)"),
        ("1..1000000", "rate", "more than 1000 points"),
    ],
)
def test_bad_sweep_points_are_one_line(spec: str, over: Any, words: str) -> None:
    with pytest.raises(InputError, match=None) as err:
        parse_points(spec, over)
    assert words in str(err.value)


def test_the_pareto_frontier_keeps_the_points_nothing_beats() -> None:
    def point(name: str, total: float, per_user: float) -> Any:  # the fields pareto reads
        return SimpleNamespace(
            name=name, output_tokens_per_s=total, output_tokens_per_s_per_user=per_user
        )

    points = [point("a", 100, 50), point("b", 200, 40), point("c", 150, 30), point("d", 300, 10)]
    assert [p.name for p in pareto(points)] == ["a", "b", "d"]  # c is beaten by b


def _staged(tmp_path: Path, sim: SimProcess, *, cut: bool) -> Any:
    return run_bench(
        tmp_path,
        {
            "name": "staged",
            "target": {"url": sim.url, "metrics_interval_s": 0},
            "workload": {"type": "synthetic", "turns": 3, "input_tokens": 16, "output_tokens": 4},
            "session": {"think_time": 0.05, "ignore_eos": True},
            "stages": [
                {"name": "warmup", "mode": "users", "users": 1, "duration_s": 0.6},
                {"name": "two", "mode": "users", "users": 2, "duration_s": 1.2},
                {"name": "five", "mode": "users", "users": 5, "duration_s": 1.2,
                 "at_end": "cut" if cut else "continue"},
                {"name": "open", "mode": "session-rate", "rate": 8, "arrival": "constant",
                 "duration_s": 1.0},
            ],
            "slo": {"tiers": EASY_AND_IMPOSSIBLE},
        },
    )  # fmt: skip


EASY_AND_IMPOSSIBLE = {
    "easy": {"objectives": ["ttft p90 <= 60s", "tpot p90 <= 60s"]},
    "impossible": {"objectives": ["ttft p50 <= 0.001ms"]},
}
"""Two tiers every request meets and none can (1 µs to the first token, over real HTTP)."""


def _check_stage_goodput(result: Any) -> None:
    """Each stage's goodput in both tiers against its own rows in events.db, and the stages'
    judged requests adding up to the run's (the warm-up stage judged on nothing, as the run
    leaves it out)."""
    summary = result.summary
    for tier in EASY_AND_IMPOSSIBLE:
        totals = 0
        for stage in summary["stages"]:
            good = stage["goodput"][tier]
            judged = result.rows(
                "SELECT status FROM requests WHERE stage = ? AND status IN ('ok', 'error')",
                stage["name"],
            )
            requests = good["requests"]["all"]
            expected = 0 if stage["name"] == "warmup" else len(judged)
            assert requests["total"] == expected, (tier, stage["name"])
            assert requests["good"] <= stage["requests"]["ok"]
            totals += requests["total"]
            if stage["name"] == "warmup":
                continue
            ratio = 1.0 if tier == "easy" else 0.0
            assert requests["ratio"] == ratio and good["output_tokens"]["all"]["ratio"] == ratio
            if tier == "impossible":
                assert good["conversations"]["good"] == 0
            assert requests["per_s"] == pytest.approx(
                requests["good"] / (stage["end_s"] - stage["start_s"])
            )
        assert totals == summary["slo"]["tiers"][tier]["requests"]["all"]["total"], tier
    assert "good % easy" in result.output and "good % impossible" in result.output


def test_a_staged_run_holds_each_stages_load_and_reports_each_stage(
    tmp_path: Path, fast_sim: SimProcess
) -> None:
    result = _staged(tmp_path, fast_sim, cut=True)
    labels = {r["stage"] for r in result.attempts}
    assert labels == {"warmup", "two", "five", "open"}
    for name, start, end in (("two", 0.6, 1.8), ("five", 1.8, 3.0), ("open", 3.0, 4.0)):
        rows = result.rows("SELECT * FROM requests WHERE stage = ?", name)
        assert all(start * NS <= r["t_intended_ns"] < end * NS for r in rows), name
    for name, users in (("two", 2), ("five", 5)):
        sessions = result.rows(
            "SELECT t_start_ns, t_end_ns FROM sessions WHERE stage = ? AND outcome = 'completed'",
            name,
        )
        assert peak_concurrency([(s[0], s[1]) for s in sessions]) <= users, name
    # the cut at the end of `five` ends its sessions in flight there: none plays on
    cut = result.rows("SELECT * FROM sessions WHERE stage = 'five' AND outcome = 'unfinished'")
    assert cut and all(3.0 * NS <= s["t_end_ns"] < 3.1 * NS for s in cut)
    assert not _moved(result, "five", "open")
    summary = result.summary
    stages = {s["name"]: s for s in summary["stages"]}
    assert list(stages) == ["warmup", "two", "five", "open"]
    assert stages["five"]["level"] == 5 and stages["open"]["mode"] == "session-rate"
    assert all(not {"folder", "end_reason"} & set(s) for s in stages.values())  # a point's
    for s in stages.values():
        assert s["start_s"] <= s["window"]["start_s"] < s["window"]["end_s"] == s["end_s"]
        done = result.rows(
            "SELECT t_end_ns - t_start_ns FROM sessions WHERE outcome = 'completed' "
            "AND t_end_ns BETWEEN ? AND ?",
            s["window"]["start_s"] * NS,
            s["window"]["end_s"] * NS,
        )
        assert s["conversations_per_h"] == pytest.approx(len(done) * 3600 / s["window"]["s"])
        turns = {t["turn"]: t for t in s["by_turn"]}
        for k in (1, 2, 3):  # the synthetic conversations have 3 turns
            ttfts = [
                (r[1] - r[0]) / 1e6
                for r in result.rows(
                    "SELECT t_sent_ns, t_first_token_ns FROM requests WHERE stage = ? "
                    "AND status = 'ok' AND turn_index = ? AND t_end_ns BETWEEN ? AND ?",
                    s["name"], k, s["window"]["start_s"] * NS, s["window"]["end_s"] * NS,
                )
            ]  # fmt: skip
            assert turns[k]["ttft_ms"]["count"] == len(ttfts), (s["name"], k)
            if ttfts:
                assert turns[k]["ttft_ms"]["p90"] == pytest.approx(float(np.percentile(ttfts, 90)))
        assert turns[4]["ttft_ms"]["count"] == 0
        if done:  # one user's rate: 3600 / the median length
            assert 3600 / s["conversations_per_h_per_user"] == pytest.approx(
                statistics.median(d[0] / NS for d in done)
            )
    # throughput rises with the users (each request takes the same time on this simulator)
    assert stages["five"]["requests_per_s"] > stages["two"]["requests_per_s"]
    assert summary["requests"]["warmup"] == len(result.rows(
        "SELECT 1 FROM requests WHERE stage = 'warmup'"
    ))  # fmt: skip
    assert {p["name"] for p in summary["frontier"]} <= {"two", "five", "open"}
    assert "Stages (figures over each stage's steady-state window)" in result.output
    assert "Pareto frontier" in result.output
    _check_stage_goodput(result)
    page = (result.path / "report.html").read_text(encoding="utf-8")
    for panel in ("curve_ttft", "curve_tpot"):  # the throughput-latency curves of the stages
        assert f"id='panel-{panel}'" in page, panel
    assert "turn 1 p90" in page and "turn 3 p90" in page  # and per turn index
    assert "SLO easy: ttft p90 &lt;= 60000 ms" in page  # the SLO line (Bokeh escapes `<`)


def test_at_a_continue_boundary_sessions_play_on_into_the_next_stage(
    tmp_path: Path, fast_sim: SimProcess
) -> None:
    result = _staged(tmp_path, fast_sim, cut=False)
    assert not result.rows("SELECT 1 FROM sessions WHERE stage = 'five' AND outcome != 'completed'")
    assert _moved(result, "five", "open")  # its sessions sent their later turns in `open`


def _moved(result: Any, started: str, sent: str) -> list[Any]:
    """Requests sent in stage `sent` by sessions that started in stage `started`."""
    return result.rows(
        "SELECT r.session_id FROM requests r JOIN sessions s USING (session_id) "
        "WHERE s.stage = ? AND r.stage = ?",
        started,
        sent,
    )


def test_a_run_with_no_stages_reports_as_before(tmp_path: Path, fast_sim: SimProcess) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"url": fast_sim.url, "metrics_interval_s": 0},
            "workload": {"type": "synthetic", "conversations": 4, "turns": 2},
            "load": {"mode": "users", "users": 2},
        },
    )
    assert {r["stage"] for r in result.attempts} == {"main"}
    assert result.summary["stages"] == [] and result.summary["frontier"] == []
    assert "Stages" not in result.output


SWEEP_CONFIG = """
target: {metrics_interval_s: 0}
session: {ignore_eos: true}
workload: {type: synthetic, turns: 2, input_tokens: 16, output_tokens: 4}
"""


def test_a_sweep_as_runs_writes_each_point_and_the_frontier(
    tmp_path: Path, fast_sim: SimProcess
) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP_CONFIG + SWEEP_SLO)
    proc = turnbench(
        "sweep", "s.yaml", "--target", fast_sim.url, "--users", "1..4x2", "--as", "runs",
        "--point-duration", "1", "--cooldown", "0", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (folder,) = (tmp_path / "out").iterdir()
    record = json.loads((folder / "sweep.json").read_text())
    assert [p["level"] for p in record["points"]] == [1, 2, 4] and record["ended"] == "completed"
    for p in record["points"]:
        assert (folder / p["folder"] / "events.db").exists()
        assert not (folder / p["folder"] / "report.html").exists()
        assert p["output_tokens_per_s"] > 0 and p["ttft_ms"]["p90"] is not None
        assert p["window"]["start_s"] >= 0.25 and p["conversations_per_h"] is not None
        assert [t["turn"] for t in p["by_turn"]] == [1, 2, 3, 4]
        assert p["by_turn"][0]["ttft_ms"]["count"] > 0
        assert p["by_turn"][3]["ttft_ms"]["count"] == 0  # 2 turns a conversation
        assert set(p["goodput"]) == {"fast"}
        assert not {"start_s", "end_s", "at_end"} & set(p)  # a stage's, not a point's
    objectives = record["slo"]["tiers"]["fast"]["objectives"]
    assert [(o["metric"], o["threshold"]) for o in objectives] == [("ttft", 30000), ("tpot", 20000)]
    assert "good" in proc.stdout and "conv" in proc.stdout  # (headers wrap on a narrow pipe)
    assert record["frontier"] and "Pareto frontier" in proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"sweep: {Path('out') / folder.name / 'sweep.json'}"
    assert lines[-2] == f"sweep.html: {Path('out') / folder.name / 'sweep.html'}"
    page = (folder / "sweep.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=[\"']?https?://", page)  # self-contained
    for panel in ("curve_ttft", "curve_tpot", "frontier"):
        assert f"id='panel-{panel}'" in page, panel
    assert "SLO fast: ttft p90 &lt;= 30000 ms" in page and "SLO fast: tpot p99" in page
    assert all(p["name"] in page for p in record["points"])


SWEEP_SLO = """
slo: {tiers: {fast: {objectives: ["ttft p90 <= 30s", "tpot p99 <= 20s"]}}}
"""


def test_a_sweep_as_stages_is_one_run(tmp_path: Path, fast_sim: SimProcess) -> None:
    (tmp_path / "s.yaml").write_text(SWEEP_CONFIG)
    proc = turnbench(
        "sweep", "s.yaml", "--target", fast_sim.url, "--rate", "4,8",
        "--point-duration", "1", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (folder,) = (tmp_path / "out").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert [(s["name"], s["level"]) for s in summary["stages"]] == [("rate-4", 4), ("rate-8", 8)]
    assert "rate-8" in proc.stdout


def test_ctrl_c_during_a_sweep_keeps_every_finished_point(
    tmp_path: Path, fast_sim: SimProcess
) -> None:
    """SIGINT during the second point of a series: the first stays reported, the second is
    kept marked interrupted, sweep.json says so, exit 130."""
    (tmp_path / "s.yaml").write_text(SWEEP_CONFIG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "sweep", "s.yaml", "--target", fast_sim.url,
         "--users", "1,2,3", "--as", "runs", "--point-duration", "3", "--cooldown", "0",
         "--out", "out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _rows(tmp_path.glob("out/*/*-point-02-*/events.db")):
        time.sleep(0.1)  # until the second point's run records requests: well inside it
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    (folder,) = (tmp_path / "out").iterdir()
    record = json.loads((folder / "sweep.json").read_text())
    assert [p["end_reason"] for p in record["points"]] == ["duration", "interrupted"]
    assert record["ended"] == "interrupted"
    assert stdout.strip().splitlines()[-1] == f"sweep: {Path('out') / folder.name / 'sweep.json'}"


def _rows(dbs: Iterator[Path]) -> int:
    """Requests recorded so far in the first of `dbs` (0 when there is none yet)."""
    for db in dbs:
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1)
            try:
                return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
            finally:
                conn.close()
    return 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--users", "8..2"], "error: --users '8..2': the range is empty (8 > 2)"),
        ([], "error: give the points as --users POINTS or --rate POINTS"),
        (["--users", "2", "--as", "both"], "error: --as expects stages or runs"),
        (["--users", "2", "--set", "stages=[{duration_s: 1}]"], "remove the config's stages"),
    ],
)
def test_bad_sweeps_are_one_line_and_leave_nothing(
    args: list[str], words: str, tmp_path: Path
) -> None:
    proc = turnbench("sweep", "--target", "http://127.0.0.1:9", *args, "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_request_limit_ends_a_staged_run_at_once(tmp_path: Path, fast_sim: SimProcess) -> None:
    """max_requests reached in the first of two 30 s stages: the run ends then, not after
    the stages' time."""
    result = run_bench(
        tmp_path,
        {
            "target": {"url": fast_sim.url, "metrics_interval_s": 0},
            "workload": {"type": "synthetic", "turns": 2, "output_tokens": 4},
            "load": {"max_requests": 12},
            "stages": [
                {"mode": "users", "users": 2, "duration_s": 30},
                {"mode": "session-rate", "rate": 5, "duration_s": 30},
            ],
        },
    )
    summary = result.summary
    assert summary["run"]["end_reason"] == "max_requests"
    assert summary["timeline"]["last_end_s"] < 5
    assert {r["stage"] for r in result.attempts} == {"stage-1"}
