"""The console script's entry point.

Why apart from `cli.py`: loading the CLI (typer, rich, pydantic models) takes the first half
second, and a Ctrl-C in it would print the traceback of whatever import it hit. Here it is one
quiet exit 130, as a Ctrl-C at any later moment is.
"""

from __future__ import annotations

import sys

INTERRUPTED_EXIT = 130


def main() -> None:
    """Load the CLI and run it."""
    try:
        from turnbench.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_EXIT)
    cli_main()
