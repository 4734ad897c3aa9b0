"""Workload sources: each yields `Conversation` plans (see `conversation.py`).

The seam the engine uses is `conversations(cfg, seed=..., base_dir=..., sizer=...)`; the
dataset tooling uses `load_dataset`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from turnbench.workload.config import (
    DatasetWorkload,
    SharedPrefixWorkload,
    SyntheticWorkload,
    WorkloadConfig,
)
from turnbench.workload.conversation import Conversation, Turn
from turnbench.workload.cycling import cycled
from turnbench.workload.dataset import DatasetLoad, load_dataset
from turnbench.workload.lengths import TextSizer
from turnbench.workload.shared_prefix import shared_prefix
from turnbench.workload.synthetic import synthetic

__all__ = [
    "Conversation",
    "DatasetLoad",
    "DatasetWorkload",
    "SharedPrefixWorkload",
    "SyntheticWorkload",
    "TextSizer",
    "Turn",
    "WorkloadConfig",
    "conversations",
    "load_dataset",
]


def conversations(
    cfg: WorkloadConfig, *, seed: int, base_dir: Path, sizer: TextSizer | None = None
) -> Iterator[Conversation]:
    """Yield the workload's conversation plans, lazily; endless when `cfg.cycle`.

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
    elif isinstance(cfg, SharedPrefixWorkload):
        plans = list(shared_prefix(cfg, seed, sizer))
    else:
        plans = list(synthetic(cfg, seed, sizer))
    return cycled(plans, cycle=cfg.cycle, salt=cfg.salt, sizer=sizer)
