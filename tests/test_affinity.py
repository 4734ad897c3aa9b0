"""Did sessions stick? The simulator's replicas behind its router, the `replica` column the
client fills from the response header, and the affinity figures built from events.db.

The end-to-end cases run real simulators on 127.0.0.1 (three replicas, a sticky and a
round-robin router) and a multi-turn `turnbench run` against each, then read events.db."""

from __future__ import annotations

import sqlite3
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conftest import start_sim
from runs import RunResult, run_bench
from turnbench.client.attempt import Attempt
from turnbench.metrics.affinity import describe_affinity
from turnbench.metrics.summary import summarize
from turnbench.record.schema import ATTEMPT_COLUMNS, DDL
from turnbench.report.tables import affinity
from turnbench.sim.config import SimConfig
from turnbench.sim.router import Replica, Router, least_loaded_index, sticky_index

REPLICAS = 3
NAMES = {f"replica-{i}" for i in range(REPLICAS)}
# Replies of 4 to 32 tokens at ~1 ms a token: turns end at varied times, so the requests of
# the users interleave differently every round (a lockstep order would make round-robin send
# every session to the same replica each time, or to another one each time).
SIM_ARGS = ("--replicas", str(REPLICAS), "--decode-ms-base", "1")
CONVERSATIONS = 30
"""Of 4 turns each: 90 later turns, so round-robin's share that moved is within ±0.2 of 2/3
at about 3.5 standard deviations."""


# ---------------------------------------------------------------------------------------------
# the router's choices


def _replicas(n: int) -> list[Replica]:
    cfg = SimConfig()
    return [Replica(i, cfg) for i in range(n)]


def test_sticky_index_is_crc32_of_the_session() -> None:
    """The same session always maps to the same replica, in any process; sessions spread."""
    assert sticky_index("s17", 3) == zlib.crc32(b"s17") % 3
    assert {sticky_index(f"s{i}", 3) for i in range(100)} == {0, 1, 2}


def test_least_loaded_takes_the_fewest_and_rotates_ties() -> None:
    assert least_loaded_index([2, 0, 1], 0) == 1
    assert least_loaded_index([0, 0, 0], 2) == 2  # a tie goes to the first from `start`
    assert least_loaded_index([0, 1, 0], 1) == 2
    assert least_loaded_index([0, 1, 1], 4) == 0  # `start` wraps around


def test_router_policies() -> None:
    replicas = _replicas(3)
    rr = Router("round-robin", replicas, seed=0)
    assert [rr.choose("s1").name for _ in range(4)] == [
        "replica-0",
        "replica-1",
        "replica-2",
        "replica-0",
    ]
    sticky = Router("sticky", replicas, seed=0)
    assert {sticky.choose("s5").name for _ in range(5)} == {f"replica-{sticky_index('s5', 3)}"}
    draws = [Router("random", replicas, seed=7).choose(None).name for _ in range(3)]
    assert len(set(draws)) == 1  # seeded: the same first draw every time
    seq = Router("random", replicas, seed=7)
    assert len({seq.choose(None).name for _ in range(60)}) == 3
    assert sum(r.requests for r in replicas) == 4 + 5 + 3 + 60


def test_least_loaded_and_sticky_without_a_session() -> None:
    """Least-loaded counts running plus waiting; a sticky request with no session header
    has nothing to stick to and goes to the least-loaded replica."""
    replicas = _replicas(3)
    replicas[0].scheduler.running = 2
    replicas[1].scheduler.running = 1
    replicas[2].scheduler.running = 3
    assert Router("least-loaded", replicas, seed=0).choose("s1").name == "replica-1"
    assert Router("sticky", replicas, seed=0).choose(None).name == "replica-1"


# ---------------------------------------------------------------------------------------------
# the figures, from a hand-built events.db


