"""The console script's entry point.

Why apart from `cli.py`: loading the CLI (typer, rich, pydantic models) takes the first half
second, and a Ctrl-C in it would print the traceback of whatever import it hit. Here it is one
quiet exit 130, as a Ctrl-C at any later moment is.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import TYPE_CHECKING

from turnbench import __version__

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

INTERRUPTED_EXIT = 130
_interrupted = False


def main() -> None:
    """Load the CLI and run it; a Ctrl-C at any moment exits 130 without a traceback.

    Why `--version` is answered here: it needs none of the CLI, whose loading is most of the
    time a command takes to start.
    """
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        if sys.argv[1:] == ["--version"]:
            print(f"turnbench {__version__}")
            return
        from turnbench.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:  # while the CLI loads, or while typer builds its commands
        _forget_interrupt()
        sys.exit(INTERRUPTED_EXIT)
    except Exception:
        # After a Ctrl-C, an error is what the interrupt became inside a library that wraps
        # what it catches (pydantic-core's schema builder, a class body's __set_name__).
        if not _interrupted:
            raise
        _forget_interrupt()
        sys.exit(INTERRUPTED_EXIT)
    except SystemExit as e:
        if e.code == INTERRUPTED_EXIT:
            _forget_interrupt()
        raise


def interrupted() -> bool:
    """Whether a Ctrl-C arrived before the run took the signal over.

    Why a run asks: an interrupt raised inside a callback the interpreter runs for itself
    (importlib's module-lock weakref, a `__del__`) is printed as "Exception ignored" and
    lost, and the run would then go on as if no Ctrl-C had been pressed.
    """
    return _interrupted


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """Python's own Ctrl-C handler, remembering that it ran."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _forget_interrupt() -> None:
    """Make a handled Ctrl-C exit 130 under `python -m turnbench` too.

    Why: CPython (3.11 to 3.13 at least) remembers, process-wide, that a KeyboardInterrupt
    left an `exec` or `eval` of source text (dataclasses and typing run such code while
    modules load and typer reads signatures). Under `python -m`, that memory makes the
    interpreter kill itself with SIGINT at exit (status -2) instead of exiting 130, even
    though the interrupt was caught. Each such `exec` clears the memory when it starts and
    sets it only if the interrupt leaves it, so one that completes forgets the earlier one.
    """
    exec("None")  # a constant: see above


def start_uninterrupted(process: BaseProcess) -> None:
    """`process.start()` (a spawned child) that a Ctrl-C cannot break: one arriving meanwhile
    is raised again for the handler that was there once the child has all it needs.

    Why: the parent writes the child's start-up data (its target, pickled) into a pipe the
    child reads before anything else; a parent interrupted in the middle left the child an
    EOFError traceback on the terminal. A handler that only notes the Ctrl-C stands in
    meanwhile (Python runs handlers in the main thread, between bytecodes, so the write is
    never cut). A terminal's Ctrl-C also reaches the child itself, which a child still
    unpickling its target would answer with a KeyboardInterrupt traceback of its own: not
    covered (multiprocessing clears a spawned child's signal mask, and an ignored SIGINT
    passed on to it would be a Ctrl-C lost here).
    """
    noted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: noted.append(signum))
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    if noted:
        signal.raise_signal(signal.SIGINT)
