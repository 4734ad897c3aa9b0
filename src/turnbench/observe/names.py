"""The metric names of the servers turnbench knows, each mapped to what it measures (its role).

Why roles: vLLM, SGLang, llama.cpp's llama-server and TGI export the same few facts (requests
running and waiting, KV-cache usage, prefix-cache hits) under different names; the report
speaks of the fact, and says which name it came from. Every other metric is still recorded
as it comes; these are the ones the report reads.

Names as exposed (a counter with its `_total`), checked against each server's source or docs:
vLLM's `vllm/v1/metrics/loggers.py` (the `gpu_` names are the spellings before 0.9, still
exported beside the new ones for a while: the new one wins where both are present); SGLang's
`python/sglang/srt/metrics/collector.py`; llama-server's `/metrics` (run with `--metrics`;
`kv_cache_usage_ratio` only in builds before the unified KV cache, `prompt_tokens_cached_total`
only in recent ones); TGI's metrics reference. The built-in simulator exports vLLM's names.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a known metric measures."""

    RUNNING = "running"
    """Gauge: requests being decoded (in the running batch)."""
    WAITING = "waiting"
    """Gauge: requests queued for a place in the batch."""
    KV_USAGE = "kv_usage"
    """Gauge: share of the KV cache in use, 0 to 1."""
    PREFIX_HITS = "prefix_hits"
    """Counter: prompt tokens found in the prefix cache."""
    PREFIX_QUERIES = "prefix_queries"
    """Counter: prompt tokens looked up in the prefix cache (hits included)."""
    PREFIX_MISSES = "prefix_misses"
    """Counter: prompt tokens computed, not found in the cache (where no queries counter is)."""
    PREEMPTIONS = "preemptions"
    """Counter: requests preempted (vLLM) or retracted (SGLang) to free KV cache."""
    EXTERNAL_HITS = "external_hits"
    """Counter: prompt tokens loaded from an external or offloaded KV cache (vLLM connector)."""
    EXTERNAL_QUERIES = "external_queries"
    """Counter: prompt tokens looked up in that external cache."""


GAUGES = frozenset({Role.RUNNING, Role.WAITING, Role.KV_USAGE})
"""Roles read as they are at each scrape; the others are counters, read as their growth."""

NAMES: dict[Role, tuple[str, ...]] = {
    Role.RUNNING: (
        "vllm:num_requests_running",
        "sglang:num_running_reqs",
        "llamacpp:requests_processing",
        "tgi_batch_current_size",
    ),
    Role.WAITING: (
        "vllm:num_requests_waiting",
        "sglang:num_queue_reqs",
        "llamacpp:requests_deferred",
        "tgi_queue_size",
    ),
    Role.KV_USAGE: (
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "sglang:token_usage",
        "llamacpp:kv_cache_usage_ratio",
    ),
    Role.PREFIX_HITS: (
        "vllm:prefix_cache_hits_total",
        "vllm:gpu_prefix_cache_hits_total",
        "sglang:cached_tokens_total",
        "llamacpp:prompt_tokens_cached_total",
    ),
    Role.PREFIX_QUERIES: (
        "vllm:prefix_cache_queries_total",
        "vllm:gpu_prefix_cache_queries_total",
        "sglang:prompt_tokens_total",
    ),
    Role.PREFIX_MISSES: ("llamacpp:prompt_tokens_total",),
    Role.PREEMPTIONS: ("vllm:num_preemptions_total", "sglang:num_retracted_requests_total"),
    Role.EXTERNAL_HITS: ("vllm:external_prefix_cache_hits_total",),
    Role.EXTERNAL_QUERIES: ("vllm:external_prefix_cache_queries_total",),
}
"""Each role's names, the preferred first: a scrape may hold an old and a new spelling."""

KNOWN = frozenset(name for names in NAMES.values() for name in names)
"""Every name with a role: kept first when a scrape has more series than the cap."""

FAMILIES: tuple[tuple[str, str], ...] = (
    ("turnbench_sim_", "turnbench sim, vLLM names"),
    ("vllm:", "vLLM"),
    ("sglang:", "SGLang"),
    ("llamacpp:", "llama.cpp"),
    ("tgi_", "TGI"),
)
"""Name prefixes that tell which server spoke, checked in this order."""


def choose(present: set[str]) -> dict[Role, str]:
    """For each role, the preferred of its names among those `present` in a run's rows."""
    chosen = {}
    for role, names in NAMES.items():
        name = next((n for n in names if n in present), None)
        if name is not None:
            chosen[role] = name
    return chosen


def family(present: set[str]) -> str | None:
    """Which server's names a run's rows carry (None: none that turnbench knows)."""
    return next(
        (label for prefix, label in FAMILIES if any(n.startswith(prefix) for n in present)),
        None,
    )
