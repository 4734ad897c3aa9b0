"""`turnbench sweep`: a user count or a session rate over a list or a range, with each
point's throughput and latency and the Pareto frontier.

Why its own module: as `cli_capacity.py`, the command has its own flags (the points, their
length, the shape) on top of the few of `run` a sweep needs; `cli.py` imports it (so it joins
the app) when the command is wanted, and the sweep's modules are imported only when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from turnbench.cli import app
from turnbench.cli_format import (
    Command,
    api_option,
    fail,
    flag_error,
    model_option,
    series_overrides,
    target_option,
)
from turnbench.entry import INTERRUPTED_EXIT
from turnbench.errors import InputError
from turnbench.slo import FLAG_HELP as SLO_HELP

STOPPED_EXIT = 2
"""A series a target or engine error stopped after some points: reported, but not whole."""
POINTS_HELP = "a list (2,4,8), a linear range (1..5, step 1; 1..5+0.5) or a geometric one (2..32x2)"


@app.command("sweep", cls=Command)
def sweep_command(
    config: Path | None = typer.Argument(
        None, help="YAML config of the workload and target (see examples/).", show_default=False
    ),
    users: str | None = typer.Option(
        None, "--users", metavar="POINTS", help=f"User counts (closed loop): {POINTS_HELP}."
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        metavar="POINTS",
        help=f"Session rates, sessions/s (open loop, the config's arrival): {POINTS_HELP}.",
    ),
    target: str | None = target_option(),
    model: str | None = model_option(),
    api: str | None = api_option(),
    name: str | None = typer.Option(
        None, "--name", help=r"Sweep name, part of its folder's name. \[default: run]"
    ),
    out: Path | None = typer.Option(
        None, "--out", help=r"Folder that receives the sweep's folder. \[default: runs]"
    ),
    shape: str = typer.Option(
        "stages",
        "--as",
        metavar="stages|runs",
        help="stages: one run, a stage per point (rows tagged by stage); runs: one run folder "
        "per point, each salted, with a cool-down between them.",
    ),
    point_duration: float = typer.Option(
        20.0, "--point-duration", metavar="SECONDS", help="Length of one point."
    ),
    warmup: float | None = typer.Option(
        None,
        "--warmup",
        metavar="SECONDS",
        help="stages: a warm-up stage at the first load before the points; runs: the start of "
        "each point left out of its figures. Unset: none for stages (each stage's "
        "steady-state window leaves out its ramp), a quarter of a point for runs.",
    ),
    cooldown: float = typer.Option(
        3.0, "--cooldown", metavar="SECONDS", help="runs: pause between two points."
    ),
    slo: list[str] = typer.Option([], "--slo", metavar="SLO", help=SLO_HELP, show_default=False),
    sets: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="Override any config key: dotted.key=value (repeatable).",
        show_default=False,
    ),
) -> None:
    """Play a list or a range of user counts or session rates: per point its throughput and
    latency, and the Pareto frontier of tokens/s per user against tokens/s in total."""
    from turnbench.capacity.sweep import Over, Sweep, parse_points
    from turnbench.capacity.sweep_run import run_sweep
    from turnbench.config_load import load_config
    from turnbench.errors import EngineError, TargetError
    from turnbench.report.files import default_console
    from turnbench.slo import with_flags

    if (users is None) == (rate is None):
        raise fail("give the points as --users POINTS or --rate POINTS (one of them)")
    if shape not in ("stages", "runs"):
        raise fail(f"--as expects stages or runs, got {shape!r}")
    overrides, given = series_overrides(target, model, api, name)
    console = default_console()
    try:
        over: Over = "users" if users is not None else "rate"
        points = parse_points(users if users is not None else str(rate), over)
        default_warmup = point_duration / 4 if shape == "runs" else 0.0
        sweep = Sweep(
            over=over,
            points=points,
            point_s=point_duration,
            warmup_s=default_warmup if warmup is None else warmup,
            shape="runs" if shape == "runs" else "stages",
            cooldown_s=cooldown,
        )
        sweep.check()
        cfg = load_config(config, overrides, sets)
        cfg.slo = with_flags(cfg.slo, slo)
        base_dir = config.resolve().parent if config else Path.cwd()
        ended = run_sweep(cfg, sweep, base_dir=base_dir, out=out, console=console)
    except InputError as e:
        raise fail(flag_error(e, given)) from None
    except (TargetError, EngineError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail(
            "interrupted before the sweep started; nothing was written", INTERRUPTED_EXIT
        ) from None
    if ended == "interrupted":
        raise typer.Exit(INTERRUPTED_EXIT)
    if ended == "stopped":
        raise typer.Exit(STOPPED_EXIT)
