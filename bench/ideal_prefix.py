"""What the ideal cached prefix costs a request on the client, at short prompts and at long
agentic contexts.

Each case plays sessions through `Session` (construction, build, `sent`, `computed`,
`accept`) with no network: once with the worker's `BlockRegistry` (the ideal counted) and
once without, and reports the difference per request. The replies are the simulator's kind of
text (vocabulary words and punctuation), of the given length.

    .venv/bin/python bench/ideal_prefix.py                 # both cases
    .venv/bin/python bench/ideal_prefix.py --repeat 5      # best of 5 per case
    .venv/bin/python bench/ideal_prefix.py --instructions  # instructions (callgrind), not time
    .venv/bin/python bench/ideal_prefix.py --bytecodes     # bytecodes (sys.settrace), by function

Why instructions too: the machine is shared, so wall-clock figures move with its load; the
instructions a run executes under valgrind's callgrind do not (string hashes are seeded
alike, `PYTHONHASHSEED=0`), so before and after compare to a fraction of a percent. Why
bytecodes: most of the cost is the interpreter's per bytecode, so their count by function
says where to cut.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from turnbench.cache.registry import BlockRegistry
from turnbench.client.apis.base import Reply
from turnbench.config import SessionConfig
from turnbench.session import Session
from turnbench.tokens.template import VOCAB
from turnbench.workload.conversation import Conversation, Turn

CFG = SessionConfig()


def _reply(n_tokens: int, rng: random.Random) -> Reply:
    words = [rng.choice(VOCAB) + ("," if rng.random() < 0.1 else "") for _ in range(n_tokens)]
    return Reply(text_parts=[" ".join(words)])


def _play(
    conversations: list[Conversation], reply_tokens: int, registry: BlockRegistry | None
) -> tuple[float, int, int]:
    """Seconds spent in the session calls, requests played, largest context (tokens)."""
    rng = random.Random(1)
    replies = [_reply(reply_tokens, rng) for _ in range(16)]
    spent = 0.0
    requests = 0
    largest = 0
    for i, conv in enumerate(conversations):
        rng = random.Random(i)
        t0 = time.perf_counter()
        session = Session(
            f"s{i}", conv, CFG, max_context_tokens=None, rng=rng, salt="r0badcafe",
            registry=registry,
        )  # fmt: skip
        spent += time.perf_counter() - t0
        for turn in range(len(conv.turns)):
            reply = replies[(i + turn) % len(replies)]
            t0 = time.perf_counter()
            planned = session.build(turn)
            assert planned is not None
            session.sent(planned)
            session.computed()
            session.accept(planned, reply, planned.context_tokens, reply_tokens)
            spent += time.perf_counter() - t0
            requests += 1
            largest = max(largest, planned.context_tokens)
    return spent, requests, largest


def _case(
    name: str, make: Callable[[], list[Conversation]], reply_tokens: int, repeat: int
) -> None:
    """Best of `repeat` plays each way, and the median of the paired differences: each
    repeat plays both ways back to back (in turn, which one first), so a change of the
    machine's speed between repeats (a shared VM's does, by half) falls on both of a pair."""
    best: dict[bool, float] = {}
    pairs: list[float] = []
    for i in range(repeat):
        per: dict[bool, float] = {}
        for ideal in (False, True) if i % 2 == 0 else (True, False):
            registry = BlockRegistry(16, 64) if ideal else None
            spent, n, largest = _play(make(), reply_tokens, registry)
            per[ideal] = spent / n
            best[ideal] = min(best.get(ideal, float("inf")), spent / n)
        pairs.append((per[True] - per[False]) * 1e6)
    extra = (best[True] - best[False]) * 1e6
    pairs.sort()
    print(
        f"{name}: {n} requests, largest context {largest:,} tokens; per request "
        f"{best[False] * 1e6:.1f} us without the ideal, {best[True] * 1e6:.1f} us with it: "
        f"+{extra:.1f} us; paired: median +{statistics.median(pairs):.1f} us "
        f"(quartiles +{pairs[len(pairs) // 4]:.1f} to +{pairs[(3 * len(pairs)) // 4]:.1f})"
    )


def _short() -> list[Conversation]:
    """2,000 one-turn conversations of 256-token prompts (a shared 128-token system prompt)."""
    system = " ".join(random.Random(7).choices(VOCAB, k=125))
    return [
        Conversation(id=f"c{i}", turns=(Turn(input_tokens=120, max_tokens=64),), system=system)
        for i in range(2000)
    ]


def _agentic() -> list[Conversation]:
    """4 sessions of 100 turns, each adding 500 tokens of tool result and a 500-token reply:
    contexts grow to 100k tokens; the cost per turn must not grow with them."""
    turns = tuple(Turn(input_tokens=500, max_tokens=500) for _ in range(100))
    return [Conversation(id=f"a{i}", turns=turns) for i in range(4)]


CASES: dict[str, tuple[str, Callable[[], list[Conversation]], int]] = {
    "short": ("256-token prompts, 64-token replies", _short, 64),
    "agentic": ("agentic, 100 turns to 100k tokens", _agentic, 500),
}


def _instructions(case: str, ideal: bool) -> int:
    """Instructions of one play of `case` under callgrind (start-up included: it cancels in
    the difference with and without the ideal)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    cmd += [__file__, "--play", case, *(["--ideal"] if ideal else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {case} failed: {proc.stderr.strip()[-500:]}")
    return int(found.group(1))


def _count(case: str) -> None:
    name, make, _ = CASES[case]
    n = sum(len(c.turns) for c in make())
    # one play first, so that both counted runs find every module compiled (.pyc) alike
    subprocess.run([sys.executable, __file__, "--play", case], check=True)
    without, with_ = _instructions(case, False), _instructions(case, True)
    print(
        f"{name}: {n} requests; instructions per request added by the ideal: "
        f"{(with_ - without) / n:,.0f} ({without:,} without, {with_:,} with, in all)"
    )


def _bytecodes(case: str, ideal: bool) -> tuple[Counter[str], int]:
    """Bytecodes turnbench's functions run in one play of `case` (the agentic one: one
    session's turns), by function, and the requests played."""
    _, make, reply_tokens = CASES[case]
    conversations = make()[:1] if case == "agentic" else make()
    counts: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and "turnbench" in frame.f_code.co_filename:
            counts[f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"] += 1
        return trace

    registry = BlockRegistry(16, 64) if ideal else None
    sys.settrace(trace)
    try:
        _, requests, _ = _play(conversations, reply_tokens, registry)
    finally:
        sys.settrace(None)
    return counts, requests


def _count_bytecodes(case: str) -> None:
    name = CASES[case][0]
    with_, n = _bytecodes(case, True)
    without, _ = _bytecodes(case, False)
    added = {k: (with_[k] - without[k]) / n for k in with_.keys() | without.keys()}
    top = sorted(((v, k) for k, v in added.items() if abs(v) >= 0.5), reverse=True)
    print(
        f"{name}: {n} requests; bytecodes per request added by the ideal: {sum(added.values()):.0f}"
    )
    for v, k in top:
        print(f"  {v:7.1f}  {k}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Best of this many runs.")
    parser.add_argument(
        "--instructions", action="store_true", help="Count instructions (callgrind) instead."
    )
    parser.add_argument(
        "--bytecodes", action="store_true", help="Count bytecodes (sys.settrace) instead."
    )
    parser.add_argument("--play", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--ideal", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.play:  # one play, for callgrind to count
        _, make, reply_tokens = CASES[args.play]
        _play(make(), reply_tokens, BlockRegistry(16, 64) if args.ideal else None)
        return
    if args.instructions:
        for case in CASES:
            _count(case)
        return
    if args.bytecodes:
        for case in CASES:
            _count_bytecodes(case)
        return
    for name, make, reply_tokens in CASES.values():
        _case(name, make, reply_tokens, args.repeat)
    _growth(args.repeat)


def _growth(repeat: int) -> None:
    """The ideal's cost per turn over the first and the last 20 turns of 100k contexts."""
    rng = random.Random(3)
    reply = _reply(500, rng)
    firsts, lasts = [], []
    for _ in range(repeat):
        registry = BlockRegistry(16, 64)
        conv = _agentic()[0]
        session = Session("g", conv, CFG, max_context_tokens=None, rng=rng, registry=registry)
        costs = []
        for turn in range(len(conv.turns)):
            planned = session.build(turn)
            assert planned is not None
            t0 = time.perf_counter()
            session.sent(planned)
            session.computed()
            costs.append(time.perf_counter() - t0)
            session.accept(planned, reply, planned.context_tokens, 500)
        firsts.append(sum(costs[:20]) / 20)
        lasts.append(sum(costs[-20:]) / 20)
    print(
        f"ideal lookup per turn (sent + computed): turns 1-20 {min(firsts) * 1e6:.1f} us, "
        f"turns 81-100 {min(lasts) * 1e6:.1f} us (contexts ~1k vs ~100k tokens)"
    )


if __name__ == "__main__":
    main()
