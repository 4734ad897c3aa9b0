"""End to end against a server we did not write: llama.cpp's llama-server on the CPU.

Why: a simulator we wrote can share our misreadings of the protocol. The server is built by
`../shared/real-server/setup.sh` (`make test` runs it; ~7 minutes the first time). Outside CI
the test is skipped when the server is not built; in CI (CI=true) that is a failure.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port
from runs import assert_one_in_flight, run_bench

SHARED = Path(__file__).resolve().parents[2] / "shared" / "real-server"
pytestmark = pytest.mark.serial  # llama.cpp takes both cores: other tests would slow its turns

INSTALL = Path(
    os.environ.get("TURNBENCH_REAL_SERVER", Path.home() / ".cache" / "turnbench" / "real-server")
)


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    if not (INSTALL / "bin" / "llama-server").exists() or not (SHARED / "start.sh").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the real server is not built in {INSTALL} (make real-server)")
        pytest.skip("llama-server not built: run `make real-server`")
    port = free_port()
    proc = subprocess.run(
        ["bash", str(SHARED / "start.sh"), str(port), str(INSTALL)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PARALLEL": "4", "CTX": "16384"},
    )
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip().splitlines()[-1])
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize(
    ("api", "conversations", "turns"),
    [("chat", 3, 3), ("completions", 2, 2), ("responses", 2, 2), ("anthropic", 2, 2)],
)
def test_multi_turn_sessions_against_llama_cpp(
    tmp_path: Path, llama_url: str, api: str, conversations: int, turns: int
) -> None:
    """llama-server serves all four APIs; each turn's prompt and cached tokens are read from
    that API's own usage fields (Anthropic's as input + cache reads + cache writes). The APIs
    after chat play fewer turns: a CPU llama-server takes seconds a request, and two turns
    already show the second reusing the first."""
    result = run_bench(
        tmp_path,
        {
            "name": f"llama-{api}",
            "target": {"url": llama_url, "api": api, "model": "auto"},
            "workload": {
                "type": "synthetic",
                "conversations": conversations,
                "turns": turns,
                "input_tokens": 40,
                "output_tokens": 12,
                "system_prompt_tokens": 150,
                "system_prompt_groups": 3,
            },
            "session": {"ignore_eos": True},
            "load": {"mode": "users", "users": 2},
        },
    )
    rows = result.attempts
    assert len(rows) == conversations * turns, [r["error_message"] for r in rows]
    assert all(r["status"] == "ok" for r in rows), [r["error_message"] for r in rows]
    assert all(r["token_source"] == "usage" for r in rows)
    assert all(r["completion_tokens"] == 12 for r in rows)
    assert_one_in_flight(result)
    for sid, session in result.by_session().items():
        assert [r["turn_index"] for r in session] == list(range(1, turns + 1)), sid
        for a, b in itertools.pairwise(session):
            assert b["t_sent_ns"] >= a["t_end_ns"]
            assert b["prompt_tokens"] > a["prompt_tokens"] + 12
            # the previous turn's prompt is a prefix of this one: the server reuses it
            assert b["cached_tokens"] >= a["prompt_tokens"] // 2, (
                a["prompt_tokens"],
                b["cached_tokens"],
            )
            # the ideal (counted on the client, its own history in llama.cpp's usage tokens)
            # against llama.cpp's cache_n, which counts whole tokens, not 16-token blocks
            assert b["ideal_cached_tokens"] > 0 and b["ideal_cached_tokens"] % 16 == 0
            assert abs(b["cached_tokens"] - b["ideal_cached_tokens"]) <= 2 * 16, dict(b)
    summary = result.summary
    cache = summary["cache"]
    assert [t["turn"] for t in cache["per_turn"]] == list(range(1, turns + 1))
    assert all(0.8 <= t["kept"] <= 1.2 for t in cache["per_turn"][1:]), cache["per_turn"]
    assert cache["cliff"] is None
    assert summary["run"]["model"] == "gemma-3-270m"
    assert {t["turn"] for t in summary["per_turn"]} == set(range(1, turns + 1))
    assert summary["per_turn"][1]["mean_cached_tokens"] > 0
    # start.sh runs llama-server with --metrics: its /metrics is scraped during the run
    server = summary["server"]
    assert server["names"] == "llama.cpp" and server["scrapes"] >= 2
    assert server["metrics"]["running"] == "llamacpp:requests_processing"
    assert server["running"]["max"] <= 4  # PARALLEL slots
    assert server["prefix_hits"] > 0 and 0 < server["prefix_hit_rate"] < 1


def test_bare_host_of_llama_cpp_finds_its_api_root(tmp_path: Path, llama_url: str) -> None:
    """`--target http://host:port` (no /v1), as AIPerf or vllm bench users type it."""
    host = llama_url.removesuffix("/v1")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable, "-m", "turnbench", "run", "--target", host, "--max-requests", "2",
            "--turns", "2", "--set", "workload.output_tokens=8", "--set", "session.ignore_eos=true",
            "--out", str(out),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"API root: {llama_url} (model gemma-3-270m)" in proc.stdout
    (run_dir,) = list(out.iterdir())
    assert f"url: {llama_url}\n" in (run_dir / "config.yaml").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["ok"] == 2


def test_a_small_capacity_search_against_llama_cpp(tmp_path: Path, llama_url: str) -> None:
    """A capacity search of two short probes (1 and 2 users) against llama.cpp's 4 slots
    ends with an answer, every probe a run folder of successful requests, in CI time
    (< 60 s). A cold llama-server takes seconds over its first request: one request warms
    it first (when this test runs alone), and each probe's warm-up is half of it."""
    warm = run_bench(
        tmp_path / "warm",
        {
            "target": {"url": llama_url, "metrics_interval_s": 0},
            "workload": {"type": "synthetic", "turns": 1, "output_tokens": 4},
            "load": {"mode": "sequential", "sessions": 1},
        },
    )
    assert warm.summary["requests"]["ok"] == 1
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable, "-m", "turnbench", "capacity", "--target", llama_url,
            "--slo", "e2e.p90=20s", "--max", "2", "--max-probes", "2", "--repeats", "0",
            "--probe-duration", "8", "--warmup", "4", "--cooldown", "0", "--min-sessions", "0",
            "--set", "workload.turns=2", "--set", "workload.output_tokens=4",
            "--set", "workload.input_tokens=16", "--set", "session.ignore_eos=true",
            "--set", "target.metrics_interval_s=0", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (folder,) = list(out.iterdir())
    record = json.loads((folder / "search.json").read_text())
    assert record["answer"]["kind"] in ("holds", "holds_at_max", "fails_at_start", "not_bracketed")
    assert record["elapsed_s"] < 60, record["elapsed_s"]
    assert 1 <= len(record["probes"]) <= 2
    for probe in record["probes"]:
        assert probe["requests_ok"] > 0 and (folder / probe["folder"] / "events.db").exists()
    assert proc.stdout.strip().splitlines()[-1] == f"report: {folder / 'report.html'}"
