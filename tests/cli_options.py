"""What the tests built from the CLI's own option lists share: the command tree, a value for
an option drawn from its type, and running `turnbench` as a user would.

Why one module: `test_cli_flags` (every `run` option) and `test_cli_other_flags` (the other
commands) must draw values by the same rule, so a new flag of any command is covered alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer

from turnbench.cli import _register, app


def command_tree() -> Any:
    """The whole `turnbench` command tree, every command registered (`sim`, `dataset`)."""
    _register(None)
    return typer.main.get_command(app)


def options(command: Any) -> dict[str, Any]:
    """A command's options by every long name (`--live` and `--no-live` both)."""
    found: dict[str, Any] = {}
    for param in command.params:
        if getattr(param, "param_type_name", None) != "option":
            continue
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("--"):
                found[name] = param
    return found


def hints(command: Any) -> dict[str, Any]:
    """The type hints of the function behind a command."""
    return typing.get_type_hints(command.callback)


def values_for(flag: str, param: Any, hint: Any, needs: dict[str, list[str]]) -> list[str]:
    """What `flag` needs beside its name to run alone: from `needs`, else from its type.

    A flag of any other type fails the test until it is given an entry in `needs`: a flag
    added tomorrow is run the day it lands.
    """
    if flag in needs:
        return needs[flag]
    if param.is_flag:
        return []
    kinds = set(typing.get_args(hint)) | {hint}
    if int in kinds:
        return ["2"]
    if float in kinds:
        return ["1"]
    raise AssertionError(f"{flag} is new: say in NEEDS what value it needs to run alone")


T = TypeVar("T")


@contextmanager
def two_at_a_time(
    request: pytest.FixtureRequest, test: str, param: str, run: Callable[[Any], T]
) -> Iterator[dict[Any, Future[T]]]:
    """`run` for every case of `test` (this module's, by its parameter `param`) selected in
    this session, two at a time from now on, each awaited by its case.

    Why: a case is a whole `turnbench` process (start, run, summary, report), mostly one busy
    core while the simulator idles; on a 2-core machine two at a time take ~60 % of the time
    one after another does (34 run-flag cases: 131 s -> 81 s), with the same checks. Only for
    cases that do not measure time against a bound a busy machine could miss. Under
    pytest-xdist every worker collects every case, so such a test carries an `xdist_group`
    mark (`make test` runs `--dist loadgroup`): its cases all go to the worker that runs them
    here, and no other worker plays them in vain. Under any other distribution a worker
    cannot know its cases, and plays each when its test asks (`_OnDemand`)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        if os.environ.get("PYTEST_XDIST_WORKER") and request.config.option.dist != "loadgroup":
            yield _OnDemand(pool, run)
            return
        selected = [
            item.callspec.params[param]
            for item in request.session.items
            if getattr(item, "originalname", "") == test and item.module is request.module
        ]
        yield {case: pool.submit(run, case) for case in selected}


class _OnDemand(dict[Any, Future[T]]):
    """`two_at_a_time`'s cases, each started when its test first asks for it."""

    def __init__(self, pool: ThreadPoolExecutor, run: Callable[[Any], T]) -> None:
        super().__init__()
        self._pool, self._run = pool, run

    def __missing__(self, case: Any) -> Future[T]:
        future = self[case] = self._pool.submit(self._run, case)
        return future


def case_folder(factory: pytest.TempPathFactory) -> Path:
    """A new folder of this session's for one case, safe to make from a pool's thread."""
    return Path(tempfile.mkdtemp(prefix="case", dir=factory.getbasetemp()))


def turnbench(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """`turnbench ARGS` in a subprocess, as typed in a shell in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "turnbench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
