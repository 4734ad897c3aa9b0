"""Every option of `turnbench run`, read from the command itself, works from a bare command line.

Why built from the command: a flag added tomorrow is run by this test the day it lands, with a
value drawn from its type, or the test fails until it is given one (`NEEDS`; the rule is
`cli_options.values_for`, shared with the other commands' test). Each case runs
the real CLI in a subprocess against a real simulator on 127.0.0.1 and must end with exit 0, no
traceback, a full run folder and the report's path as the last line.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import trustme

from cli_options import (
    case_folder,
    command_tree,
    hints,
    options,
    turnbench,
    two_at_a_time,
    values_for,
)
from conftest import SimProcess

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SECRET = "sk-flag-test-4f1c9a"


RUN = command_tree().commands["run"]
OPTIONS = options(RUN)
HINTS = hints(RUN)

# What a flag needs beside its own name when its type alone does not say: a value, or a
# companion flag without which it has no meaning (`--rate` is for mode session-rate).
NEEDS: dict[str, list[str]] = {
    "--target": [],  # every case has it: the fast simulator below
    "--model": ["turnbench-sim"],
    "--api": ["completions"],
    "--name": ["flagged"],
    "--out": [],  # every case has it
    "--mode": ["parallel"],
    "--rate": ["20", "--mode", "session-rate"],
    "--history": ["dataset", "--dataset", "{messages}"],
    "--api-key-env": ["TURNBENCH_FLAG_KEY"],
    "--dataset": ["{messages}"],
    "--dataset-format": ["messages", "--dataset", "{messages}"],
    "--messages-key": ["traj", "--dataset", "{traj}"],
    "--shared-prefix": ["2:2"],
    "--agent": ["1:1", "--sessions", "4"],  # alone: 100 agents' tool waits, 45 s
    "--workers": ["2"],
    "--engine": ["local"],
    "--ray-address": ["auto", "--engine", "ray"],
    "--set": ["load.max_requests=7"],
    "--ca-bundle": ["{ca}"],  # read and checked even though the simulator here is plain http
    "--metrics-url": ["http://127.0.0.1:9/metrics"],  # refused: noted once, the run goes on
    "--slo": ["ttft.p90=10s"],
}
# Cases whose clean end is a one-line error with no run folder left behind.
REFUSED = {"--ray-address": "cannot start the Ray cluster at 'auto'"}
SKIPPED = {"--help"}  # covered by test_help_*


def _values(flag: str, param: Any) -> list[str]:
    return values_for(flag, param, HINTS[param.name], NEEDS)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    messages = folder / "conversations.jsonl"
    traj = folder / "traj.json"
    records = [
        {
            "id": f"c{i}",
            "messages": [
                {"role": "user", "content": f"question {i} one"},
                {"role": "assistant", "content": "answer one"},
                {"role": "user", "content": f"question {i} two"},
                {"role": "assistant", "content": "answer two"},
            ],
        }
        for i in range(3)
    ]
    messages.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    traj.write_text(json.dumps([{"task_id": r["id"], "traj": r["messages"]} for r in records]))
    ca = folder / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    return {"messages": messages, "traj": traj, "ca": ca}


def assert_clean_run(proc: subprocess.CompletedProcess[str], out: Path) -> Path:
    """Exit 0, no traceback, one run folder holding the four files, report path last."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert {p.name for p in run_dir.iterdir()} >= {
        "config.yaml",
        "events.db",
        "summary.json",
        "report.html",
    }
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"report: {run_dir / 'report.html'}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["ok"] > 0 and summary["requests"]["failed"] == 0
    return run_dir


CASES = sorted(set(OPTIONS) - SKIPPED)


