"""Fixtures that start real processes on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import settings

from turnbench.tokens.template import make_text

# Timing belongs in bench/, not in unit tests: on a busy 2-core machine a slow example is not a
# failure of the code under test.
settings.register_profile("turnbench", deadline=None)
settings.load_profile("turnbench")

# The suite starts about a thousand Python processes (runs, their events.db writers and
# workers, simulators). Where the environment sets PYTHONDONTWRITEBYTECODE, as some
# containers do, each of them compiled turnbench's ~100 modules from source again (~0.2 s a
# process; pip compiled the dependencies' at install): this process and those it starts keep
# the bytecode (in `__pycache__`, which git ignores).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

READY_PREFIX = "turnbench sim ready: "


@dataclass
class SimProcess:
    """A running `turnbench sim` subprocess and its base URL (`http://127.0.0.1:PORT`)."""

    proc: subprocess.Popen[str]
    url: str

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sim(*args: str, timeout: float = 30.0) -> SimProcess:
    """Start the simulator on a free port (port 0) and wait for its ready line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "sim", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(READY_PREFIX):
            url = line[len(READY_PREFIX) :].strip().removesuffix("/v1")
            return SimProcess(proc, url)
    proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise RuntimeError(f"simulator did not start: {err}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server that must keep its port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fast_sim() -> Iterator[SimProcess]:
    """The built-in simulator with no modelled delays: a default-size run takes a second."""
    sim = start_sim("--set", "zero_delay=true")
    yield sim
    sim.stop()


@pytest.fixture
def sim_factory() -> Iterator[type[SimProcess] | object]:
    """Start simulators with given flags; all are stopped at the end of the test."""
    started: list[SimProcess] = []

    def factory(*args: str) -> SimProcess:
        s = start_sim(*args)
        started.append(s)
        return s

    yield factory
    for s in started:
        s.stop()


@pytest.fixture
def sim(sim_factory) -> SimProcess:  # type: ignore[no-untyped-def]
    """A simulator with default settings."""
    return sim_factory()  # type: ignore[operator]


def sim_metric(sim: SimProcess, name: str, **labels: str) -> float:
    """One series of the simulator's /metrics summed over its samples that carry `labels`
    (0 when absent)."""
    with urllib.request.urlopen(sim.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def question(seed: int, n: int = 40) -> str:
    """A user question of about `n` simulator tokens, the same for the same seed."""
    return "Tell me about " + make_text(n, random.Random(seed)) + "?"
