"""The `turnbench` command line: the app, and which module declares each of its commands.

Why commands are declared only when wanted: a command's flags (their help, their defaults)
come from the modules it uses: `run`'s from the run's config models, `sim`'s from the
simulator's. `turnbench sim` has no use for the run's models, `turnbench run` none for the
simulator; only `--help` (or a mistyped command) lists them all. Each command then imports
what it runs only when it runs.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from turnbench import __version__
from turnbench.cli_format import Command, Group, fail, run_app

app = typer.Typer(
    name="turnbench",
    help="Load generator and benchmark for LLM inference servers, built for multi-turn "
    "conversations and agentic sessions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,
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


def report_command(
    run_dir: Path = typer.Argument(..., help="A run folder holding events.db."),
) -> None:
    """Rebuild summary.json and the console report from a run's events.db."""
    from turnbench.errors import InputError
    from turnbench.report.files import write_report

    try:
        write_report(run_dir)
    except InputError as e:
        raise fail(str(e)) from None


@functools.cache
def _declare_report() -> None:
    app.command("report", cls=Command)(report_command)


@functools.cache
def _declare_sim() -> None:
    from turnbench.sim.cli import sim_command

    app.command(
        "sim",
        cls=Command,
        help="Run the built-in LLM server simulator (OpenAI chat, completions and "
        "responses; Anthropic messages).",
    )(sim_command)


@functools.cache
def _declare_dataset() -> None:
    from turnbench.workload.cli import dataset_app

    app.add_typer(dataset_app, name="dataset", help="Inspect and convert conversation datasets.")


def _module(name: str) -> Callable[[], object]:
    """Import a module that declares its commands on `app` when it is imported (once)."""
    return functools.partial(importlib.import_module, name)


_DECLARE: dict[str, Callable[[], object]] = {
    "run": _module("turnbench.cli_run"),
    "report": _declare_report,
    "capacity": _module("turnbench.cli_capacity"),
    "export": _module("turnbench.cli_export"),
    "compare": _module("turnbench.cli_export"),
    "sweep": _module("turnbench.cli_sweep"),
    "sim": _declare_sim,
    "dataset": _declare_dataset,
}
"""Every command, in the order `turnbench --help` lists them, and what declares it (each at
most once)."""


def _register(command: str | None) -> None:
    """Declare `command` on `app`; every command when it names none of them (no command,
    `--help`, `--version`, a mistyped name: the list, or the error naming it, needs them all)."""
    if command in _DECLARE:
        _DECLARE[command]()
        return
    for declare in _DECLARE.values():
        declare()


def main() -> None:
    """Entry point of the console script (after `entry.main`)."""
    _spawn_light()
    _register(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.exit(run_app(app))


def _spawn_light() -> None:
    """Let spawned processes (workers, the events.db writer) skip this CLI.

    A spawned process first re-runs the parent's main script unless `__main__` names a
    package's `__main__` module (as `python -m turnbench` does); the console script would
    import typer and rich into every worker, 50-100 ms of its start for nothing.
    """
    main_module = sys.modules["__main__"]
    if getattr(main_module, "__spec__", None) is None:
        main_module.__spec__ = importlib.util.find_spec("turnbench.__main__")
