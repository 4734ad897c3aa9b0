"""Server metrics in the Prometheus text format, under vLLM's names.

Why hand-written rather than `prometheus_client`: a dozen series do not justify a dependency,
and the counters are plain attributes bumped on the request path at no cost.
"""

from __future__ import annotations

import bisect
from collections import Counter

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


class SimMetrics:
    """Every counter the simulator exports; gauges are read from live objects at scrape time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.sessions: Counter[tuple[str, str]] = Counter()
        """Requests per (session header as configured, its value)."""
        self.ttft = Histogram(TTFT_BUCKETS)

    def render(self, *, running: int, waiting: int, kv_usage: float) -> str:
        """The `/metrics` body; why gauges as arguments: they live in the scheduler and cache."""
        m = f'model_name="{_escape(self.model)}"'
        lines: list[str] = []

        def series(name: str, kind: str, help_text: str, rows: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in rows:
                lines.append(f"{name}{{{labels}}} {_number(value)}")

        series("vllm:num_requests_running", "gauge", "Requests running.", [(m, running)])
        series("vllm:num_requests_waiting", "gauge", "Requests waiting.", [(m, waiting)])
        series("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage, 1 is 100%.", [(m, kv_usage)])
        series(
            "vllm:prefix_cache_queries_total", "counter",
            "Prompt tokens looked up in the prefix cache.", [(m, self.prefix_queries)],
        )  # fmt: skip
        series(
            "vllm:prefix_cache_hits_total", "counter",
            "Prompt tokens found in the prefix cache.", [(m, self.prefix_hits)],
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
            "Requests received on the completion endpoints, by outcome.",
            [(f'{m},outcome="{k}"', self.outcomes[k]) for k in OUTCOMES],
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
