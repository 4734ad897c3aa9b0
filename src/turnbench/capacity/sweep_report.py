"""A series sweep's record (sweep.json) and its console tables: one row per point, then the
Pareto frontier.

Why sweep.json holds a flat list of points: each point is a dict of the same keys (its load,
throughputs and latency percentiles), the shape a plot of throughput against latency or
tokens/s per user against tokens/s in total reads directly (docs/load-modes.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from turnbench.capacity.sweep import Sweep
from turnbench.metrics.stages import frontier_of
from turnbench.report.tables import TextTable, fmt, stage_load

SWEEP_JSON = "sweep.json"
VERSION = 1


def sweep_record(
    name: str, target: str | None, sweep: Sweep, points: list[dict[str, Any]], *, ended: str
) -> dict[str, Any]:
    """The record of a series sweep: its settings, every finished point, the frontier."""
    return {
        "version": VERSION,
        "name": name,
        "target": target,
        "over": sweep.over,
        "shape": sweep.shape,
        "planned": list(sweep.points),
        "point_duration_s": sweep.point_s,
        "warmup_s": sweep.warmup_s,
        "cooldown_s": sweep.cooldown_s,
        "ended": ended,
        "points": points,
        "frontier": frontier_of(points),
    }


def write_sweep(folder: Path, record: dict[str, Any]) -> Path:
    """Write sweep.json whole or not at all (a Ctrl-C mid-write leaves the last one)."""
    path = folder / SWEEP_JSON
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=2, default=str))
    os.replace(partial, path)
    return path


def points_table(record: dict[str, Any]) -> TextTable:
    """One row per finished point: its load, throughputs and latency percentiles."""
    rows = [
        [
            p["name"], stage_load(p["mode"], p["level"]),
            fmt(p["requests_ok"]), fmt(p["requests_failed"]),
            fmt(p["requests_per_s"], 2), fmt(p["output_tokens_per_s"]),
            fmt(p["output_tokens_per_s_per_user"]), fmt(p["ttft_ms"]["p50"]),
            fmt(p["ttft_ms"]["p90"]), fmt(p["tpot_ms"]["p90"]), fmt(p["e2e_ms"]["p90"]),
        ]
        for p in record["points"]
    ]  # fmt: skip
    header = [
        "point", "load", "ok", "failed", "req/s", "out tok/s", "tok/s/user p50",
        "TTFT p50 ms", "TTFT p90 ms", "TPOT p90 ms", "E2E p90 ms",
    ]  # fmt: skip
    return TextTable("Sweep points", header, rows)


def frontier_table(record: dict[str, Any]) -> TextTable | None:
    """The points on the Pareto frontier; None with fewer than two points."""
    if not record["frontier"]:
        return None
    rows = [
        [p["name"], stage_load(p["mode"], p["level"]), fmt(p["output_tokens_per_s"]),
         fmt(p["output_tokens_per_s_per_user"])]
        for p in record["frontier"]
    ]  # fmt: skip
    header = ["point", "load", "out tok/s", "tok/s/user p50"]
    return TextTable("Pareto frontier (tokens/s per user against in total)", header, rows)
