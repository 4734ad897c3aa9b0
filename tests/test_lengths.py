"""Token lengths for the server's tokenizer: the simulator's /tokenize (exact), a local
tokenizer.json (exact, measured), llama.cpp's /tokenize (calibrated ratio), and a server with
no /tokenize (approximate, said so in the report). Real HTTP on 127.0.0.1, no mocks."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from runs import run_bench
from turnbench.errors import InputError
from turnbench.metrics.summary import APPROXIMATE_LENGTHS
from turnbench.target import calibrate
from turnbench.tokens import TextSizer
from turnbench.tokens.template import VOCAB, count_tokens

MODEL = "tiny"


@contextmanager
def serve(app: web.Application) -> Iterator[str]:
    """Serve `app` on a free 127.0.0.1 port from a thread with its own loop; yield /v1 URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        holder["port"] = runner.addresses[0][1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{holder['port']}/v1"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def tiny_app(*, llama_tokenize: bool) -> web.Application:
    """/v1/models and a streaming chat endpoint; with `llama_tokenize`, a llama.cpp-style
    /tokenize ({"content"} → {"tokens"}) counting two tokens a word and refusing vLLM bodies."""

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("hello", " there"):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    async def tokenize(request: web.Request) -> web.Response:
        body = await request.json()
        if "content" not in body:
            return web.json_response({"error": "content is required"}, status=400)
        n_words = len(str(body["content"]).split())
        return web.json_response({"tokens": list(range(2 * n_words + 1))})  # + BOS

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    if llama_tokenize:
        app.router.add_post("/tokenize", tokenize)
    return app


async def _sim_count(url: str, text: str) -> int:
    import aiohttp

    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/tokenize", json={"prompt": text}) as resp,
    ):
        return int((await resp.json())["count"])


async def test_simulator_tokenize_gives_exact_lengths(sim) -> None:  # type: ignore[no-untyped-def]
    sizer = await calibrate(sim.v1, "turnbench-sim", {})
    assert sizer == TextSizer("simulator-exact")
    rng = random.Random(1)
    for n in (1, 7, 100, 513):
        assert await _sim_count(sim.url, sizer.make_text(n, rng)) == n
        assert await _sim_count(sim.url, sizer.make_text(n, rng, lead="h42")) == n


def test_run_against_the_simulator_records_exact_lengths(tmp_path: Path) -> None:
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"]},
            "workload": {
                "type": "synthetic",
                "conversations": 2,
                "turns": 1,
                "input_tokens": 50,
                "output_tokens": 4,
                "system_prompt_tokens": 100,
            },
            "load": {"mode": "parallel"},
        },
    )
    resolved = yaml.safe_load((result.path / "config.yaml").read_text())["resolved"]
    assert resolved["length_source"] == "simulator-exact"
    assert result.summary["length_source"] == "simulator-exact"
    # the run's salt word (1) + system (100 + 3) + user (50 + 3) + generation prompt (2)
    assert {r["prompt_tokens"] for r in result.attempts} == {159}
    assert APPROXIMATE_LENGTHS not in result.output


