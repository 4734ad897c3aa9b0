"""Synthetic conversations: lengths drawn from distributions, text written at send time.

Why user text is left unwritten: ten thousand planned sessions then cost a few integers each;
the session writes `input_tokens` tokens with its `TextSizer` when it sends.
System prompts are written here, one per group from a per-group seed, so every conversation of
a group shares its prompt byte for byte (and the server's prefix cache can reuse it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import count

from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import SyntheticWorkload
from turnbench.workload.conversation import Conversation, Turn


def system_prompt(seed: int, group: int, n_tokens: int, sizer: TextSizer = TextSizer()) -> str:
    """The shared system prompt of one group: the same seed and group give the same text."""
    return sizer.make_text(n_tokens, random.Random(f"turnbench-system-{seed}-{group}"))


def synthetic(
    cfg: SyntheticWorkload, seed: int, sizer: TextSizer = TextSizer()
) -> Iterator[Conversation]:
    """Yield `cfg.conversations` plans, or new ones without end when it is unset;
    deterministic in the seed (cfg.seed, else the run's)."""
    seed = cfg.seed if cfg.seed is not None else seed
    rng = random.Random(f"turnbench-synthetic-{seed}")
    prompts: dict[int, str] = {}
    for i in count() if cfg.conversations is None else range(cfg.conversations):
        group = i % cfg.system_prompt_groups
        system = None
        if cfg.system_prompt_tokens > 0:
            if group not in prompts:
                prompts[group] = system_prompt(seed, group, cfg.system_prompt_tokens, sizer)
            system = prompts[group]
        n_turns = cfg.turns.sample_int(rng, minimum=1)
        turns = tuple(
            Turn(
                input_tokens=cfg.input_tokens.sample_int(rng, minimum=1),
                max_tokens=cfg.output_tokens.sample_int(rng, minimum=1),
            )
            for _ in range(n_turns)
        )
        yield Conversation(
            id=f"syn-{i}", turns=turns, system=system, metadata={"prompt_group": group}
        )
