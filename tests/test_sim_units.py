"""The simulator's pure parts, no server: prefix cache, reply text, faults, scheduler, config."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from turnbench.errors import InputError
from turnbench.sim.config import OutputLenConfig, load_config
from turnbench.sim.faults import FaultInjector
from turnbench.sim.prefix_cache import PrefixCache, block_hashes
from turnbench.sim.scheduler import QueueFull, Scheduler
from turnbench.sim.textgen import natural_length, plan_reply, reply_rng
from turnbench.tokens.template import count_tokens, tokens


def test_prefix_cache_matches_whole_blocks_and_evicts_lru() -> None:
    toks = [f"t{i}" for i in range(50)]
    keys = block_hashes(toks, 16)
    assert len(keys) == 3
    cache = PrefixCache(capacity_tokens=64, block_size=16)
    assert cache.match(keys, 50) == 0
    cache.insert(keys)
    assert cache.match(keys, 50) == 48 and cache.used_tokens == 48
    assert cache.match(keys, 48) == 32  # the last prompt token is always computed
    other = block_hashes(["x", *toks[1:]], 16)
    assert cache.match(other, 50) == 0  # a different first token changes every block key
    cache.insert(other[:2])  # 5 blocks > 4: the least recently used goes
    assert cache.match(keys, 50) < 48
    assert cache.usage == 1.0


def test_block_hash_chain_continues() -> None:
    toks = [str(i) for i in range(64)]
    keys = block_hashes(toks, 16)
    assert block_hashes(toks[32:], 16, keys[1]) == keys[2:]


_PIECES = st.sampled_from(
    ["<|im_start|>", "<|im_end|>", "<|", "|>", "<", "|", ">", "_", "a", "é", "٣", "語", " ", "\n",
     "\u00a0", "\u2028", "\x1c", ",", "{", '"', "model", "tok_en"]
)  # fmt: skip


@given(st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=40).map("".join))
def test_count_tokens_is_the_number_of_tokens(text: str) -> None:
    """The fast count (C-level passes, no token list) agrees with the tokenizer itself."""
    assert count_tokens(text) == len(tokens(text))


@given(
    seed=st.integers(0, 2**32),
    limit=st.integers(1, 300),
    ignore_eos=st.booleans(),
    stop=st.lists(st.sampled_from([",", "the", " model", "x"]), max_size=2),
)
def test_reply_tokens_are_pieces(seed: int, limit: int, ignore_eos: bool, stop: list[str]) -> None:
    reply = plan_reply(
        random.Random(seed),
        limit=limit,
        min_tokens=0,
        ignore_eos=ignore_eos,
        stop=stop,
        length_cfg=OutputLenConfig(),
    )
    text = "".join(reply.pieces)
    assert count_tokens(text) == len(reply.pieces) <= limit
    assert all(count_tokens(p) == 1 for p in reply.pieces)
    assert not any(s in text for s in stop)
    if ignore_eos and not stop:
        assert len(reply.pieces) == limit and reply.finish_reason == "length"


@pytest.mark.parametrize("dist", ["fixed", "uniform", "exponential", "lognormal"])
def test_length_distributions(dist: str) -> None:
    cfg = OutputLenConfig(dist=dist, mean=50, min=2, max=400)  # type: ignore[arg-type]
    rng = random.Random(1)
    draws = [natural_length(cfg, rng) for _ in range(2000)]
    assert all(2 <= d <= 400 for d in draws)
    assert 40 <= sum(draws) / len(draws) <= 60


def test_reply_rng_is_stable() -> None:
    assert reply_rng(1, 2, "p").random() == reply_rng(1, 2, "p").random()
    assert reply_rng(1, 2, "p").random() != reply_rng(1, 3, "p").random()


def test_faults_rates_and_stream_only() -> None:
    inj = FaultInjector({"reset": 1.0, "stall": 0.5}, seed=3)
    plans = [inj.draw(streaming=True) for _ in range(400)]
    assert all(p.fatal == "reset" for p in plans)
    assert 120 < sum(p.stall for p in plans) < 280
    assert inj.draw(streaming=False).fatal is None


async def test_scheduler_fifo_and_queue_full() -> None:
    sched = Scheduler(max_num_seqs=1, max_waiting=2)
    assert sched.admit() is None
    a, b = sched.admit(), sched.admit()
    with pytest.raises(QueueFull):
        sched.admit()
    assert sched.running == 1 and sched.waiting == 2
    order: list[str] = []

    async def wait(name: str, fut: asyncio.Future[None] | None) -> None:
        await sched.wait(fut)
        order.append(name)

    tasks = [asyncio.create_task(wait("a", a)), asyncio.create_task(wait("b", b))]
    await asyncio.sleep(0)
    sched.release()
    await asyncio.sleep(0)
    sched.release()
    await asyncio.gather(*tasks)
    assert order == ["a", "b"] and sched.running == 1


async def test_scheduler_cancelled_waiter_leaves_queue() -> None:
    sched = Scheduler(max_num_seqs=1, max_waiting=None)
    sched.admit()
    task = asyncio.create_task(sched.wait(sched.admit()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sched.waiting == 0
    sched.release()
    assert sched.running == 0


def test_load_config_precedence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sim.yaml"
    path.write_text("max_num_seqs: 8\nfaults: {reset: 0.5}\n")
    cfg = load_config(
        path,
        sets=["max_num_seqs=4", "output_len.mean=33"],
        faults=["stall=0.25"],
        overrides={"model": "m", "seed": None},
    )
    assert cfg.max_num_seqs == 4 and cfg.output_len.mean == 33 and cfg.model == "m"
    assert cfg.faults == {"reset": 0.5, "stall": 0.25}
    with pytest.raises(InputError, match="block_size"):
        load_config(None, sets=["block_size=0"])
