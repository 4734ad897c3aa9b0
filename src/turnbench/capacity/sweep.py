"""A sweep: one user count or session rate after another, over a list or a range, as the
stages of one run or as a series of runs; per point its throughput and latency, and the
Pareto frontier (tokens/s per user against tokens/s in total).

Why both shapes: stages of one run (the default) keep the server warm and cost no start-up
between points, and their rows are told apart by their stage; a series of runs gives each
point its own run folder, cache salt and cool-down, as the capacity search's probes (a
point is a probe with nothing to judge), and Ctrl-C keeps every finished point reported.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

from turnbench.capacity.probe import ProbeSpec, load_words, probe_config
from turnbench.config import RunConfig
from turnbench.errors import InputError
from turnbench.metrics.model import load_summary
from turnbench.metrics.stages_model import Stage
from turnbench.pacing.load import RUN_WIDE_KEYS

Over = Literal["users", "rate"]
Shape = Literal["stages", "runs"]
MAX_POINTS = 1000
"""More points than this is a typo in a range (`1..1000000`), not a sweep."""

_RANGE = re.compile(r"^\s*([0-9.]+)\s*\.\.\s*([0-9.]+)\s*(?:([x+])\s*([0-9.]+))?\s*$")


def _number(text: str, flag: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{flag} {spec!r}: {text!r} is not a number") from None
    if not value > 0:
        raise InputError(f"{flag} {spec!r}: every load must be above 0, got {text}")
    return value


def parse_points(spec: str, over: Over) -> tuple[float, ...]:
    """The loads of `--users` or `--rate`: a list (`2,4,8`), a linear range (`1..5`, step 1;
    `1..5+0.5`) or a geometric one (`2..32x2`). Users are whole numbers."""
    flag = f"--{over}"
    match = _RANGE.match(spec)
    if match is None:
        values = [_number(part.strip(), flag, spec) for part in spec.split(",") if part.strip()]
        if not values:
            raise InputError(f"{flag} {spec!r}: give a list (2,4,8) or a range (2..32x2)")
    else:
        first = _number(match[1], flag, spec)
        last = _number(match[2], flag, spec)
        how, step = match[3] or "+", _number(match[4] or "1", flag, spec)
        if last < first:
            raise InputError(f"{flag} {spec!r}: the range is empty ({first:g} > {last:g})")
        if how == "x" and step <= 1:
            raise InputError(f"{flag} {spec!r}: a geometric range needs a factor above 1")
        values = []
        value = first
        while value <= last * (1 + 1e-9) and len(values) <= MAX_POINTS:
            values.append(round(value, 9))
            value = value * step if how == "x" else value + step
    if len(values) > MAX_POINTS:
        raise InputError(f"{flag} {spec!r}: more than {MAX_POINTS} points")
    if over == "users" and any(v != int(v) for v in values):
        raise InputError(f"{flag} {spec!r}: a user count is a whole number")
    return tuple(dict.fromkeys(values))  # each load once, in the order given


@dataclass(frozen=True)
class Sweep:
    """What a sweep plays: the loads, how long each, and in which shape."""

    over: Over
    points: tuple[float, ...]
    point_s: float
    warmup_s: float
    shape: Shape
    cooldown_s: float

    def check(self) -> None:
        """Refuse settings that cannot measure anything, in the words of the flags."""
        if not self.point_s > 0:
            raise InputError(f"--point-duration must be above 0, got {self.point_s:g}")
        if not 0 <= self.warmup_s < self.point_s:
            raise InputError(
                f"--warmup {self.warmup_s:g} must be at least 0 and shorter than a point's "
                f"{self.point_s:g} s (--point-duration)"
            )
        if self.cooldown_s < 0:
            raise InputError(f"--cooldown must be 0 or more, got {self.cooldown_s:g}")

    def stage_name(self, value: float) -> str:
        """A point's stage name: `users-8`, `rate-2.5`."""
        return f"{self.over}-{value:g}"


