"""Every API end to end against the simulator over HTTP: multi-turn sessions with live
history, each API's usage read into events.db, cached tokens per turn from the simulator's
prefix cache, in the load modes that make sense; Responses chained on the server's stored
history; Anthropic with tool-calling trajectories; the error of an API the server lacks.

turnbench has no non-streamed request option: every API is tested streamed."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conftest import SimProcess, free_port, sim_metric
from runs import RunResult, assert_one_in_flight
from turnbench.config import RunConfig
from turnbench.run import execute

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

WORKLOAD = {
    "type": "synthetic",
    "conversations": 3,
    "turns": 3,
    "input_tokens": 40,
    "output_tokens": 8,
    "system_prompt_tokens": 100,
    "system_prompt_groups": 3,
}
LOADS: dict[str, dict[str, Any]] = {
    "parallel": {"mode": "parallel", "sessions": 3},
    "users": {"mode": "users", "users": 2},
    "session-rate": {
        "mode": "session-rate",
        "arrival": "constant",
        "rate": 20,
        "duration_s": 0.2,
        "end": "drain",
    },
}


def run_bench(tmp_path: Path, config: dict[str, Any]) -> RunResult:
    """`runs.run_bench` without report.html (~2 s a run that these tests do not read)."""
    buf = io.StringIO()
    path = execute(
        RunConfig.model_validate(config),
        base_dir=tmp_path,
        out=tmp_path / "runs",
        console=Console(file=buf, width=160),
        live=False,
        html=False,
    )
    return RunResult(path, buf.getvalue())


def _run(
    tmp_path: Path, sim: SimProcess, target: dict[str, Any], load: str, **cfg: Any
) -> RunResult:
    config = {
        "name": target["api"],
        "target": {"url": sim.v1, **target},
        "workload": WORKLOAD,
        "load": LOADS[load],
        **cfg,
    }
    return run_bench(tmp_path, config)


def _per_turn(result: RunResult) -> dict[tuple[str, int], tuple[int, int]]:
    """(prompt tokens, cached tokens) by conversation and turn."""
    return {
        (r["conversation_id"], r["turn_index"]): (r["prompt_tokens"], r["cached_tokens"])
        for r in result.attempts
    }


@pytest.fixture(scope="module")
def chat_counts(tmp_path_factory: pytest.TempPathFactory, fast_sim: SimProcess) -> dict[Any, Any]:
    """The prompt and cached tokens of the workload sent with chat completions."""
    result = _run(tmp_path_factory.mktemp("chat"), fast_sim, {"api": "chat"}, "users")
    return _per_turn(result)


@pytest.mark.parametrize(
    ("target", "load"),
    [
        ({"api": "completions"}, "parallel"),
        ({"api": "responses"}, "users"),
        ({"api": "responses", "responses_state": "chained"}, "session-rate"),
        ({"api": "anthropic"}, "session-rate"),
        ({"api": "anthropic", "cache_control": []}, "parallel"),
    ],
)
def test_every_api_plays_multi_turn_sessions_with_cached_tokens_from_its_usage(
    tmp_path: Path,
    fast_sim: SimProcess,
    chat_counts: dict[Any, Any],
    target: dict[str, Any],
    load: str,
) -> None:
    """The simulator renders every API's conversation with one template: each turn's prompt
    and cached tokens, read from each API's own usage fields, are chat's."""
    result = _run(tmp_path, fast_sim, target, load)
    rows = result.attempts
    assert len(rows) == 9, [r["error_message"] for r in rows]
    assert all(r["status"] == "ok" for r in rows), [r["error_message"] for r in rows]
    assert all(r["token_source"] == "usage" and r["completion_tokens"] == 8 for r in rows)
    assert_one_in_flight(result)
    for session in result.by_session().values():
        assert [r["turn_index"] for r in session] == [1, 2, 3]
        for r in session[1:]:  # the previous turn's prompt and reply are in the cache
            assert r["cached_tokens"] > 0 and r["cached_tokens"] % 16 == 0, dict(r)
    assert _per_turn(result) == chat_counts
    assert result.summary["per_turn"][1]["mean_cached_tokens"] > 0


def test_chained_responses_need_the_servers_stored_history(
    tmp_path: Path, sim_factory: Any
) -> None:
    """A server that keeps no responses cannot continue a chain: the later turns name a
    previous response it no longer has (404), so their bodies carried no history of their
    own; the stateless mode, whole history in every body, runs on the same server."""
    sim = sim_factory("--set", "zero_delay=true", "--set", "stored_responses=0")
    chained = _run(tmp_path / "a", sim, {"api": "responses", "responses_state": "chained"}, "users")
    by_turn = {(r["turn_index"], r["status"], r["http_status"]) for r in chained.attempts}
    assert by_turn == {(1, "ok", 200), (2, "error", 404), (3, "error", 404)}, by_turn
    assert all("not found" in r["error_message"] for r in chained.attempts if r["turn_index"] > 1)
    stateless = _run(tmp_path / "b", sim, {"api": "responses"}, "users")
    assert all(r["status"] == "ok" for r in stateless.attempts)


@pytest.mark.parametrize("api", ["anthropic", "responses"])
def test_tool_calling_trajectories(tmp_path: Path, fast_sim: SimProcess, api: str) -> None:
    """tau-bench airline trajectories: assistant `tool_calls` go out as `tool_use` blocks
    (Responses: `function_call` items) and `tool` messages as `tool_result` blocks
    (`function_call_output` items), which the simulator validates."""
    result = run_bench(
        tmp_path,
        {
            "name": f"{api}-tools",
            "target": {"url": fast_sim.v1, "api": api},
            "workload": {
                "type": "dataset",
                "path": str(DATA / "tool_calls_sample.json"),
                "messages": {"messages_key": "traj"},
            },
            "session": {"max_tokens": 8},
            "load": {"mode": "parallel", "sessions": 2},
        },
    )
    rows = result.attempts
    assert all(r["status"] == "ok" for r in rows), [r["error_message"] for r in rows]
    sessions = result.sessions
    assert all(s["outcome"] == "completed" for s in sessions)
    assert len(rows) == sum(s["turns_planned"] for s in sessions) > 2
    later = [r for r in rows if r["turn_index"] > 1]
    assert later and all(r["cached_tokens"] > 0 for r in later)
    assert all(r["cached_tokens"] < r["prompt_tokens"] for r in rows)


STREAM_FAULTS = {"http500": "http_5xx", "malformed": "malformed", "truncate": "truncated"}
"""The simulator's faults and the error kind each must be recorded as, in any API."""


