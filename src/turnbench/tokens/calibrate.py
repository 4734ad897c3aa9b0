"""Calibrate text lengths by the server's own token counts (its `/tokenize`).

Why a counting function is passed in: this package imports no transport (the direction
ARCHITECTURE.md keeps for `workload/`, `pacing/` and `tokens/`), so the HTTP side of a
`/tokenize` request lives with the target (`target.calibrate`), and what is measured here is
only arithmetic on the counts it returns.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from turnbench.tokens.sizer import TextSizer
from turnbench.tokens.template import VOCAB

CALIBRATION_WORDS = 2000
"""Words of the text whose token count calibrates `server` sizing."""

Counter = Callable[[str], Awaitable[int | None]]
"""The server's token count of a text, None when it cannot say."""


async def calibrate(count: Counter, *, tokenizer_json: str | None = None) -> TextSizer:
    """The sizer for this server: its tokenizer.json, else its token counts, else approximate.

    Why two calibration texts (2,000 and 1,000 words): their difference cancels any special
    tokens (BOS) the endpoint adds. A ratio of exactly 1.0 is a word-per-token tokenizer (the
    simulator), whose sizing is exact per text.
    """
    if tokenizer_json is not None:
        sizer = TextSizer("tokenizer.json", tokenizer_json=tokenizer_json)
        sizer.make_text(1, random.Random(0))  # load and check the file now
        return sizer
    words = random.Random("turnbench-calibration").choices(VOCAB, k=CALIBRATION_WORDS)
    half = CALIBRATION_WORDS // 2
    full = await count(" ".join(words))
    part = await count(" ".join(words[:half]))
    if full is None or part is None or full <= part:
        return TextSizer("approximate")
    ratio = (full - part) / (CALIBRATION_WORDS - half)
    if ratio == 1.0:
        return TextSizer("simulator-exact")
    return TextSizer("server", tokens_per_word=ratio)
