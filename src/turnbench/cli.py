"""The `turnbench` command line: `run`, `report`, `sim`, `demo`.

Why the fast path in `main`: `turnbench --version` must answer before typer, rich and the
event loop are imported; each command imports its own modules only when it runs.
"""

from __future__ import annotations

import sys

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


def _register() -> None:
    from turnbench.sim.cli import sim_command

    app.command("sim", help="Run the built-in OpenAI-compatible LLM server simulator.")(
        sim_command
    )


def main() -> None:
    """Entry point of the console script."""
    if sys.argv[1:] == ["--version"]:
        print(f"turnbench {__version__}")
        return
    _register()
    app()
