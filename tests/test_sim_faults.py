"""Every fault kind at rate 1.0: the symptom a client sees and the outcome counter it bumps."""

from __future__ import annotations

import time
import urllib.request
from typing import Any

import aiohttp
import openai
import pytest

from conftest import SimProcess

STREAM_BODY = {
    "messages": [{"role": "user", "content": "fault please"}],
    "max_tokens": 10,
    "ignore_eos": True,
    "stream": True,
}


def outcome_count(sim: SimProcess, outcome: str) -> float:
    with urllib.request.urlopen(sim.url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("turnbench_sim_requests_total{") and f'"{outcome}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def read_stream(
    sim: SimProcess, body: dict[str, Any] = STREAM_BODY
) -> tuple[int, list[str], Exception | None]:
    """Stream a chat completion; return the status, the SSE data lines and any read error."""
    lines: list[str] = []
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.v1 + "/chat/completions", json=body) as resp,
    ):
        try:
            async for raw in resp.content:
                line = raw.decode().strip()
                if line:
                    lines.append(line)
        except aiohttp.ClientError as err:
            return resp.status, lines, err
        return resp.status, lines, None


def test_http500(sim_factory: Any) -> None:
    sim = sim_factory("--fault", "http500=1")
    with pytest.raises(openai.InternalServerError):
        openai.OpenAI(base_url=sim.v1, api_key="x", max_retries=0).completions.create(
            model="turnbench-sim", prompt="x", max_tokens=2
        )
    assert outcome_count(sim, "http500") == 1


async def test_http429_has_retry_after(sim_factory: Any) -> None:
    sim = sim_factory("--fault", "http429=1")
    async with (
        aiohttp.ClientSession() as session,
        session.post(sim.v1 + "/chat/completions", json=STREAM_BODY) as resp,
    ):
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert "error" in await resp.json()
    assert outcome_count(sim, "http429") == 1


async def test_reset_mid_stream(sim_factory: Any) -> None:
    sim = sim_factory("--fault", "reset=1")
    status, lines, err = await read_stream(sim)
    assert status == 200 and err is not None
    assert 1 <= len(lines) < 10 and "data: [DONE]" not in lines
    assert outcome_count(sim, "reset") == 1
    # non-streaming requests are not reset
    r = openai.OpenAI(base_url=sim.v1, api_key="x", max_retries=0).completions.create(
        model="turnbench-sim", prompt="x", max_tokens=3
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    assert outcome_count(sim, "ok") == 1


async def test_stall_delays_first_token(sim_factory: Any) -> None:
    sim = sim_factory("--fault", "stall=1", "--stall-s", "0.6", "--zero-delay")
    start = time.perf_counter()
    status, lines, err = await read_stream(sim)
    assert time.perf_counter() - start >= 0.6
    assert status == 200 and err is None and lines[-1] == "data: [DONE]"
    assert sum('"finish_reason":"length"' in line for line in lines) == 1
    assert outcome_count(sim, "stall") == 1


async def test_malformed_event(sim_factory: Any) -> None:
    sim = sim_factory("--fault", "malformed=1", "--zero-delay")
    status, lines, err = await read_stream(sim)
    assert status == 200 and err is None
    assert "data: {not json" in lines and lines[-1] == "data: [DONE]"
    assert outcome_count(sim, "malformed") == 1


async def test_truncate_ends_cleanly_without_done(sim_factory: Any) -> None:
    sim = sim_factory("--fault", "truncate=1")
    status, lines, err = await read_stream(sim)
    assert status == 200 and err is None
    assert 1 <= len(lines) < 10 and "data: [DONE]" not in lines
    assert not any('"finish_reason":"' in line for line in lines)
    assert outcome_count(sim, "truncate") == 1
