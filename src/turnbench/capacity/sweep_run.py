"""Running a sweep: as the stages of one run, or as a series of runs in one sweep folder.

Why the series writes sweep.json after every point: a sweep takes minutes, and Ctrl-C (or a
server that goes away) must leave every finished point reported. The built-in simulator,
when no target is given, is started once for the whole series, as for a capacity search.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from turnbench.capacity.probe import probe_config
from turnbench.capacity.sweep import Sweep, point_spec, run_series, staged_config
from turnbench.capacity.sweep_page import write_sweep_html
from turnbench.capacity.sweep_report import (
    frontier_table,
    points_table,
    sweep_record,
    write_sweep,
)
from turnbench.config import RunConfig
from turnbench.errors import EngineError, TargetError
from turnbench.metrics.model import load_summary
from turnbench.metrics.stages_model import Stage
from turnbench.run import new_folder
from turnbench.target import Target, start_builtin_sim


def run_sweep(
    cfg: RunConfig, sweep: Sweep, *, base_dir: Path, out: Path | None, console: Console
) -> str:
    """Run the sweep; return how it ended (`completed`, `interrupted`, `stopped`, or the
    staged run's end reason)."""
    if sweep.shape == "stages":
        return _as_stages(cfg, sweep, base_dir=base_dir, out=out, console=console)
    return _as_runs(cfg, sweep, base_dir=base_dir, out=out, console=console)


def _as_stages(
    cfg: RunConfig, sweep: Sweep, *, base_dir: Path, out: Path | None, console: Console
) -> str:
    """One run, a stage per point: its report shows the Stages and Pareto frontier tables."""
    from turnbench.run import execute

    staged = staged_config(cfg.model_copy(update={"name": f"sweep-{cfg.name}"}), sweep)
    folder = execute(staged, base_dir=base_dir, out=out, console=console)
    return load_summary(folder / "summary.json").run.end_reason or "crashed"


def _as_runs(
    cfg: RunConfig, sweep: Sweep, *, base_dir: Path, out: Path | None, console: Console
) -> str:
    """A run folder per point inside the sweep's folder; sweep.json after every point."""
    probe_config(cfg, point_spec(sweep, 1, sweep.points[0]))  # bad input before anything
    builtin = None
    if cfg.target.url is None:
        builtin, url = start_builtin_sim(cfg.target.sim_args)
        console.print(f"started the built-in simulator at {url}")
        cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"url": url})})
    folder = new_folder(cfg, out, f"sweep-{cfg.name}")
    console.print(f"sweep folder: {folder}", soft_wrap=True, highlight=False)
    points: list[Stage] = []
    ended = "completed"
    slo = cfg.slo.model_dump(mode="json") if cfg.slo else None
    try:
        for point in run_series(cfg, sweep, folder=folder, base_dir=base_dir, console=console):
            points.append(point)
            if point.end_reason == "interrupted":
                ended = "interrupted"
            record = sweep_record(cfg.name, cfg.target.url, sweep, points, ended=ended, slo=slo)
            write_sweep(folder, record)
    except KeyboardInterrupt:
        ended = "interrupted"
        console.print("[yellow]interrupted[/]: the sweep stops; finished points are kept")
    except (TargetError, EngineError) as e:
        if not points:
            shutil.rmtree(folder, ignore_errors=True)
            raise  # nothing measured yet: one error line, no folder
        ended = "stopped"
        console.print(f"[bold red]problem:[/] {escape(str(e))}; finished points are kept")
    finally:
        if builtin is not None:
            Target(url="", model="", max_model_len=None, builtin=builtin).close()
    if not points:
        shutil.rmtree(folder, ignore_errors=True)
        return ended
    record = sweep_record(cfg.name, cfg.target.url, sweep, points, ended=ended, slo=slo)
    path = write_sweep(folder, record)
    _print(record, console)
    page = write_sweep_html(folder, record, slo)
    console.print(f"sweep.html: {page}", soft_wrap=True, highlight=False)
    console.print(f"sweep: {path}", soft_wrap=True, highlight=False)
    return ended


def _print(record: dict[str, Any], console: Console) -> None:
    from turnbench.report.console import to_rich

    console.print(to_rich(points_table(record)))
    front = frontier_table(record)
    if front is not None:
        console.print(to_rich(front))
