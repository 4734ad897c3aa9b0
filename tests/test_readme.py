"""The README's "Using it" commands, run as written, with the simulator standing in for the server.

Why read from the README: a command the README shows is the first one a newcomer types; when
it changes there, this test runs the new one. Only what cannot exist on a test machine is
stood in for: the server at 127.0.0.1:8000 is a simulator on a free port, and the files the
commands name (config.yaml, conversations.jsonl, sharegpt.json, a run folder) are made here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import READY_PREFIX, SimProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def readme_commands() -> list[str]:
    """The commands of the README's first code block under "## Using it"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Using it\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


COMMANDS = readme_commands()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, fast_sim: SimProcess) -> Path:
    """A folder holding what the commands name, as a user's would."""
    cwd = tmp_path_factory.mktemp("user")
    shutil.copytree(ROOT / "examples", cwd / "examples")
    shutil.copy(DATA / "sharegpt_sample.json", cwd / "sharegpt.json")
    (cwd / "config.yaml").write_text(
        f"target: {{url: {fast_sim.v1}}}\n"
        "workload: {conversations: 6, turns: 3}\n"
        "load: {mode: users, users: 3}\n"
    )
    lines = []
    for i in range(4):
        messages = [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"Name a prime above {i * 10}."},
            {"role": "assistant", "content": "Eleven."},
            {"role": "user", "content": "And the next one?"},
            {"role": "assistant", "content": "Thirteen."},
        ]
        lines.append(json.dumps({"id": f"c{i}", "messages": messages}))
    (cwd / "conversations.jsonl").write_text("\n".join(lines) + "\n")
    return cwd


def _stand_in(command: str, port: str) -> list[str]:
    """The command's words, with `turnbench` run by this Python and port 8000 as `port`."""
    command = command.replace("--port 8000", f"--port {port}")
    command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    command = command.replace("localhost:8000", f"localhost:{port}")
    words = shlex.split(command)
    assert words[0] == "turnbench"
    return [sys.executable, "-m", "turnbench", *words[1:]]


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 6
    assert all(c.startswith("turnbench ") for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(command: str, workdir: Path, fast_sim: SimProcess) -> None:
    if command.startswith("turnbench sim"):
        _sim_command_serves(command)
        return
    report = re.match(r"turnbench report (\S+)", command)
    if report:  # the run folder it names: one made by an earlier command, under that name
        made = sorted((workdir / "runs").glob("*/events.db"))
        assert made, "no earlier command made a run folder"
        folder = workdir / report.group(1)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(made[0], folder / "events.db")
    proc = subprocess.run(
        _stand_in(command, fast_sim.url.rsplit(":", 1)[1]),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if command.startswith("turnbench run") or report:
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith("report: ") and last.endswith("report.html"), last
        path = workdir / last.removeprefix("report: ")
        assert path.exists() and (path.parent / "summary.json").exists()
        summary = json.loads((path.parent / "summary.json").read_text())
        assert summary["requests"]["ok"] > 0
    if command.startswith("turnbench dataset inspect"):
        assert "conversations" in proc.stdout + proc.stderr


def _sim_command_serves(command: str) -> None:
    """`turnbench sim --port 8000 ...`: on a free port, it says it is ready and answers."""
    port = free_port()
    words = _stand_in(command, str(port))
    proc = subprocess.Popen(words, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line.startswith(READY_PREFIX):
            line = proc.stdout.readline()
        assert line.startswith(READY_PREFIX), proc.stderr.read() if proc.stderr else ""
        assert f":{port}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as answer:
            assert json.load(answer)["data"][0]["id"] == "turnbench-sim"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
