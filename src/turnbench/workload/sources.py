"""The seam the engine uses: a workload config in, conversation plans out.

Why its own module (not the package's `__init__`): a worker process imports
`turnbench.workload.conversation` to unpickle plans, and must not pay for every source's
imports (dataset readers, pydantic models) on its way to sending its first request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from turnbench.tokens.sizer import TextSizer
from turnbench.workload.config import (
    DatasetWorkload,
    SharedPrefixWorkload,
    SyntheticAgentWorkload,
    WorkloadConfig,
)
from turnbench.workload.conversation import Conversation
from turnbench.workload.cycling import cycled
from turnbench.workload.dataset import load_dataset
from turnbench.workload.shared_prefix import shared_prefix
from turnbench.workload.synthetic import synthetic
from turnbench.workload.synthetic_agent import synthetic_agents


def conversations(
    cfg: WorkloadConfig, *, seed: int, base_dir: Path, sizer: TextSizer | None = None
) -> Iterator[Conversation]:
    """Yield the workload's conversation plans, lazily; endless when `cfg.cycle`, and for a
    synthetic workload whose `conversations` count is unset (it generates them as they go).
    Synthetic agents are always generated as they go (a cycled copy is rebuilt, not kept).

    Texts the source writes to a token length (system prompts, questions, trace blocks, salted
    first turns) are sized by `sizer` for the server's tokenizer; default: exact for the
    simulator.

    Why the dataset is loaded and checked in this call, not at the first `next`: a bad record
    anywhere must fail the run before it starts.
    Relative dataset paths resolve against `base_dir`, the config file's folder.
    """
    sizer = sizer or TextSizer()
    plans: Sequence[Conversation]
    if isinstance(cfg, DatasetWorkload):
        path = cfg.path if cfg.path.is_absolute() else base_dir / cfg.path
        plans = load_dataset(path, cfg.format, cfg, sizer).conversations
    elif isinstance(cfg, SyntheticAgentWorkload):
        return synthetic_agents(cfg, seed, sizer)
    elif isinstance(cfg, SharedPrefixWorkload):
        plans = list(shared_prefix(cfg, seed, sizer))
    elif cfg.conversations is None:
        return synthetic(cfg, seed, sizer)
    else:
        plans = list(synthetic(cfg, seed, sizer))
    return cycled(plans, cycle=cfg.cycle, salt=cfg.salt, sizer=sizer)
