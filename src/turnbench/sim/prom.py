"""Server metrics in the Prometheus text format, under vLLM's names.

Why hand-written rather than `prometheus_client`: a dozen series do not justify a dependency,
and the counters are plain attributes bumped on the request path at no cost.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's `vllm:time_to_first_token_seconds` bucket bounds."""

OUTCOMES: tuple[str, ...] = (
    "ok", "http500", "http429", "reset", "stall", "stall_mid", "malformed", "truncate", "error",
    "cancelled",
)  # fmt: skip
"""Labels of `turnbench_sim_requests_total`, listed even while zero."""


def _escape(value: str) -> str:
    """Escape a label value as the text format requires."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Histogram:
    """A cumulative-bucket histogram of seconds."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class ReplicaStats(Protocol):
    """What `/metrics` reads of one replica (`router.Replica`)."""

    name: str
    requests: int
    prefix_queries: int
    prefix_hits: int

    @property
    def running(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    @property
    def kv_usage(self) -> float: ...

    @property
    def evicted_blocks(self) -> int: ...


class SimMetrics:
    """Every counter the simulator exports; gauges are read from live objects at scrape time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.sessions: Counter[tuple[str, str]] = Counter()
        """Requests per (session header as configured, its value)."""
        self.ttft = Histogram(TTFT_BUCKETS)

    def render(self, replicas: Sequence[ReplicaStats]) -> str:
        """The `/metrics` body; why replicas as an argument: gauges and cache counters live in
        each replica's scheduler and cache.

        With several replicas those series carry one sample per replica (label `replica`), as
        a scrape of the whole fleet would; with one they have no such label, as vLLM's own.
        """
        m = f'model_name="{_escape(self.model)}"'
        lines: list[str] = []

        def per_replica(value: Callable[[ReplicaStats], float]) -> list[tuple[str, float]]:
            if len(replicas) == 1:
                return [(m, value(replicas[0]))]
            return [(f'{m},replica="{_escape(r.name)}"', value(r)) for r in replicas]

        def series(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in rows:
                lines.append(f"{name}{{{labels}}} {_number(value)}")

        series(
            "vllm:num_requests_running", "gauge", "Requests running.",
            per_replica(lambda r: r.running),
        )  # fmt: skip
        series(
            "vllm:num_requests_waiting", "gauge", "Requests waiting.",
            per_replica(lambda r: r.waiting),
        )  # fmt: skip
        series(
            "vllm:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 is 100%.",
            per_replica(lambda r: r.kv_usage),
        )  # fmt: skip
        series(
            "vllm:prefix_cache_queries_total", "counter",
            "Prompt tokens looked up in the prefix cache.", per_replica(lambda r: r.prefix_queries),
        )  # fmt: skip
        series(
            "vllm:prefix_cache_hits_total", "counter",
            "Prompt tokens found in the prefix cache.", per_replica(lambda r: r.prefix_hits),
        )  # fmt: skip
        series(
            "turnbench_sim_prefix_cache_evicted_blocks_total", "counter",
            "Prefix-cache blocks evicted to make room.", per_replica(lambda r: r.evicted_blocks),
        )  # fmt: skip
        series("vllm:prompt_tokens_total", "counter", "Prompt tokens.", [(m, self.prompt_tokens)])
        series(
            "vllm:generation_tokens_total", "counter", "Generated tokens.",
            [(m, self.generation_tokens)],
        )  # fmt: skip
        series(
            "vllm:request_success_total", "counter", "Requests finished, by finish reason.",
            [(f'{m},finished_reason="{_escape(k)}"', v) for k, v in sorted(self.success.items())],
        )  # fmt: skip
        self._render_ttft(lines, m)
        series(
            "turnbench_sim_session_requests_total", "counter",
            "Requests per session: the first configured session header present, its value.",
            [
                (f'{m},header="{_escape(h)}",session="{_escape(k)}"', v)
                for (h, k), v in sorted(self.sessions.items())
            ],
        )  # fmt: skip
        series(
            "turnbench_sim_requests_total", "counter",
            "Requests received on the generation endpoints, by outcome.",
            [(f'{m},outcome="{k}"', self.outcomes[k]) for k in OUTCOMES],
        )  # fmt: skip
        if len(replicas) > 1:
            series(
                "turnbench_sim_replica_requests_total", "counter",
                "Requests the router sent to each replica.", per_replica(lambda r: r.requests),
            )  # fmt: skip
        return "\n".join(lines) + "\n"

    def _render_ttft(self, lines: list[str], m: str) -> None:
        """Append the TTFT histogram: cumulative buckets, +Inf, sum and count."""
        name = "vllm:time_to_first_token_seconds"
        hist = self.ttft
        lines.append(f"# HELP {name} Time to first token, seconds.")
        lines.append(f"# TYPE {name} histogram")
        total = 0
        for bound, count in zip(hist.bounds, hist.counts, strict=False):
            total += count
            lines.append(f'{name}_bucket{{{m},le="{bound}"}} {total}')
        lines.append(f'{name}_bucket{{{m},le="+Inf"}} {hist.count}')
        lines.append(f"{name}_sum{{{m}}} {_number(hist.sum)}")
        lines.append(f"{name}_count{{{m}}} {hist.count}")


def _number(value: float) -> str:
    """Integers without a trailing `.0`, floats with full precision."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))
