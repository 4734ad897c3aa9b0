"""Groups of prompts sharing a long system prompt (SGLang's generated-shared-prefix,
inference-perf's shared_prefix), as one-turn requests or as one session per group.

Why sessions are an option: one-turn requests measure prefix-cache hits across users; a
session per group measures the same prefix growing turn by turn, and `group` keeps the group's
conversations on one worker either way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import SharedPrefixWorkload
from turnbench.workload.conversation import Conversation, Turn


def _length(rng: random.Random, length: int, ratio: float) -> int:
    """A length uniform in [ceil(length * ratio), length], at least 1 (fixed when ratio = 1)."""
    low = max(1, math.ceil(length * ratio))
    return rng.randint(low, length) if length >= low else length


def shared_prefix(
    cfg: SharedPrefixWorkload, seed: int, sizer: TextSizer = TextSizer()
) -> Iterator[Conversation]:
    """Yield the groups' plans, deterministic in the seed (cfg.seed, else the run's)."""
    seed = cfg.seed if cfg.seed is not None else seed
    rng = random.Random(f"turnbench-shared-prefix-{seed}")
    for g in range(cfg.num_groups):
        sys_len = (
            _length(rng, cfg.system_prompt_len, cfg.system_prompt_len_range_ratio)
            if cfg.system_prompt_len
            else 0
        )
        system = sizer.make_text(sys_len, rng) if sys_len else None
        turns = [
            Turn(
                messages=(
                    {
                        "role": "user",
                        "content": sizer.make_text(
                            _length(rng, cfg.question_len, cfg.question_len_range_ratio), rng
                        ),
                    },
                ),
                max_tokens=_length(rng, cfg.output_len, cfg.output_len_range_ratio),
            )
            for _ in range(cfg.prompts_per_group)
        ]
        if cfg.as_sessions:
            n = cfg.turns_per_session or cfg.prompts_per_group
            yield Conversation(
                id=f"sp-g{g}",
                turns=tuple(turns[k % len(turns)] for k in range(n)),
                system=system,
                group=str(g),
            )
        else:
            for p, turn in enumerate(turns):
                yield Conversation(id=f"sp-g{g}-p{p}", turns=(turn,), system=system, group=str(g))
