"""A series sweep's record (sweep.json) and its console tables: one row per point, then the
Pareto frontier.

Why sweep.json holds a flat list of points: each point is an object of the same keys (its
load, throughputs and latency percentiles: a `Stage`, as a staged run's stages are), the
shape a plot of throughput against latency or tokens/s per user against tokens/s in total
reads directly (docs/load-modes.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec

from turnbench.capacity.sweep import Sweep
from turnbench.metrics.stages import frontier_of
from turnbench.metrics.stages_model import FrontierPoint, Stage
from turnbench.report.tables import TextTable, fmt, good_pct, stage_load

SWEEP_JSON = "sweep.json"
VERSION = 1


def sweep_record(
    name: str,
    target: str | None,
    sweep: Sweep,
    points: list[Stage],
    *,
    ended: str,
    slo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a series sweep: its settings and SLOs, every finished point, the
    frontier."""
    return {
        "version": VERSION,
        "name": name,
        "target": target,
        "slo": slo,
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
    partial.write_bytes(msgspec.json.format(msgspec.json.encode(record, enc_hook=str), indent=2))
    os.replace(partial, path)
    return path


def points_table(record: dict[str, Any]) -> TextTable:
    """One row per finished point: its load, throughputs, latency percentiles, and its
    request goodput % (a column per SLO tier), over its steady-state window as a stage's."""
    points: list[Stage] = record["points"]
    tiers = list((points[0].goodput or {}) if points else {})
    rows = [
        [
            p.name, stage_load(p.mode, p.level),
            fmt(p.requests.ok), fmt(p.requests.failed + p.requests.cancelled),
            fmt(p.requests_per_s, 2), fmt(p.output_tokens_per_s),
            fmt(p.output_tokens_per_s_per_user), fmt(p.conversations_per_h),
            fmt(p.ttft_ms.p50), fmt(p.ttft_ms.p90), fmt(p.tpot_ms.p90),
            fmt(p.e2e_ms.p90), *(good_pct(p, tier) for tier in tiers),
        ]
        for p in points
    ]  # fmt: skip
    header = [
        "point", "load", "ok", "failed/cut", "req/s", "out tok/s", "tok/s/user p50", "conv/h",
        "TTFT p50 ms", "TTFT p90 ms", "TPOT p90 ms", "E2E p90 ms",
        *(f"good % {t}" for t in tiers),
    ]  # fmt: skip
    return TextTable("Sweep points (figures over each point's steady-state window)", header, rows)


def frontier_table(record: dict[str, Any]) -> TextTable | None:
    """The points on the Pareto frontier; None with fewer than two points."""
    front: list[FrontierPoint] = record["frontier"]
    if not front:
        return None
    rows = [
        [p.name, stage_load(p.mode, p.level), fmt(p.output_tokens_per_s),
         fmt(p.output_tokens_per_s_per_user)]
        for p in front
    ]  # fmt: skip
    header = ["point", "load", "out tok/s", "tok/s/user p50"]
    return TextTable("Pareto frontier (tokens/s per user against in total)", header, rows)