def _db(path: Path, rows: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    for i, row in enumerate(rows):
        att = Attempt(
            stage=row.get("stage", "main"),
            worker=0,
            session_id=row["s"],
            conversation_id="c",
            turn_index=row["turn"],
            attempt=row.get("attempt", 1),
            t_intended_ns=i,
            t_sent_ns=1000 * i,
            t_first_token_ns=1000 * i + row.get("ttft", 10) * 1_000_000,
            prompt_tokens=row.get("prompt", 100),
            cached_tokens=row.get("cached"),
            status=row.get("status", "ok"),
            replica=row["r"],
        )
        marks = ", ".join("?" * len(ATTEMPT_COLUMNS))
        conn.execute(
            f"INSERT INTO requests ({', '.join(ATTEMPT_COLUMNS)}) VALUES ({marks})",
            tuple(getattr(att, c) for c in ATTEMPT_COLUMNS),
        )
    return conn


def test_affinity_figures(tmp_path: Path) -> None:
    """Consecutive ok turns with a known replica are compared; failed attempts, turns
    without a replica and a session's first turn are not; warm-up turns are compared
    against but not counted."""
    conn = _db(
        tmp_path / "events.db",
        [
            {"s": "s1", "turn": 1, "r": "A", "cached": 0},
            {"s": "s1", "turn": 2, "r": "A", "cached": 80, "ttft": 5},  # stayed
            {"s": "s1", "turn": 3, "r": "B", "cached": 0, "ttft": 50},  # moved
            {"s": "s1", "turn": 4, "r": "B", "cached": 90, "ttft": 7},  # stayed
            {"s": "s2", "turn": 1, "r": "A", "cached": 0},
            {"s": "s2", "turn": 2, "r": "C", "status": "error"},  # a failed attempt: skipped
            {"s": "s2", "turn": 2, "attempt": 2, "r": "A", "cached": 70, "ttft": 6},  # stayed
            {"s": "s2", "turn": 3, "r": None, "cached": 50},  # no replica: skipped
            {"s": "s2", "turn": 4, "r": "B", "cached": 20, "ttft": 40},  # moved (from A)
            {"s": "s3", "turn": 1, "r": "A", "cached": 0},  # one turn: nothing to compare
            {"s": "s4", "turn": 1, "r": "C", "stage": "warmup", "cached": 0},
            {"s": "s4", "turn": 2, "r": "C", "cached": 60, "ttft": 8},  # stayed
        ],
    )
    aff = msgspec.to_builtins(describe_affinity(conn))
    assert aff is not None
    assert aff["replicas"] == 3
    assert aff["requests_by_replica"] == {"A": 5, "B": 3, "C": 1}
    assert aff["sessions"] == 3  # s1, s2, s4
    assert aff["sessions_never_moved"] == 1  # s4
    assert aff["changes_per_session"] == {"0": 1, "1": 2}
    assert aff["replica_changes"]["max"] == 1
    assert aff["migration_rate"] == pytest.approx(2 / 6)
    assert aff["stayed"]["turns"] == 4
    assert aff["stayed"]["cached_ratio"] == pytest.approx((80 + 90 + 70 + 60) / 400)
    assert aff["stayed"]["ttft_ms"]["p50"] == pytest.approx(6.5)
    assert aff["moved"]["turns"] == 2
    assert aff["moved"]["cached_ratio"] == pytest.approx(20 / 200)
    assert aff["moved"]["ttft_ms"]["p50"] == pytest.approx(45)
    conn.commit()
    summary = summarize(tmp_path / "events.db")
    assert msgspec.to_builtins(summary.affinity) == aff
    table = affinity(summary)
    assert table is not None
    rows = {label: value for label, value in table.rows}
    assert rows["migration rate % (later turns that moved)"] == "33.3"
    assert rows["sessions that never moved"] == "1 (33.3 %)"
    assert rows["cached prompt tokens % stayed / moved"] == "75.0 / 10.0"


def test_no_replica_no_affinity(tmp_path: Path) -> None:
    """No row names a replica, or the column is older than the run: no figures, no table."""
    conn = _db(tmp_path / "events.db", [{"s": "s1", "turn": t, "r": None} for t in (1, 2)])
    assert describe_affinity(conn) is None
    conn.commit()
    assert affinity(summarize(tmp_path / "events.db")) is None
    old = sqlite3.connect(tmp_path / "old.db")
    old.execute("CREATE TABLE requests (session_id TEXT, turn_index INTEGER, status TEXT)")
    assert describe_affinity(old) is None


# ---------------------------------------------------------------------------------------------
# end to end: simulators with replicas, a multi-turn run against each


def _config(url: str, **target: Any) -> dict[str, Any]:
    return {
        "name": "affinity",
        "target": {"url": url, **target},
        "workload": {
            "type": "synthetic",
            "conversations": CONVERSATIONS,
            "turns": 4,
            "input_tokens": 64,
            "output_tokens": {"dist": "uniform", "min": 4, "max": 32},
        },
        "session": {"think_time": 0, "ignore_eos": True},
        "load": {"mode": "users", "users": 7},
    }


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return str(resp.read().decode())


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[RunResult, str]]:
    """The run against a sticky and a round-robin router, with each simulator's /metrics
    after it."""
    out: dict[str, tuple[RunResult, str]] = {}
    for router in ("sticky", "round-robin"):
        sim = start_sim(*SIM_ARGS, "--router", router)
        try:
            result = run_bench(tmp_path_factory.mktemp(router), _config(sim.v1))
            out[router] = (result, _metrics(sim.url))
        finally:
            sim.stop()
    return out


