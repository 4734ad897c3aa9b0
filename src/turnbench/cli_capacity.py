"""`turnbench capacity`: the largest user count or session rate that meets the SLOs.

Why its own module: the command has its own flags (the range, the probes, the criteria) on
top of the few of `run` a search needs; `cli.py` imports it (so it joins the app) when the
command is wanted, and the search's modules are imported only when the command runs.
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
"""A search a target or engine error stopped after some probes: reported, but no answer."""


@app.command("capacity", cls=Command)
def capacity_command(
    config: Path | None = typer.Argument(
        None,
        help="YAML config of the probes' workload and target (see examples/).",
        show_default=False,
    ),
    target: str | None = target_option(),
    model: str | None = model_option(),
    api: str | None = api_option(),
    name: str | None = typer.Option(
        None, "--name", help=r"Search name, part of its folder's name. \[default: run]"
    ),
    out: Path | None = typer.Option(
        None, "--out", help=r"Folder that receives the search folder. \[default: runs]"
    ),
    slo: list[str] = typer.Option([], "--slo", metavar="SLO", help=SLO_HELP, show_default=False),
    tier: str | None = typer.Option(
        None, "--tier", help="The SLO tier a probe must pass; unset: every tier."
    ),
    goodput: float | None = typer.Option(
        None,
        "--goodput",
        metavar="PERCENT",
        help="Judge conversation goodput instead of percentiles: at least PERCENT % of the "
        "conversations good (every request met the tier's thresholds; without an SLO, "
        "every turn succeeded).",
    ),
    max_failures: float = typer.Option(
        1.0,
        "--max-failures",
        metavar="PERCENT",
        help="Percentile SLOs: a probe fails when more than PERCENT % of its requests failed.",
    ),
    over: str = typer.Option(
        "users",
        "--over",
        metavar="users|rate",
        help="users (closed loop, load.mode users) or rate (open loop, "
        "sessions per second, load.mode session-rate).",
    ),
    start: float = typer.Option(1.0, "--start", help="The first load probed."),
    stop: float = typer.Option(1024.0, "--max", help="The largest load probed."),
    growth: float = typer.Option(
        2.0, "--growth", help="Factor between two loads until one fails (users: at least +1)."
    ),
    precision: float = typer.Option(
        0.05,
        "--precision",
        help="Bisect until the failing load is at most this fraction above the holding one "
        "(users: or one user apart).",
    ),
    probe_duration: float = typer.Option(
        20.0, "--probe-duration", metavar="SECONDS", help="Length of one probe, warm-up included."
    ),
    warmup: float | None = typer.Option(
        None,
        "--warmup",
        metavar="SECONDS",
        help="Start of each probe left out of its figures; unset: a quarter of the probe.",
    ),
    cooldown: float = typer.Option(
        3.0, "--cooldown", metavar="SECONDS", help="Pause between two probes (the server idles)."
    ),
    min_sessions: int = typer.Option(
        5,
        "--min-sessions",
        help="Conversations a probe must finish after its warm-up; one with fewer is run "
        "once more, for longer.",
    ),
    max_probes: int = typer.Option(20, "--max-probes", help="Most probes of the search in all."),
    repeats: int = typer.Option(
        1, "--repeats", help="Extra probes of each end of the final bracket, for the spread."
    ),
    probe_html: bool = typer.Option(
        False,
        "--probe-html",
        help="Draw each probe's report.html (about 2 s a probe); by default a probe keeps "
        "events.db and summary.json, and `turnbench report PROBE_DIR` draws it later.",
    ),
    no_early_stop: bool = typer.Option(
        False,
        "--no-early-stop",
        help="Run every probe to its end, even one that has clearly failed (by default a "
        "probe stops once so many requests missed a percentile SLO, or failed, that the rest "
        "cannot make it pass).",
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="Override any config key: dotted.key=value (repeatable).",
        show_default=False,
    ),
) -> None:
    """Find the largest number of users (or session rate) the target holds within SLOs."""
    from turnbench.capacity.criteria import build
    from turnbench.capacity.driver import Plan, print_search, run_search
    from turnbench.capacity.search import Space
    from turnbench.config_load import load_config
    from turnbench.errors import EngineError, TargetError
    from turnbench.report.files import default_console
    from turnbench.slo import with_flags

    if over not in ("users", "rate"):
        raise fail(f"--over expects users or rate, got {over!r}")
    overrides, given = series_overrides(target, model, api, name)
    console = default_console()
    try:
        cfg = load_config(config, overrides, sets)
        cfg.slo = with_flags(cfg.slo, slo)
        plan = Plan(
            space=Space(
                over="users" if over == "users" else "rate",
                start=start,
                stop=stop,
                growth=growth,
                precision=precision,
                repeats=repeats,
                max_probes=max_probes,
            ),
            criteria=build(cfg.slo, tier, goodput, max_failures),
            probe_s=probe_duration,
            warmup_s=probe_duration / 4 if warmup is None else warmup,
            cooldown_s=cooldown,
            min_sessions=min_sessions,
            probe_html=probe_html,
            early_stop=not no_early_stop,
        )
        base_dir = config.resolve().parent if config else Path.cwd()
        search = run_search(cfg, plan, base_dir=base_dir, out=out, console=console)
    except InputError as e:
        raise fail(flag_error(e, given)) from None
    except (TargetError, EngineError) as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail(
            "interrupted before the search started; nothing was written", INTERRUPTED_EXIT
        ) from None
    print_search(search, console)
    if search.answer.kind == "interrupted":
        raise typer.Exit(INTERRUPTED_EXIT)
    if search.answer.kind == "stopped":
        raise typer.Exit(STOPPED_EXIT)
