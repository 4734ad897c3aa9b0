"""Worker processes (issue 5): sessions stay on their worker, caps hold across workers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sqlite3
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from runs import assert_one_in_flight, peak_concurrency, request_intervals, run_bench, start_run
from turnbench.engine.remote import shares


def test_shares_add_up_to_the_total() -> None:
    assert shares(None, 3) == [None, None, None]
    assert shares(10, 3) == [4, 3, 3]
    assert shares(2, 4) == [1, 1, 0, 0]


def _cfg(workers: int, load: dict, **workload: object) -> dict:
    return {
        "engine": {"workers": workers},
        "target": {"sim_args": ["--ttft-base-ms", "3", "--decode-ms-base", "1"]},
        "workload": {
            "type": "synthetic",
            "conversations": 12,
            "turns": 4,
            "input_tokens": 12,
            "output_tokens": 6,
            "system_prompt_tokens": 40,
            "system_prompt_groups": 3,
            **workload,
        },
        "session": {"ignore_eos": True, "think_time": 0.02},
        "load": load,
    }


def test_every_turn_of_a_session_runs_on_its_worker(tmp_path: Path) -> None:
    result = run_bench(tmp_path, _cfg(2, {"mode": "parallel"}))
    rows = result.attempts
    assert len(rows) == 48 and all(r["status"] == "ok" for r in rows)
    workers_of = defaultdict(set)
    for r in rows:
        workers_of[r["session_id"]].add(r["worker"])
    assert all(len(w) == 1 for w in workers_of.values())
    assert {r["worker"] for r in rows} == {0, 1}
    sessions = result.sessions
    assert all(s["worker"] == next(iter(workers_of[s["session_id"]])) for s in sessions)
    assert len(result.rows("SELECT * FROM workers")) == 2
    assert_one_in_flight(result)
    # the same live-history invariant as in one process
    for session_rows in result.by_session().values():
        for a, b in itertools.pairwise(session_rows):
            assert b["prompt_tokens"] == a["prompt_tokens"] + 6 + 3 + 12 + 3


def test_a_shared_prefix_group_stays_on_one_worker(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "engine": {"workers": 2},
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {
                "type": "shared_prefix",
                "num_groups": 4,
                "prompts_per_group": 3,
                "system_prompt_len": 64,
                "question_len": 8,
                "output_len": 4,
                "as_sessions": True,
                "cycle": True,
            },
            "load": {"mode": "users", "users": 4, "sessions": 12},
        },
    )
    groups = defaultdict(set)
    for s in result.sessions:
        groups[s["conversation_id"].split("#")[0]].add(s["worker"])
    assert len(groups) == 4 and all(len(w) == 1 for w in groups.values())
    assert {w for ws in groups.values() for w in ws} == {0, 1}


def test_caps_hold_across_workers(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        _cfg(2, {"mode": "users", "users": 5, "max_in_flight": 3, "max_requests": 30}, cycle=True),
    )
    rows = result.attempts
    assert len(rows) == 30
    assert peak_concurrency(request_intervals(rows)) <= 3
    sessions = [(s["t_start_ns"], s["t_end_ns"]) for s in result.sessions]
    assert peak_concurrency(sessions) <= 5


def test_a_dead_worker_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    def kill_a_worker() -> None:
        """Kill worker 1 (its pid from events.db's workers table) 1.5 s into the run."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for db in (tmp_path / "runs").glob("*/events.db"):
                with (
                    contextlib.suppress(sqlite3.Error),
                    contextlib.closing(sqlite3.connect(db)) as conn,
                ):
                    pids = dict(conn.execute("SELECT worker, pid FROM workers"))
                    if len(pids) == 2:
                        time.sleep(1.5)
                        os.kill(pids[1], signal.SIGKILL)
                        return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_worker)
    killer.start()
    try:
        result = run_bench(
            tmp_path,
            _cfg(2, {"mode": "users", "users": 4, "duration_s": 4, "end": "cut"}, cycle=True),
        )
    finally:
        killer.join()
    assert "worker" in result.output and "died" in result.output
    sessions = result.sessions
    assert any(s["outcome"] == "unfinished" for s in sessions)
    late = [r for r in result.attempts if r["t_sent_ns"] > 3e9]
    assert late and {r["worker"] for r in late} == {late[0]["worker"]}


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_ctrl_c_with_workers_leaves_a_valid_db(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text(
        "engine: {workers: 2}\n"
        "target: {sim_args: ['--decode-ms-base', '20']}\n"
        "workload: {type: synthetic, conversations: 8, cycle: true, turns: 5,"
        " input_tokens: 10, output_tokens: 40}\n"
        "session: {ignore_eos: true}\n"
        "load: {mode: users, users: 4, duration_s: 120, end: cut}\n"
    )
    out = tmp_path / "runs"
    proc = start_run(cfg, out)
    time.sleep(4)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    (run,) = list(out.iterdir())
    conn = sqlite3.connect(run / "events.db")
    statuses = dict(conn.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))
    conn.close()
    assert statuses.get("cancelled") == 4, statuses
    assert statuses.get("ok", 0) > 0
    assert "died" not in stdout + stderr


