"""Mooncake traces (`timestamp` ms, `input_length`, `output_length`, `hash_ids`), with text
synthesized so that the trace's prefix sharing reaches the server byte for byte.

Why text per hash id: a hash id stands for one `block_size`-token KV block; the same id must
give the same text everywhere (a prefix-cache hit) and different ids different text. Block h is
the word `h<h>` (unique per id, so blocks never collide) then `block_size - 1` vocabulary words
from a seed derived from h (`random.Random` seeded with a string is stable across processes,
unlike `hash()`); the run's `TextSizer` sets how many words make `block_size` tokens for the
server's tokenizer. The last block is cut to make `input_length` exact; blocks missing from a
short `hash_ids` list are filled from a per-request seed.

Sessions (`session_id`, as AIPerf writes them): one conversation per session, turns in file
order, `start_s` = the first request's timestamp. A later turn's think time is its `delay` (ms)
if present, else the gap between timestamps: think time counts from the end of the previous
reply, so a gap (which also holds that reply's own latency) overstates it. A later turn sends
only its new part: when its hash ids extend the previous turn's, the blocks beyond those and
`input_length` minus the previous prompt's length; otherwise (AIPerf) all of its blocks.
All times are multiplied by `time_scale`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import TraceOptions
from turnbench.workload.conversation import Conversation, Turn
from turnbench.workload.records import Record, field, non_negative
from turnbench.workload.report import LoadReport

MAX_INPUT_TOKENS = 10_000_000
"""A prompt above this is surely a corrupt record, and would take minutes to write."""


@lru_cache(maxsize=8192)
def block_text(hash_id: int, n_tokens: int, sizer: TextSizer = TextSizer()) -> str:
    """The text of one hash id, `n_tokens` tokens long (a block, or the cut last block): the
    word `h<id>` then words from the id's seed, the same every time."""
    rng = random.Random(f"turnbench-block-{hash_id}")
    return sizer.make_text(n_tokens, rng, lead=f"h{hash_id}")


def prompt_text(
    hash_ids: Sequence[int],
    n_tokens: int,
    block_size: int,
    filler: str,
    sizer: TextSizer = TextSizer(),
) -> str:
    """`n_tokens` tokens: the blocks of `hash_ids` in order, the last one cut, then filler."""
    parts: list[str] = []
    left = n_tokens
    for h in hash_ids:
        if left <= 0:
            break
        parts.append(block_text(h, min(left, block_size), sizer))
        left -= min(left, block_size)
    if left > 0:
        parts.append(sizer.make_text(left, random.Random(f"turnbench-filler-{filler}")))
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class _Request:
    rec: Record
    timestamp: float | None
    delay: float | None
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    session: str | None
    group: str | None


def _parse(rec: Record) -> _Request:
    v = rec.value
    if not isinstance(v, dict):
        raise rec.error("expected a trace request object")
    ts = non_negative(rec, field(rec, v, "timestamp", float, "", required=False), "timestamp")
    delay = non_negative(rec, field(rec, v, "delay", float, "", required=False), "delay")
    n_in = field(rec, v, "input_length", int, "")
    n_out = field(rec, v, "output_length", int, "")
    if not 1 <= n_in <= MAX_INPUT_TOKENS:
        raise rec.error(f"must be between 1 and {MAX_INPUT_TOKENS}", "input_length")
    if n_out < 1:
        raise rec.error("must be >= 1", "output_length")
    ids = field(rec, v, "hash_ids", list, "", required=False) or []
    for i, h in enumerate(ids):
        if not isinstance(h, int) or isinstance(h, bool):
            raise rec.error("expected an integer", f"hash_ids[{i}]")
    session = field(rec, v, "session_id", (str, int), "", required=False)
    group = field(rec, v, "group_id", (str, int), "", required=False)
    if session is None and ts is None:
        raise rec.error("a request without session_id needs a timestamp", "timestamp")
    return _Request(
        rec,
        ts,
        delay,
        n_in,
        n_out,
        tuple(ids),
        None if session is None else str(session),
        None if group is None else str(group),
    )


class TracePlans(Sequence[Conversation]):
    """The trace's plans, built on access so a long trace never holds all its text at once."""

    def __init__(
        self, units: list[list[_Request]], options: TraceOptions, sizer: TextSizer
    ) -> None:
        self._units = units
        self._options = options
        self._sizer = sizer

    def __len__(self) -> int:
        return len(self._units)

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        if isinstance(index, slice):
            return TracePlans(self._units[index], self._options, self._sizer)
        return self._plan(self._units[index])

    def _plan(self, reqs: list[_Request]) -> Conversation:
        size, scale = self._options.block_size, self._options.time_scale
        first = reqs[0]
        turns: list[Turn] = []
        prev: _Request | None = None
        for req in reqs:
            ids, n = req.hash_ids, req.input_length
            think = None
            if prev is not None:
                if prev.hash_ids and ids[: len(prev.hash_ids)] == prev.hash_ids:
                    ids = ids[len(prev.hash_ids) :]
                    n = max(1, n - prev.input_length)
                if req.delay is not None:
                    think = req.delay / 1000 * scale
                elif req.timestamp is not None and prev.timestamp is not None:
                    think = max(0.0, req.timestamp - prev.timestamp) / 1000 * scale
            filler = f"{req.rec.file}:{req.rec.line}"
            text = prompt_text(ids, n, size, filler, self._sizer)
            turns.append(
                Turn(
                    messages=({"role": "user", "content": text},),
                    max_tokens=req.output_length,
                    think_time_s=think,
                )
            )
            prev = req
        cid = f"session-{first.session}" if first.session is not None else f"req-{first.rec.line}"
        start = None if first.timestamp is None else first.timestamp / 1000 * scale
        return Conversation(id=cid, turns=tuple(turns), group=first.group, start_s=start)


def load_trace(
    records: Sequence[Record],
    options: TraceOptions,
    report: LoadReport,
    sizer: TextSizer = TextSizer(),
) -> TracePlans:
    """Check every request, group sessions, and return plans built on access (their text
    sized by `sizer`)."""
    units: list[list[_Request]] = []
    sessions: dict[str, list[_Request]] = {}
    for rec in records:
        req = _parse(rec)
        if req.session is None:
            units.append([req])
        elif req.session in sessions:
            sessions[req.session].append(req)
        else:
            sessions[req.session] = [req]
            units.append(sessions[req.session])
        n_blocks = -(-req.input_length // options.block_size)
        if len(req.hash_ids) < n_blocks and req.session is None:
            report.repair("prompt filled beyond its hash ids")
    return TracePlans(units, options, sizer)