@pytest.mark.parametrize("api", ["responses", "anthropic"])
def test_stream_faults_are_read_by_each_apis_own_events(
    tmp_path: Path, sim_factory: Any, api: str
) -> None:
    """A broken event, a stream cut before its end event (`response.completed`,
    `message_stop`) and a 500 with the API's error body: each its own kind, as many as the
    simulator injected."""
    faults = [a for kind in STREAM_FAULTS for a in ("--fault", f"{kind}=0.15")]
    sim = sim_factory("--set", "zero_delay=true", "--seed", "5", *faults)
    config = {
        "name": api,
        "target": {"url": sim.v1, "api": api},
        "workload": {**WORKLOAD, "conversations": 8},
        "session": {"on_failure": "continue"},
        "load": LOADS["users"],
    }
    result = run_bench(tmp_path, config)
    # the simulator books a request the client gave up on when it sees the connection go
    deadline = time.monotonic() + 10
    while sim_metric(sim, "turnbench_sim_requests_total") < len(result.attempts):
        assert time.monotonic() < deadline, "the simulator did not book every request"
        time.sleep(0.05)
    kinds = Counter(r["error_kind"] for r in result.attempts if r["status"] != "ok")
    injected = {
        STREAM_FAULTS[k]: sim_metric(sim, "turnbench_sim_requests_total", outcome=k)
        for k in STREAM_FAULTS
    }
    assert kinds == {k: n for k, n in injected.items() if n}, (kinds, injected)
    assert len(kinds) >= 2  # the seed injects more than one kind
    ends = {r["error_message"] for r in result.attempts if r["error_kind"] == "truncated"}
    assert ends <= {
        f"stream ended without {'response.completed' if api == 'responses' else 'message_stop'}"
    }


_NO_RESPONSES = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v1/models":
                self._send(200, {"data": [{"id": "m"}]})
            else:
                self._send(404, {"detail": "Not Found"})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(404, {"detail": "Not Found"})

    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


@pytest.fixture
def models_only_server() -> Iterator[str]:
    """A server that lists a model and serves no API at all."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _NO_RESPONSES, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def test_an_api_the_server_does_not_serve_ends_the_run_with_one_line(
    tmp_path: Path, models_only_server: str
) -> None:
    """Every attempt answered 404: the run's folder is kept (its rows say so), and the run
    ends with one line naming the endpoint and the answer."""
    proc = subprocess.run(
        [
            sys.executable, "-m", "turnbench", "run", "--target", models_only_server,
            "--api", "responses", "--max-requests", "2", "--out", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    endpoint = f"{models_only_server}/v1/responses"
    assert f"all 2 attempts to POST {endpoint} were answered HTTP 404" in lines[0], lines[0]
    assert "responses API (target.api)" in lines[0] and "Not Found" in lines[0]
    (run_dir,) = tmp_path.iterdir()
    assert (run_dir / "events.db").exists()