def test_large_batches_under_uvloop_never_lose_a_worker(tmp_path: Path) -> None:
    """Hundreds of rows (with every chunk gap) per 50 ms batch: frames larger than a socket
    buffer arrive in pieces; a worker must never be taken for dead because of that."""
    result = run_bench(
        tmp_path,
        {
            "engine": {"workers": 2},
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {
                "type": "synthetic",
                "conversations": 50,
                "cycle": True,
                "turns": 3,
                "input_tokens": 10,
                "output_tokens": 256,
            },
            "session": {"ignore_eos": True},
            "load": {"mode": "users", "users": 64, "duration_s": 3, "end": "cut"},
        },
    )
    assert "died" not in result.output
    rows = result.attempts
    assert {r["worker"] for r in rows} == {0, 1}
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) > 300 and all(r["content_chunks"] == 256 for r in ok)


async def test_a_session_handed_over_early_never_starts_after_the_run_ended() -> None:
    """Open-loop sessions reach a worker ahead of their due time; a stop at time T means no
    session due after T sends anything or leaves a row, while one due before T plays on."""
    import msgspec

    from conftest import start_sim
    from turnbench.config import RunConfig
    from turnbench.engine.worker import Batch, SessionStart, WorkerCore, WorkerSpec
    from turnbench.record.recorder import Rows
    from turnbench.workload.conversation import Conversation, Turn

    sim = start_sim("--zero-delay", "--model", "sim")
    try:
        cfg = RunConfig.model_validate(
            {
                "target": {"url": sim.v1, "model": "sim"},
                "workload": {"type": "synthetic", "conversations": 1},
                "load": {"mode": "session-rate", "rate": 10, "end": "drain"},
            }
        )
        spec = WorkerSpec(0, cfg.model_dump(mode="json"), sim.v1, "sim", None, None, None, {})
        core = WorkerCore(spec)
        await core.open()
        core.begin(time.time_ns())
        conversation = Conversation("c", (Turn(input_tokens=8, max_tokens=4),) * 2)
        now = core.clock()
        # due after the end: never starts
        core.start(SessionStart(0, conversation, now + 300_000_000, 0))
        core.start(SessionStart(1, conversation, now, 0))  # due now: plays both turns (drain)
        core.stop(now + 100_000_000)
        while core.active:
            await asyncio.sleep(0.02)
        payload = core.take_batch()
        await core.close()
    finally:
        sim.stop()
    assert payload is not None
    batch = msgspec.msgpack.decode(payload, type=Batch[Rows])
    assert sorted(index for index, _ in batch.done) == [0, 1]
    assert {a.session_id for a in batch.rows.attempts} == {"s1"}
    assert len(batch.rows.attempts) == 2 and all(a.status == "ok" for a in batch.rows.attempts)
    assert [s.session_id for s in batch.rows.sessions] == ["s1"]