def staged_config(cfg: RunConfig, sweep: Sweep) -> RunConfig:
    """The user's config as one run whose stages are the points: each lasts the point's
    duration and cuts its sessions at its end (a drain into the next point would add its
    load to the next one's). A warm-up, if any, is one more stage at the first load, named
    `warmup`, left out of the figures."""
    if cfg.stages is not None:
        raise InputError("a sweep makes the stages itself: remove the config's stages")
    data = cfg.model_dump()
    given = data["load"]
    data["load"] = {key: given[key] for key in RUN_WIDE_KEYS} | {"max_requests": None}

    def stage(value: float, name: str, duration: float) -> dict[str, Any]:
        if sweep.over == "users":
            mode: dict[str, Any] = {"mode": "users", "users": int(value)}
        else:
            mode = {"mode": "session-rate", "rate": value}
            mode.update({k: given[k] for k in ("arrival", "burstiness") if k in given})
            if mode.get("arrival") == "trace":
                raise InputError(
                    "a rate sweep draws arrivals at each point's rate: load.arrival trace "
                    "has recorded times instead; use poisson, constant or gamma",
                    field="load.arrival",
                )
        return {"name": name, "duration_s": duration, "at_end": "cut", **mode}

    stages = []
    if sweep.warmup_s > 0:
        stages.append(stage(sweep.points[0], "warmup", sweep.warmup_s))
    stages += [stage(v, sweep.stage_name(v), sweep.point_s) for v in sweep.points]
    data["stages"] = stages
    data["load"]["warmup_s"] = 0.0
    return RunConfig.model_validate(data)


def point_spec(sweep: Sweep, index: int, value: float) -> ProbeSpec:
    """The run of one point in a series: a probe with nothing to judge."""
    return ProbeSpec(index, sweep.over, value, "point", sweep.point_s, sweep.warmup_s, kind="point")


def point_figures(folder: Path, spec: ProbeSpec, end_reason: str) -> Stage:
    """One point's record: its load and how its run ended, and its figures from its
    events.db, as a stage's are (`describe_point`: counts, steady-state window, throughputs,
    latency, per turn, conversations/h, goodput per tier), over its part after the warm-up."""
    from turnbench.metrics.stages import describe_point
    from turnbench.record.journal import open_readonly

    conn = open_readonly(folder / "events.db")
    try:
        (config_json,) = conn.execute("SELECT config_json FROM runs").fetchone()
        return describe_point(
            conn,
            json.loads(config_json),
            int(spec.warmup_s * 1e9),
            int(spec.duration_s * 1e9),
            name=spec.name,
            folder=spec.name,
            mode="users" if spec.over == "users" else "session-rate",
            level=spec.load,
            end_reason=end_reason,
        )
    finally:
        conn.close()


def run_series(
    cfg: RunConfig, sweep: Sweep, *, folder: Path, base_dir: Path, console: Console
) -> Iterator[Stage]:
    """Run each point as its own run into `folder`, yielding each finished point's record
    (the caller writes it down before the next point starts, so Ctrl-C keeps it). The
    probe machinery runs it; the point is not judged. A point Ctrl-C cut is the last."""
    from turnbench.run import execute  # the engine: imported when a point runs

    for index, value in enumerate(sweep.points, start=1):
        if index > 1 and sweep.cooldown_s > 0:
            time.sleep(sweep.cooldown_s)
        spec = point_spec(sweep, index, value)
        console.print(
            f"point {index:02d}: {load_words(sweep.over, value)} for {sweep.point_s:g} s",
            highlight=False,
        )
        text = io.StringIO()
        stamped = execute(
            probe_config(cfg, spec),
            base_dir=base_dir,
            out=folder,
            console=Console(file=text, width=120),
            live=False,
            html=False,
        )
        target = folder / spec.name
        stamped.rename(target)
        (target / "console.txt").write_text(text.getvalue().replace(str(stamped), str(target)))
        summary = load_summary(target / "summary.json")
        point = point_figures(target, spec, summary.run.end_reason or "crashed")
        yield point
        if point.end_reason == "interrupted":
            return