def _bpe_tokenizer(path: Path) -> Path:
    """A small BPE trained on the vocabulary: most words are several tokens, some one."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]"])
    rng = random.Random(0)
    tok.train_from_iterator([" ".join(rng.choices(VOCAB, k=50)) for _ in range(200)], trainer)
    out = path / "tokenizer.json"
    tok.save(str(out))
    return out


async def test_tokenizer_json_gives_exact_lengths(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    path = _bpe_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(path))
    sizer = await calibrate("http://127.0.0.1:9/v1", MODEL, {}, tokenizer_json=str(path))
    assert sizer.source == "tokenizer.json"
    rng = random.Random(2)
    words_per_token = []
    for n in (1, 2, 5, 33, 128, 512, 1000):
        text = sizer.make_text(n, rng)
        assert len(tok.encode(text, add_special_tokens=False).ids) == n, n
        words_per_token.append(len(text.split()) / n)
        block = sizer.make_text(n, random.Random(n), lead="h7")
        assert block.startswith("h7") and block == sizer.make_text(n, random.Random(n), lead="h7")
        if n >= 5:  # the lead alone is 2 tokens here
            assert len(tok.encode(block, add_special_tokens=False).ids) == n, n
    assert max(words_per_token[3:]) < 0.8  # the BPE really splits words: sizing did work


async def test_bad_tokenizer_json_is_an_input_error(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"tokenizer_json\]: cannot load the tokenizer"):
        await calibrate("http://127.0.0.1:9/v1", MODEL, {}, tokenizer_json=str(bad))


def test_run_with_tokenizer_json_sizes_texts_in_workers(tmp_path: Path) -> None:
    """Two worker processes write the user turns with the coordinator's sizer: the simulator
    (one token a word) sees exactly the words the BPE-exact texts hold."""
    path = _bpe_tokenizer(tmp_path)
    result = run_bench(
        tmp_path,
        {
            "target": {"sim_args": ["--zero-delay"], "tokenizer_json": "tokenizer.json"},
            "workload": {
                "type": "synthetic",
                "conversations": 4,
                "turns": 1,
                "input_tokens": 40,
                "output_tokens": 4,
                "system_prompt_tokens": 64,
                "system_prompt_groups": 4,
            },
            "load": {"mode": "parallel"},
            "engine": {"workers": 2},
        },
    )
    assert result.summary["length_source"] == "tokenizer.json"
    sizer = TextSizer("tokenizer.json", tokenizer_json=str(path))
    seed = result.summary["config"]["seed"]
    rows = result.attempts
    assert len(rows) == 4 and {r["worker"] for r in rows} == {0, 1}
    for r in rows:
        group = int(r["conversation_id"].removeprefix("syn-")) % 4
        system = sizer.make_text(64, random.Random(f"turnbench-system-{seed}-{group}"))
        user = sizer.make_text(40, random.Random(f"{seed}:{r['session_id'][1:]}"))
        salt = 1  # the run's salt word before the system prompt (`cache.salt`)
        assert r["prompt_tokens"] == salt + count_tokens(system) + count_tokens(user) + 3 + 3 + 2
        assert count_tokens(user) < 40  # the BPE splits words: fewer words than tokens


def test_sources_size_their_texts_with_the_sizer(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    from turnbench.workload.config import SharedPrefixWorkload
    from turnbench.workload.sources import conversations

    path = _bpe_tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(path))
    cfg = SharedPrefixWorkload(
        num_groups=1, prompts_per_group=2, system_prompt_len=64, question_len=16, output_len=4
    )
    sizer = TextSizer("tokenizer.json", tokenizer_json=str(path))
    for conv in conversations(cfg, seed=0, base_dir=tmp_path, sizer=sizer):
        assert conv.system is not None
        assert len(tok.encode(conv.system, add_special_tokens=False).ids) == 64
        user = conv.turns[0].messages[0]["content"]
        assert len(tok.encode(user, add_special_tokens=False).ids) == 16


async def test_llama_cpp_tokenize_calibrates_a_ratio() -> None:
    with serve(tiny_app(llama_tokenize=True)) as url:
        sizer = await calibrate(url, MODEL, {})
    assert sizer.source == "server" and sizer.tokens_per_word == 2.0
    assert len(sizer.make_text(100, random.Random(0)).split()) == 50


def test_no_tokenize_endpoint_is_approximate_and_reported(tmp_path: Path) -> None:
    with serve(tiny_app(llama_tokenize=False)) as url:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": url},
                "workload": {
                    "type": "synthetic",
                    "conversations": 1,
                    "turns": 1,
                    "input_tokens": 20,
                    "output_tokens": 4,
                },
                "load": {"mode": "parallel"},
            },
        )
    assert result.summary["length_source"] == "approximate"
    assert APPROXIMATE_LENGTHS in result.summary["verdict"]["notes"]
    assert "token lengths are approximate" in result.output
    [row] = result.attempts
    assert row["status"] == "ok"
    assert row["token_source"] == "chunks" and row["completion_tokens"] == 2


def test_without_usage_a_tokenizer_json_counts_the_reply(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    path = _bpe_tokenizer(tmp_path)
    expected = len(
        Tokenizer.from_file(str(path)).encode("hello there", add_special_tokens=False).ids
    )
    with serve(tiny_app(llama_tokenize=False)) as url:
        result = run_bench(
            tmp_path,
            {
                "target": {"url": url, "tokenizer_json": str(path)},
                "workload": {
                    "type": "synthetic",
                    "conversations": 1,
                    "turns": 1,
                    "input_tokens": 20,
                    "output_tokens": 4,
                },
                "load": {"mode": "parallel"},
            },
        )
    [row] = result.attempts
    assert row["token_source"] == "tokenizer" and row["completion_tokens"] == expected
    assert expected != 2  # the BPE splits these words: not the chunk count