def _run_flag(
    flag: str, tmp_path: Path, sim: SimProcess, datasets: dict[str, Path]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`turnbench run` with `flag` (and what it needs), `--target` the simulator, `--out`."""
    values = [
        v.format(**{k: str(p) for k, p in datasets.items()}) for v in _values(flag, OPTIONS[flag])
    ]
    args = ["run"] if flag == "--target" else ["run", "--target", sim.url]
    if flag == "--target":
        args += ["--target", sim.url]
    elif flag != "--out":
        args += [flag, *values]
    out = tmp_path / "out"
    args += ["--out", str(out)]
    return turnbench(*args, cwd=tmp_path, env={"TURNBENCH_FLAG_KEY": SECRET}), out


@pytest.fixture(scope="module")
def flag_runs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fast_sim: SimProcess,
    datasets: dict[str, Path],
) -> Iterator[dict[str, Future[tuple[subprocess.CompletedProcess[str], Path]]]]:
    """The selected flags' runs, two at a time (`two_at_a_time`), each awaited by its test."""

    def run(flag: str) -> tuple[subprocess.CompletedProcess[str], Path]:
        return _run_flag(flag, case_folder(tmp_path_factory), fast_sim, datasets)

    with two_at_a_time(request, "test_each_run_flag_alone", "flag", run) as runs:
        yield runs


@pytest.mark.xdist_group("run-flags")  # (`two_at_a_time`: all its cases on one worker)
@pytest.mark.parametrize("flag", CASES)
def test_each_run_flag_alone(
    flag: str,
    flag_runs: dict[str, Future[tuple[subprocess.CompletedProcess[str], Path]]],
) -> None:
    proc, out = flag_runs[flag].result()
    if flag in REFUSED:
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0, proc.stderr
        assert proc.stderr.startswith("error: ") and REFUSED[flag] in proc.stderr
        assert not out.exists() or not any(out.iterdir()), "a half-made run folder was left"
        return
    run_dir = assert_clean_run(proc, out)
    if flag == "--slo":
        slo = json.loads((run_dir / "summary.json").read_text())["slo"]
        assert slo["tiers"]["default"]["objectives"][0]["slo"] == "ttft p90 <= 10000 ms"
    if flag == "--api-key-env":
        for path in run_dir.iterdir():
            assert SECRET.encode() not in path.read_bytes(), path.name


def test_bare_run_against_the_builtin_simulator(tmp_path: Path) -> None:
    """`turnbench run` with no config and no target: the built-in simulator, 100 sessions."""
    proc = turnbench(
        "run",
        "--set",
        "target.sim_args=['--set', 'zero_delay=true']",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    run_dir = assert_clean_run(proc, tmp_path / "out")
    assert "started the built-in simulator" in proc.stdout
    assert "no limit is set: playing 100 sessions" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["per_conversation"]["sessions"] == 100


@pytest.mark.parametrize("form", ["{host}", "{host}/", "{host}/v1", "{host}/v1/", "{bare}"])
def test_target_url_forms(form: str, tmp_path: Path, fast_sim: SimProcess) -> None:
    """A bare host, the API root, either with a trailing slash, or no scheme at all."""
    url = form.format(host=fast_sim.url, bare=fast_sim.url.removeprefix("http://"))
    out = tmp_path / "out"
    proc = turnbench("run", "--target", url, "--max-requests", "4", "--out", str(out), cwd=tmp_path)
    run_dir = assert_clean_run(proc, out)
    assert f"API root: {fast_sim.v1}" in proc.stdout
    config = run_dir / "config.yaml"
    assert f"url: {fast_sim.v1}\n" in config.read_text()


def test_target_without_an_api_is_one_line(tmp_path: Path, fast_sim: SimProcess) -> None:
    proc = turnbench("run", "--target", fast_sim.url + "/nothing", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no OpenAI-compatible")
    assert not (tmp_path / "o").exists()


def test_a_duration_is_played_to_its_end(tmp_path: Path, fast_sim: SimProcess) -> None:
    """The generated workload is endless: `--duration` alone decides when arrivals stop."""
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", fast_sim.url, "--mode", "users", "--users", "8", "--duration", "3",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    run_dir = assert_clean_run(proc, out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["per_conversation"]["sessions"] > 100  # more than any fixed list would have held
    assert summary["run"]["end_reason"] == "duration"


def test_a_dataset_that_runs_out_says_so(
    tmp_path: Path, fast_sim: SimProcess, datasets: dict[str, Path]
) -> None:
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", fast_sim.url, "--dataset", str(datasets["messages"]),
        "--duration", "30", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    run_dir = assert_clean_run(proc, out)
    assert "the workload ran out at" in proc.stdout and "workload.cycle: true" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    (notice,) = summary["notices"]
    assert notice["kind"] == "workload_ran_out" and notice["conversations"] == 3
    assert notice["at_s"] < 30


def test_help_marks_no_switch_and_shows_defaults(tmp_path: Path) -> None:
    proc = turnbench("run", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert proc.returncode == 0
    lines = {line.split()[1]: line for line in proc.stdout.splitlines() if "│ --" in line}
    for flag, param in OPTIONS.items():
        if param.is_flag and flag in lines:
            assert "<bool>" not in lines[flag], lines[flag]
    for flag, default in (("--mode", "users"), ("--users", "4"), ("--turns", "5")):
        assert f"[default: {default}]" in lines[flag], lines[flag]
    root = turnbench("--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert "<bool>" not in root.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--bogus"],
        ["run", "--users", "many"],
        ["run", "--users", "0"],
        ["run", "--mode", "sideways"],
        ["run", "--turns", "2", "--dataset", "missing.jsonl"],
        ["report"],
        ["report", "nowhere"],
        ["bogus-command"],
    ],
    ids=lambda a: " ".join(a),
)
def test_every_usage_error_is_one_line(args: list[str], tmp_path: Path) -> None:
    proc = turnbench(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == ""