def _ok_replicas(result: RunResult) -> list[str | None]:
    return [r["replica"] for r in result.rows("SELECT replica FROM requests WHERE status = 'ok'")]


def test_sticky_sessions_stay(routed: dict[str, tuple[RunResult, str]]) -> None:
    """Behind a sticky router no session moves, every replica serves some, and turns after
    the first find most of their prompt cached."""
    result, metrics = routed["sticky"]
    replicas = _ok_replicas(result)
    assert len(replicas) == CONVERSATIONS * 4
    assert set(replicas) == NAMES
    aff = result.summary["affinity"]
    assert aff["migration_rate"] == 0
    assert aff["sessions"] == aff["sessions_never_moved"] == CONVERSATIONS
    assert aff["moved"]["turns"] == 0
    assert aff["stayed"]["cached_ratio"] > 0.5
    assert "Session affinity" in result.output
    served = {
        line.split('replica="')[1].split('"')[0]: int(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("turnbench_sim_replica_requests_total{")
    }
    assert served == {name: replicas.count(name) for name in NAMES}


def test_round_robin_sessions_move(routed: dict[str, tuple[RunResult, str]]) -> None:
    """Round-robin moves about (N−1)/N of the later turns, and the hit ratio falls: moved
    turns find less cached than the turns that stayed, the run less than the sticky one."""
    result, _ = routed["round-robin"]
    sticky, _ = routed["sticky"]
    assert set(_ok_replicas(result)) == NAMES
    aff = result.summary["affinity"]
    assert abs(aff["migration_rate"] - (REPLICAS - 1) / REPLICAS) < 0.2
    assert aff["moved"]["cached_ratio"] < aff["stayed"]["cached_ratio"]
    assert aff["moved"]["cached_ratio"] < sticky.summary["affinity"]["stayed"]["cached_ratio"]
    ratio = result.summary["requests"]["cached_token_ratio"]
    assert ratio < sticky.summary["requests"]["cached_token_ratio"] - 0.15
    assert (result.path / "report.html").read_text().count("Session affinity") == 1


def test_header_name_is_configurable(tmp_path: Path) -> None:
    """The simulator's header name and the client's are both settings (matched without
    regard to case); a client told to read none records none."""
    sim = start_sim(*SIM_ARGS, "--router", "random", "--set", "replica_header=X-Backend")
    try:
        cfg = _config(sim.v1, replica_header="x-backend")
        cfg["workload"]["conversations"] = 4
        named = run_bench(tmp_path / "named", cfg)
        cfg["target"]["replica_header"] = None
        unread = run_bench(tmp_path / "unread", cfg)
    finally:
        sim.stop()
    assert set(_ok_replicas(named)) <= NAMES and None not in _ok_replicas(named)
    assert set(_ok_replicas(unread)) == {None}
    assert unread.summary["affinity"] is None


def test_single_server_sends_no_replica(tmp_path: Path) -> None:
    """A simulator of one replica (the default) names none: the column stays NULL, the
    summary's affinity is null and the report has no affinity table."""
    sim = start_sim()
    try:
        cfg = _config(sim.v1)
        cfg["workload"]["conversations"] = 4
        result = run_bench(tmp_path, cfg)
        metrics = _metrics(sim.url)
    finally:
        sim.stop()
    assert set(_ok_replicas(result)) == {None}
    assert result.summary["affinity"] is None
    assert "Session affinity" not in result.output
    assert 'replica="' not in metrics
