"""Workload sources: each yields `Conversation` plans (see `conversation.py`).

The seam the engine uses is `sources.conversations(cfg, seed=..., base_dir=..., sizer=...)`;
the dataset tooling uses `dataset.load_dataset`. This package's `__init__` imports nothing, so
a worker process that only needs `conversation` and `lengths` starts fast.
"""
