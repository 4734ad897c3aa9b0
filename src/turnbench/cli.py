"""The `turnbench` command line: `run`, `report`, `sim`, `demo`.

Why the fast path in `main`: `turnbench --version` must answer before typer, rich and the
event loop are imported; each command imports its own modules only when it runs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer

from turnbench import __version__

app = typer.Typer(
    name="turnbench",
    help="Load generator and benchmark for LLM inference servers, built for multi-turn "
    "conversations and agentic sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"turnbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """turnbench: multi-turn LLM serving benchmark."""


def _fail(message: str) -> typer.Exit:
    """Print a user error on one line to stderr; exit code 2."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@app.command("run")
def run_command(
    config: Path | None = typer.Argument(
        None, help="YAML config (see examples/).", show_default=False
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Server base URL, e.g. http://127.0.0.1:8000/v1; unset: the built-in simulator.",
    ),
    model: str | None = typer.Option(None, "--model", help="Model name, or auto."),
    api: str | None = typer.Option(None, "--api", help="chat or completions."),
    out: Path | None = typer.Option(None, "--out", help="Folder that receives the run folder."),
    duration: float | None = typer.Option(None, "--duration", help="Seconds before arrivals stop."),
    mode: str | None = typer.Option(
        None, "--mode", help="parallel, sequential, session-rate or users."
    ),
    sessions: int | None = typer.Option(None, "--sessions", help="Sessions to play in all."),
    rate: float | None = typer.Option(None, "--rate", help="session-rate: sessions per second."),
    users: int | None = typer.Option(None, "--users", help="users: concurrent users."),
    turns: int | None = typer.Option(
        None, "--turns", help="Synthetic workload: turns per conversation."
    ),
    max_in_flight: int | None = typer.Option(
        None, "--max-in-flight", help="Cap on concurrent requests."
    ),
    history: str | None = typer.Option(None, "--history", help="live or dataset."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of every random choice."),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="Environment variable holding the API key."
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="Play conversations from this file."
    ),
    dataset_format: str = typer.Option(
        "auto", "--dataset-format", help="sharegpt, rows, messages, aiperf, trace or auto."
    ),
    shared_prefix: str | None = typer.Option(
        None, "--shared-prefix", help="GROUPS:PROMPTS_PER_GROUP shared-prefix user sessions."
    ),
    workers: str | None = typer.Option(
        None, "--workers", help="Worker processes (or Ray actors): a number or auto."
    ),
    engine: str | None = typer.Option(None, "--engine", help="local or ray."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="ray: auto, or ray://host:10001; unset: a local Ray."
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Do not verify TLS certificates (a warning is printed)."
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="Override any config key: dotted.key=value (repeatable)."
    ),
    live: bool = typer.Option(True, "--live/--no-live", help="Show live progress."),
) -> None:
    """Run a multi-turn benchmark and write runs/<timestamp>-<name>/."""
    from turnbench.config import load_config
    from turnbench.errors import EngineError, InputError, TargetError
    from turnbench.run import execute

    overrides: dict[str, object] = {
        "target.url": target,
        "target.model": model,
        "target.api": api,
        "target.api_key_env": api_key_env,
        "load.duration_s": duration,
        "load.mode": mode,
        "load.sessions": sessions,
        "load.rate": rate,
        "load.users": users,
        "load.max_in_flight": max_in_flight,
        "session.history": history,
        "seed": seed,
        "workload.turns": turns,
        "engine.workers": int(workers) if workers and workers.isdigit() else workers,
        "engine.kind": engine,
        "engine.ray_address": ray_address,
        "target.verify_tls": False if insecure else None,
    }
    if dataset is not None:
        overrides["workload"] = {
            "type": "dataset",
            "path": str(dataset.resolve()),
            "format": dataset_format,
        }
    if shared_prefix is not None:
        groups, _, per_group = shared_prefix.partition(":")
        if not (groups.isdigit() and per_group.isdigit()):
            raise _fail(f"--shared-prefix expects GROUPS:PROMPTS_PER_GROUP, got {shared_prefix!r}")
        overrides["workload"] = {
            "type": "shared_prefix",
            "num_groups": int(groups),
            "prompts_per_group": int(per_group),
            "as_sessions": True,
        }
    try:
        cfg = load_config(config, overrides, sets)
        base_dir = config.resolve().parent if config else Path.cwd()
        execute(cfg, base_dir=base_dir, out=out, live=live and sys.stdout.isatty())
    except (InputError, TargetError, EngineError) as e:
        raise _fail(str(e)) from None


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="A run folder holding events.db."),
) -> None:
    """Rebuild summary.json and the console report from a run's events.db."""
    from turnbench.errors import InputError
    from turnbench.run import write_report

    try:
        write_report(run_dir)
    except InputError as e:
        raise _fail(str(e)) from None


def _register(command: str | None) -> None:
    """Add the `sim` and `dataset` commands, unless another command runs: their modules import
    the simulator's server (aiohttp) and the dataset readers, time a run's start is spent on."""
    if command in ("run", "report"):
        return
    if command != "dataset":
        from turnbench.sim.cli import sim_command

        app.command("sim", help="Run the built-in OpenAI-compatible LLM server simulator.")(
            sim_command
        )
    if command != "sim":
        from turnbench.workload.cli import dataset_app

        app.add_typer(
            dataset_app, name="dataset", help="Inspect and convert conversation datasets."
        )


def main() -> None:
    """Entry point of the console script."""
    if sys.argv[1:] == ["--version"]:
        print(f"turnbench {__version__}")
        return
    _spawn_light()
    _register(sys.argv[1] if len(sys.argv) > 1 else None)
    app()


def _spawn_light() -> None:
    """Let spawned processes (workers, the events.db writer) skip this CLI.

    A spawned process first re-runs the parent's main script unless `__main__` names a
    package's `__main__` module (as `python -m turnbench` does); the console script would
    import typer and rich into every worker, 50-100 ms of its start for nothing.
    """
    main_module = sys.modules["__main__"]
    if getattr(main_module, "__spec__", None) is None:
        main_module.__spec__ = importlib.util.find_spec("turnbench.__main__")
