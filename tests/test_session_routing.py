"""Sticky routing as routers expect it: a preset's session header on every request, and a
router-issued session token (llm-d's `x-session-token`) sent back on a session's later turns.
Real HTTP on 127.0.0.1: a tiny aiohttp router stand-in, and the simulator."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from conftest import start_sim
from runs import run_bench
from turnbench.config import SessionConfig

MODEL = "tiny"


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Serve `app` on a free 127.0.0.1 port from a thread with its own loop; yield /v1 URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    port: list[int] = []

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port.append(runner.addresses[0][1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port[0]}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def token_router(token_header: str, seen: dict[str, list[Any]]) -> web.Application:
    """A router stand-in: it issues a session token on a session's first reply, a new one on
    its third (the session moved to another replica), none on the others; it records every
    request's headers by conversation (`seen`)."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        conversation = request.headers["X-Conversation-ID"]
        seen[conversation].append(request.headers.copy())
        n = len(seen[conversation])
        headers = {"Content-Type": "text/event-stream"}
        if n in (1, 3):
            headers[token_header] = f"tok-{conversation}-{'ab'[n // 3]}"
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
        await resp.write(
            f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode()
        )
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.mark.parametrize(
    ("token_header", "workers"),
    [("x-session-token", 1), ("x-session-token", 2), ("x-session-id", 1)],
    ids=["llm-d", "llm-d-2-workers", "same-name-as-session-header"],
)
def test_router_token_is_sent_back_on_later_turns(
    tmp_path: Path, token_header: str, workers: int
) -> None:
    seen: dict[str, list[Any]] = defaultdict(list)
    with serve(token_router(token_header, seen)) as url:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": url, "model": MODEL},
                "engine": {"workers": workers},
                "workload": {
                    "type": "synthetic",
                    "conversations": 2,
                    "turns": 4,
                    "input_tokens": 8,
                    "output_tokens": 4,
                },
                "session": {"session_token_header": token_header},
                "load": {"mode": "parallel", "sessions": 2},
            },
        )
    assert {r["status"] for r in result.attempts} == {"ok"}
    assert len(seen) == 2
    for conversation, requests in seen.items():
        assert [h["X-Turn-Index"] for h in requests] == ["1", "2", "3", "4"]
        sent = [h.getall(token_header, []) for h in requests]
        first, second = f"tok-{conversation}-a", f"tok-{conversation}-b"
        assert sent[1:] == [[first], [first], [second]]  # the latest token, and only it
        if token_header == "x-session-token":
            assert sent[0] == []
        else:  # the token replaced the session id under the same header name
            assert sent[0] == [requests[0]["X-Session-ID"]] != [first]


def test_no_token_header_configured_sends_none(tmp_path: Path) -> None:
    seen: dict[str, list[Any]] = defaultdict(list)
    with serve(token_router("x-session-token", seen)) as url:
        run_bench(
            tmp_path,
            {
                "target": {"url": url, "model": MODEL},
                "workload": {"type": "synthetic", "conversations": 1, "turns": 2},
                "load": {"mode": "parallel", "sessions": 1},
            },
        )
    (requests,) = seen.values()
    assert len(requests) == 2 and all("x-session-token" not in h for h in requests)


def test_set_dynamo_preset_sends_dynamo_session_header(tmp_path: Path) -> None:
    """`turnbench run --set session.session_header=dynamo`, as typed, against the simulator,
    which counts each session under the header it arrived in."""
    sim = start_sim("--zero-delay")
    try:
        proc = subprocess.run(
            [
                sys.executable, "-m", "turnbench", "run", "--target", sim.v1,
                "--set", "session.session_header=dynamo", "--mode", "parallel",
                "--sessions", "2", "--turns", "3", "--out", str(tmp_path), "--no-live",
            ],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        with urllib.request.urlopen(sim.url + "/metrics", timeout=30) as resp:
            metrics = resp.read().decode()
    finally:
        sim.stop()
    lines = [m for m in metrics.splitlines() if m.startswith("turnbench_sim_session_requests")]
    assert len(lines) == 2
    assert all('header="X-Dynamo-Session-ID"' in m and m.endswith(" 3") for m in lines)


def test_presets_and_token_header_validation() -> None:
    assert SessionConfig(session_header="dynamo").session_header_name == "X-Dynamo-Session-ID"
    assert SessionConfig().session_token_header is None
    with pytest.raises(ValidationError, match="session_token_header"):
        SessionConfig(session_token_header="x-session-token:")
