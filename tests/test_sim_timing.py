"""The timing model over real HTTP: prefix-cache hits cut TTFT, and max_num_seqs queues.

Why ratios and lower bounds: the simulator's delays are sleeps, so a delay is never shorter
than configured, but on a busy machine it can be longer; assertions compare a warm prefix to
a cold one with a wide margin, or check that a wait lasted at least a configured time.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from typing import Any

import openai

from conftest import SimProcess
from turnbench.tokens.template import count_chat_tokens, make_text

SLOW_PREFILL = ("--prefill-ms-per-token", "2", "--ttft-base-ms", "5", "--decode-ms-base", "1")


def stream_ttft(
    sim: SimProcess, msgs: list[dict[str, str]], max_tokens: int = 8
) -> tuple[float, str, int]:
    """Stream one chat reply; return the TTFT seen by the client, the text and cached tokens."""
    c = openai.OpenAI(base_url=sim.v1, api_key="none", max_retries=0)
    start = time.perf_counter()
    ttft = None
    text = ""
    cached = -1
    for chunk in c.chat.completions.create(
        model="turnbench-sim",
        messages=msgs,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            ttft = ttft if ttft is not None else time.perf_counter() - start
            text += chunk.choices[0].delta.content
        if chunk.usage is not None and chunk.usage.prompt_tokens_details is not None:
            cached = chunk.usage.prompt_tokens_details.cached_tokens or 0
    assert ttft is not None
    return ttft, text, cached


def conversation(seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"role": "system", "content": make_text(400, rng)},
        {"role": "user", "content": make_text(20, rng)},
    ]


def second_turn(first: list[dict[str, str]], reply: str) -> list[dict[str, str]]:
    return [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "go on"}]


def test_warm_prefix_cuts_ttft(sim_factory: Any) -> None:
    sim = sim_factory(*SLOW_PREFILL)
    turn1 = conversation(1)
    _, reply, cached1 = stream_ttft(sim, turn1)
    assert cached1 == 0
    warm_msgs = second_turn(turn1, reply)
    cold_msgs = second_turn(conversation(2), reply)
    assert count_chat_tokens(warm_msgs) == count_chat_tokens(cold_msgs)
    warm, _, cached_warm = stream_ttft(sim, warm_msgs)
    cold, _, cached_cold = stream_ttft(sim, cold_msgs)
    n = count_chat_tokens(warm_msgs)
    assert cached_cold == 0
    assert cached_warm >= count_chat_tokens(turn1) - 16 and cached_warm % 16 == 0
    assert cold >= 0.002 * n  # at least the configured prefill of every token
    assert warm < 0.5 * cold


def test_tiny_cache_gives_no_benefit(sim_factory: Any) -> None:
    sim = sim_factory(*SLOW_PREFILL, "--kv-cache-tokens", "16")
    turn1 = conversation(3)
    _, reply, _ = stream_ttft(sim, turn1)
    warm, _, cached_warm = stream_ttft(sim, second_turn(turn1, reply))
    cold, _, _ = stream_ttft(sim, second_turn(conversation(4), reply))
    assert cached_warm == 0
    assert warm > 0.6 * cold


async def _timed_stream(url: str, body: dict[str, Any]) -> float:
    """TTFT of one raw streaming request via aiohttp."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        async with session.post(url + "/chat/completions", json=body) as resp:
            async for line in resp.content:
                if b'"content":"' in line and b'"content":""' not in line:
                    ttft = time.perf_counter() - start
                    await resp.read()
                    return ttft
    raise AssertionError("no token")


def _metric(sim: SimProcess, name: str) -> float:
    with urllib.request.urlopen(sim.url + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_queueing_beyond_max_num_seqs(sim_factory: Any) -> None:
    sim = sim_factory("--max-num-seqs", "2", "--decode-ms-base", "25", "--decode-ms-per-seq", "0")
    body = {
        "messages": [{"role": "user", "content": "queue"}],
        "max_tokens": 20,
        "ignore_eos": True,
        "stream": True,
    }
    tasks = [asyncio.create_task(_timed_stream(sim.v1, body)) for _ in range(4)]
    seen_waiting = 0.0
    while not all(t.done() for t in tasks):
        running = await asyncio.to_thread(_metric, sim, "vllm:num_requests_running")
        waiting = await asyncio.to_thread(_metric, sim, "vllm:num_requests_waiting")
        assert running <= 2
        seen_waiting = max(seen_waiting, waiting)
        await asyncio.sleep(0.05)
    ttfts = sorted(await asyncio.gather(*tasks))
    assert seen_waiting == 2
    # the last two waited for a whole request of the first two: 19 decode steps of 25 ms
    assert ttfts[2] >= 0.45 and ttfts[3] >= 0.45
    assert ttfts[0] < ttfts[2]


async def test_queue_full_gives_429(sim_factory: Any) -> None:
    import aiohttp

    sim = sim_factory("--max-num-seqs", "1", "--max-waiting", "1", "--decode-ms-base", "20")
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 20, "ignore_eos": True}

    async def one(session: aiohttp.ClientSession) -> tuple[int, str | None]:
        async with session.post(sim.v1 + "/chat/completions", json=body) as resp:
            await resp.read()
            return resp.status, resp.headers.get("Retry-After")

    async with aiohttp.ClientSession() as session:
        first = [asyncio.create_task(one(session)) for _ in range(2)]
        while await asyncio.to_thread(_metric, sim, "vllm:num_requests_waiting") < 1:
            await asyncio.sleep(0.02)
        status, retry_after = await one(session)
        assert [s for s, _ in await asyncio.gather(*first)] == [200, 200]
    assert status == 429 and retry_after == "1"
    with urllib.request.urlopen(sim.url + "/metrics", timeout=10) as resp:
        assert 'outcome="http429"} 1' in resp.read().decode()
