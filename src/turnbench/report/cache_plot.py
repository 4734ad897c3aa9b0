"""The prefix cache in one PNG: ideal against realised by turn, and kept over run time.

Why these two: by turn shows what the workload offers to cache and how much of it the server
kept; over run time shows when it stopped keeping it (the eviction cliff, marked).
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from turnbench.metrics.cache import KEPT_THRESHOLD
from turnbench.report.plots import _SIZE, _png


def cache_plot(cache: dict[str, Any] | None) -> bytes | None:
    """Mean ideal and realised cached tokens per turn (left), Σ realised / Σ ideal per time
    bin with the cliff marked (right); None without an ideal."""
    turns = (cache or {}).get("per_turn") or []
    if cache is None or not turns:
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=_SIZE)
    x = [t["turn"] for t in turns]
    ax.plot(x, [t["mean_prompt_tokens"] for t in turns], ":", label="prompt", color="tab:gray")
    ax.plot(x, [t["mean_ideal_tokens"] for t in turns], "-o", ms=3, label="ideal cached")
    realised = [(t["turn"], t["mean_realised_tokens"]) for t in turns]
    kept = [(turn, v) for turn, v in realised if v is not None]
    if kept:
        ax.plot([p[0] for p in kept], [p[1] for p in kept], "--s", ms=3, label="realised cached")
    ax.set_xlabel("turn")
    ax.set_ylabel("mean tokens")
    ax.set_ylim(bottom=0)
    ax.set_title("Cached tokens by turn")
    ax.legend(fontsize=8)
    width = cache["over_time"]["bin_s"]
    bins = [b for b in cache["over_time"]["bins"] if b["kept"] is not None]
    if bins:
        ax2.step(  # each bin's value held to its end, the last one's too
            [b["start_s"] for b in bins] + [bins[-1]["start_s"] + width],
            [b["kept"] * 100 for b in bins] + [bins[-1]["kept"] * 100],
            where="post",
            label="kept % (realised / ideal)",
        )
    ax2.axhline(KEPT_THRESHOLD * 100, color="tab:gray", ls=":", lw=1, label="cliff threshold")
    if cache["cliff"] is not None:
        ax2.axvline(cache["cliff"]["time_s"], color="tab:red", ls="--", label="eviction cliff")
    ax2.set_xlabel("run time (s)")
    ax2.set_ylabel("%")
    ax2.set_ylim(bottom=0)
    ax2.set_title(f"Kept over time ({width:.1f} s bins)")
    ax2.legend(fontsize=8, loc="lower left")
    return _png(fig)
