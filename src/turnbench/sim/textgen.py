"""Deterministic reply text: how long a reply is and which tokens it holds.

Why pieces that are exactly one token each: every streamed chunk carries one piece, and the
client re-tokenizes the concatenated reply with `turnbench.tokens.template.count_tokens`; a piece is
" word" (a vocabulary word after a space, so it never merges with its neighbour) or a single
punctuation mark, so the count always equals `completion_tokens`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from turnbench.sim.config import OutputLenConfig
from turnbench.tokens.template import VOCAB

PUNCTUATION: tuple[str, ...] = (",", ".")
PIECES: tuple[str, ...] = tuple(" " + w for w in VOCAB) + PUNCTUATION
"""Every chunk text a reply can hold (the first piece of a reply drops its leading space)."""

_PUNCT_WEIGHT = 0.04 * len(VOCAB)  # about one punctuation mark every 12 words
_CUM_WEIGHTS: tuple[float, ...] = tuple(
    itertools.accumulate([1.0] * len(VOCAB) + [_PUNCT_WEIGHT] * len(PUNCTUATION))
)


def reply_rng(seed: int, request_seed: int | None, prompt: str) -> random.Random:
    """A generator seeded by the server seed, the request seed and the prompt.

    Why blake2b and not `hash()`: Python salts string hashes per process, and the same
    request must get the same reply across runs and restarts.
    """
    digest = hashlib.blake2b(f"{seed}|{request_seed}|".encode(), digest_size=8)
    digest.update(prompt.encode("utf-8", "surrogatepass"))
    return random.Random(int.from_bytes(digest.digest(), "big"))


def natural_length(cfg: OutputLenConfig, rng: random.Random) -> int:
    """Draw where the model would stop on its own (end of sequence), in tokens."""
    if cfg.dist == "fixed":
        n = round(cfg.mean)
    elif cfg.dist == "uniform":
        n = rng.randint(cfg.min, max(cfg.min, round(2 * cfg.mean - cfg.min)))
    elif cfg.dist == "exponential":
        n = round(rng.expovariate(1.0 / cfg.mean))
    else:
        mu = math.log(cfg.mean) - cfg.sigma**2 / 2
        n = round(rng.lognormvariate(mu, cfg.sigma))
    n = max(cfg.min, n)
    return min(n, cfg.max) if cfg.max is not None else n


@dataclass(frozen=True, slots=True)
class Reply:
    """A planned reply: its pieces (one token each) and why it ends."""

    pieces: list[str]
    finish_reason: str
    stop_string: str | None = None
    """The stop string that ended it (Anthropic's `stop_sequence`), when one did."""


def plan_reply(
    rng: random.Random,
    *,
    limit: int,
    min_tokens: int,
    ignore_eos: bool,
    stop: Sequence[str],
    length_cfg: OutputLenConfig,
) -> Reply:
    """Decide the reply: `limit` tokens if `ignore_eos`, else a drawn length clipped to it.

    Stop strings end the reply before the piece that would complete one (the stop string is
    not part of the text, as in vLLM); like vLLM they are ignored until `min_tokens`.
    """
    if ignore_eos:
        n, reason = limit, "length"
    else:
        n = max(natural_length(length_cfg, rng), min_tokens)
        n, reason = (limit, "length") if n >= limit else (n, "stop")
    if n <= 0:
        return Reply([], reason)
    pieces = rng.choices(PIECES, cum_weights=_CUM_WEIGHTS, k=n)
    if pieces[0][0] == " ":
        pieces[0] = pieces[0][1:]
    if stop:
        found = _stop_index(pieces, stop, min_tokens)
        if found is not None:
            cut, hit = found
            return Reply(pieces[:cut], "stop", hit)
    return Reply(pieces, reason)


def _stop_index(
    pieces: Sequence[str], stop: Sequence[str], min_tokens: int
) -> tuple[int, str] | None:
    """Index of the first piece whose addition would make the text contain a stop string,
    and that string."""
    keep = max(len(s) for s in stop)
    tail = ""
    for i, piece in enumerate(pieces):
        candidate = tail + piece
        if i >= min_tokens:
            for s in stop:
                if s in candidate:
                    return i, s
        tail = candidate[-keep:]
    return None
