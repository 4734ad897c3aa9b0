"""Every option of `sim`, `dataset inspect|convert`, `report`, `export`, `compare` and
`capacity`, read from the commands themselves, works from a bare command line; every command's
`--help` shows its switches without a value.

Why built from the commands: as in test_cli_flags (which does this for `run`), a flag added
tomorrow is run here the day it lands, with a value drawn from its type, or the test fails until
a NEEDS table says what it needs. Each case runs the real CLI in a subprocess: the simulator on
127.0.0.1 answering one streaming chat request from the official `openai` SDK, the dataset
commands on the shared sample files, `report`, `export` and `compare` on a real run's folder,
`capacity` as a search of one probe against the simulator.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import openai
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
from conftest import SimProcess, start_sim

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared sample data not present")
SKIPPED = {"--help"}  # covered by test_help_of_every_command


TREE = command_tree()


def _command(*path: str) -> Any:
    command = TREE
    for name in path:
        command = command.commands[name]
    return command


def _options(*path: str) -> dict[str, Any]:
    return options(_command(*path))


def _hints(*path: str) -> dict[str, Any]:
    return hints(_command(*path))


def _values(flag: str, param: Any, hints: dict[str, Any], needs: dict[str, list[str]]) -> list[str]:
    return values_for(flag, param, hints[param.name], needs)


# ---------------------------------------------------------------------------------------------
# turnbench sim

SIM_OPTIONS = _options("sim")
SIM_HINTS = _hints("sim")
SESSION_HEADER = "X-Flag-Session"
SIM_YAML = "model: from-yaml\noutput_len: {dist: fixed, mean: 3}\n"

# What a flag needs beside its own name when its type alone does not say.
SIM_NEEDS: dict[str, list[str]] = {
    "--host": [],  # every case has it: 127.0.0.1
    "--port": [],  # every case has it: 0, a free port
    "--config": ["{config}"],
    "--model": ["flagged-model"],
    "--fault": ["http500=1"],
    "--set": ["output_len={dist: fixed, mean: 3}"],
    "--max-model-len": ["4096"],  # 2, from its type, holds no prompt at all
    "--session-header": [SESSION_HEADER],
    "--router": ["round-robin"],
    "--tls-cert": ["{cert}", "--tls-key", "{key}"],  # one without the other is refused
    "--tls-key": ["{key}", "--tls-cert", "{cert}"],
}
TLS_FLAGS = {"--tls-cert", "--tls-key"}
# What the served model's card (`/v1/models`) must show when a flag sets it.
SIM_CARD = {
    "--model": {"id": "flagged-model"},
    "--config": {"id": "from-yaml"},
    "--max-model-len": {"max_model_len": 4096},
}
# Replies of a fixed length: exactly this many completion tokens (below the request's cap).
SIM_TOKENS = {"--set": 3, "--config": 3}
# A fault at rate 1 hits every request: its documented outcome, from the SDK's side.
SIM_FAILS: dict[str, tuple[type[openai.APIStatusError], int]] = {
    "--fault": (openai.InternalServerError, 500),
}
MAX_TOKENS = 8  # so a flag that restores the modelled delays still answers in ~0.1 s


def _stream_one_chat(
    sim: SimProcess, ca: Path | None = None
) -> tuple[dict[str, Any], str, int | None]:
    """The model card, the streamed text and the completion tokens of one real chat request
    (over https trusting `ca`, when given)."""
    trust = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    http = openai.DefaultHttpxClient(verify=trust) if trust is not None else None
    client = openai.OpenAI(
        base_url=sim.v1, api_key="x", max_retries=0, timeout=10, http_client=http
    )
    card = client.models.list().data[0].model_dump()
    stream = client.chat.completions.create(
        model=card["id"],
        messages=[{"role": "user", "content": "Say a few words about flags."}],
        max_tokens=MAX_TOKENS,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={SESSION_HEADER: "flag-session"},
    )
    text, tokens = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return card, text, tokens


def _stop_cleanly(sim: SimProcess) -> None:
    """SIGTERM ends the simulator with exit 0 and no traceback."""
    sim.proc.terminate()
    assert sim.proc.wait(timeout=10) == 0
    assert sim.proc.stderr is not None
    assert "Traceback" not in sim.proc.stderr.read()


@pytest.mark.parametrize("flag", sorted(set(SIM_OPTIONS) - SKIPPED))
def test_each_sim_flag_alone(flag: str, tmp_path: Path) -> None:
    """Started with the flag alone, the simulator gets ready, streams one chat reply to the
    official SDK (or the fault the flag injects) and stops cleanly on SIGTERM."""
    config = tmp_path / "sim.yaml"
    config.write_text(SIM_YAML)
    needed = _values(flag, SIM_OPTIONS[flag], SIM_HINTS, SIM_NEEDS)
    ca = trustme.CA()
    files = {"{config}": config, "{cert}": tmp_path / "cert.pem", "{key}": tmp_path / "key.pem"}
    served = ca.issue_cert("127.0.0.1")
    served.cert_chain_pems[0].write_to_path(str(files["{cert}"]))
    served.private_key_pem.write_to_path(str(files["{key}"]))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    values = [str(files[v]) if v in files else v for v in needed]
    sim = start_sim(*([] if flag in ("--host", "--port") else [flag, *values]))
    try:
        if flag in SIM_FAILS:
            error, status = SIM_FAILS[flag]
            with pytest.raises(error) as raised:
                _stream_one_chat(sim)
            assert raised.value.status_code == status
        else:
            trust = tmp_path / "ca.pem" if flag in TLS_FLAGS else None
            if trust is not None:
                assert sim.url.startswith("https://"), sim.url
            card, text, tokens = _stream_one_chat(sim, trust)
            assert text.strip(), "no tokens were streamed"
            assert tokens is not None and 0 < tokens <= MAX_TOKENS
            assert tokens == SIM_TOKENS.get(flag, tokens)
            for key, value in SIM_CARD.get(flag, {}).items():
                assert card[key] == value, card
        if flag == "--session-header":
            with urllib.request.urlopen(sim.url + "/metrics", timeout=10) as resp:
                metrics = resp.read().decode()
            assert f'header="{SESSION_HEADER}",session="flag-session"}} 1' in metrics
        _stop_cleanly(sim)
    finally:
        sim.stop()


def _gone(pid: int) -> bool:
    """The process has ended (a zombie waiting for a reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


LAUNCHER = """
import subprocess, sys
with open(sys.argv[1], "w") as err:
    sim = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "sim", "--host", "127.0.0.1", "--port", "0",
         "--exit-with-parent"],
        stdout=subprocess.PIPE, stderr=err, text=True,
    )
print(sim.pid, sim.stdout.readline().strip(), flush=True)
"""


def test_exit_with_parent_stops_when_its_parent_is_gone(tmp_path: Path) -> None:
    """What the flag is for: a simulator whose starter died must not hold its port forever.
    The starter here prints the simulator's pid and ready line, then exits without a signal."""
    stderr = tmp_path / "sim.stderr"
    launched = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(stderr)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert launched.returncode == 0, launched.stderr
    pid_text, ready = launched.stdout.split(maxsplit=1)
    pid = int(pid_text)
    try:
        assert ready.startswith("turnbench sim ready: http://127.0.0.1:"), launched.stdout
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(pid), "the simulator outlived its parent by 10 s"
        assert "Traceback" not in stderr.read_text()
    finally:
        if not _gone(pid):
            os.kill(pid, 9)


# ---------------------------------------------------------------------------------------------
# turnbench dataset inspect | convert

# Shared sample files: path, their format's name, and numbers counted from the data README
# (records; conversations; turns: user messages, plus tool results, which are sent too).
SAMPLES: dict[str, tuple[Path, str, dict[str, int]]] = {
    "rows": (
        DATA / "endpoints_rows_customer_support.jsonl",
        "rows",
        {"records": 10, "conversations": 3, "turns": 2 + 2 + 1},
    ),
    "traj": (
        DATA / "tool_calls_sample.json",
        "messages",
        {"records": 8, "conversations": 8, "turns": 58 + 58},
    ),
}
# What a flag needs beside its own name, and the sample it runs on (otherwise "rows").
DATASET_NEEDS: dict[str, dict[str, tuple[list[str], str]]] = {
    "inspect": {
        "--format": (["rows"], "rows"),
        "--messages-key": (["traj"], "traj"),
    },
    "convert": {
        "--from": ([], "rows"),  # every case has it (required): the sample's own format
        "--messages-key": (["traj"], "traj"),
    },
}


def _case(command: str, flag: str) -> tuple[list[str], str]:
    needs = DATASET_NEEDS[command]
    param = _options("dataset", command)[flag]
    values = _values(flag, param, _hints("dataset", command), {f: v for f, (v, _) in needs.items()})
    return values, needs.get(flag, ([], "rows"))[1]


def _measures(stdout: str) -> dict[str, str]:
    """The `measure | value` rows of inspect's first table (it ends at the first `└`)."""
    first = stdout[: stdout.index("└")]
    cells = (
        [c.strip() for c in re.split(r"[│┃]", line) if c.strip()] for line in first.splitlines()
    )
    return {c[0]: c[1] for c in cells if len(c) == 2}


def assert_inspected(proc: subprocess.CompletedProcess[str], fmt: str) -> dict[str, str]:
    """Exit 0, no traceback, nothing on stderr, the format read and the four tables printed."""
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert f"({fmt})" in proc.stdout
    for title in ("turns per conversation", "context growth", "dropped or repaired"):
        assert title in proc.stdout
    return _measures(proc.stdout)


@needs_data
@pytest.mark.parametrize("flag", sorted(set(_options("dataset", "inspect")) - SKIPPED))
def test_each_inspect_flag_alone(flag: str, tmp_path: Path) -> None:
    """The sample is read as the flag says and its counts are the ones the data README gives."""
    values, sample = _case("inspect", flag)
    path, fmt, counts = SAMPLES[sample]
    proc = turnbench("dataset", "inspect", str(path), flag, *values, cwd=tmp_path)
    measures = assert_inspected(proc, fmt)
    for measure, n in counts.items():
        assert measures[measure] == str(n), measures


@needs_data
@pytest.mark.parametrize("flag", sorted(set(_options("dataset", "convert")) - SKIPPED))
def test_each_convert_flag_alone(flag: str, tmp_path: Path) -> None:
    """The converted file says how many conversations it got, and `dataset inspect` reads it
    back as messages JSONL with the same conversations and turns (one record each)."""
    values, sample = _case("convert", flag)
    path, fmt, counts = SAMPLES[sample]
    dst = tmp_path / "converted.jsonl"
    args = ["dataset", "convert", str(path), str(dst), "--from", fmt]
    if flag != "--from":
        args += [flag, *values]
    proc = turnbench(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == f"wrote {counts['conversations']} conversations to {dst}\n"
    back = assert_inspected(turnbench("dataset", "inspect", str(dst), cwd=tmp_path), "messages")
    assert back["records"] == back["conversations"] == str(counts["conversations"])
    assert back["turns"] == str(counts["turns"])


# ---------------------------------------------------------------------------------------------
# turnbench report RUN_DIR

REPORT_OPTIONS = _options("report")
REPORT_NEEDS: dict[str, list[str]] = {}
# "bare" always runs: `report` has no option but --help today; a new one joins the list.
REPORT_CASES = ["bare", *sorted(set(REPORT_OPTIONS) - SKIPPED)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real short run (4 requests) against the simulator with no modelled delays."""
    out = tmp_path_factory.mktemp("runs")
    sim = start_sim("--set", "zero_delay=true")
    try:
        proc = turnbench(
            "run", "--target", sim.url, "--max-requests", "4", "--out", str(out), cwd=out
        )
    finally:
        sim.stop()
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


@pytest.mark.parametrize("flag", REPORT_CASES)
def test_report_of_a_real_run(flag: str, tmp_path: Path, finished_run: Path) -> None:
    """From events.db alone, `report` rebuilds the run's summary.json as the run wrote it, and
    report.html, whose path is the last line of stdout."""
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    (run_dir / "summary.json").unlink()
    (run_dir / "report.html").unlink()
    args = ["report", str(run_dir)]
    if flag != "bare":
        args += [flag, *_values(flag, REPORT_OPTIONS[flag], _hints("report"), REPORT_NEEDS)]
    proc = turnbench(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"report: {run_dir / 'report.html'}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["ok"] == 4 and summary["requests"]["failed"] == 0
    if flag == "bare":
        assert summary == json.loads((finished_run / "summary.json").read_text())
    assert (run_dir / "report.html").read_text().lstrip().lower().startswith("<!doctype html")


# ---------------------------------------------------------------------------------------------
# turnbench export RUN_DIR | compare RUN_A RUN_B

EXPORT_OPTIONS = _options("export")
EXPORT_NEEDS: dict[str, list[str]] = {"--table": ["turns"], "--out": ["{out}"]}
# --format is required, so every case has it: "bare" (csv alone), "json" and "parquet" are its
# cases; then each other option, with csv.
EXPORT_CASES = ["bare", "json", "parquet", *sorted(set(EXPORT_OPTIONS) - SKIPPED - {"--format"})]


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_export_of_a_real_run(case: str, tmp_path: Path, finished_run: Path) -> None:
    """The file lands where the flag says (the run folder by default) with a row per request
    or turn of the run (4 of each), and its path is the last line of stdout."""
    run_dir = tmp_path / finished_run.name
    shutil.copytree(finished_run, run_dir)
    fmt = case if case in ("json", "parquet") else "csv"
    args = ["export", str(run_dir), "--format", fmt]
    if case.startswith("--"):
        values = _values(case, EXPORT_OPTIONS[case], _hints("export"), EXPORT_NEEDS)
        args += [case, *(str(tmp_path / "mine.csv") if v == "{out}" else v for v in values)]
    proc = turnbench(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    table = "turns" if case == "--table" else "requests"
    path = tmp_path / "mine.csv" if case == "--out" else run_dir / f"{table}.{fmt}"
    assert proc.stdout.splitlines() == [f"4 rows of {table} ({fmt})", f"export: {path}"]
    if fmt == "csv":
        assert len(path.read_text().splitlines()) == 1 + 4
    elif fmt == "json":
        assert len(json.loads(path.read_text())) == 4
    else:
        assert path.read_bytes()[:4] == b"PAR1"


COMPARE_OPTIONS = _options("compare")
COMPARE_NEEDS: dict[str, list[str]] = {"--html": ["{html}"]}
COMPARE_CASES = ["bare", *sorted(set(COMPARE_OPTIONS) - SKIPPED)]


@pytest.mark.parametrize("flag", COMPARE_CASES)
def test_compare_of_two_real_runs(flag: str, tmp_path: Path, finished_run: Path) -> None:
    """A run against a copy of itself: every latency within noise (each difference 0, marked);
    with --html, the page is written and its path is the last line."""
    page = tmp_path / "compare.html"
    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    args = ["compare", str(finished_run), str(copy)]
    if flag != "bare":
        values = _values(flag, COMPARE_OPTIONS[flag], _hints("compare"), COMPARE_NEEDS)
        args += [flag, *(str(page) if v == "{html}" else v for v in values)]
    proc = turnbench(*args, cwd=tmp_path, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (ttft,) = [line for line in proc.stdout.splitlines() if line.startswith("│ TTFT p50 ")]
    assert ttft.rstrip("│ ").endswith("+0.0 (+0.0 %) ≈"), ttft
    last = proc.stdout.strip().splitlines()[-1]
    if flag == "--html":
        assert last == f"compare: {page}"
        assert page.read_text(encoding="utf-8").lower().startswith("<!doctype html")
    else:
        assert not page.exists() and not last.startswith("compare:")


# ---------------------------------------------------------------------------------------------
# turnbench capacity

CAPACITY_OPTIONS = _options("capacity")
# Every case has these (one probe of 1 s, nothing held back); a flag under test replaces its own.
CAPACITY_BASE: dict[str, list[str]] = {
    "--slo": ["ttft.p90=10s"],
    "--probe-duration": ["1"],
    "--cooldown": ["0"],
    "--max": ["1"],
    "--min-sessions": ["0"],
}
CAPACITY_NEEDS: dict[str, list[str]] = {
    "--target": [],  # every case has it: the fast simulator
    "--out": [],  # every case has it
    "--model": ["turnbench-sim"],
    "--api": ["completions"],
    "--name": ["flagged"],
    "--slo": ["ttft.p90=10s"],
    "--tier": ["default"],
    "--over": ["rate", "--start", "20", "--max", "20"],  # 1 session/s may bring none in 1 s
    "--growth": ["3"],  # above 1
    "--precision": ["0.1"],
    "--warmup": ["0.2"],  # shorter than the 1 s probe
    "--set": ["workload.turns=2"],
}
# Where search.json (or the probe's config.yaml) shows the flag took effect.
CAPACITY_RECORDED: dict[str, tuple[tuple[str, ...], Any]] = {
    "--start": (("space", "start"), 1.0),
    "--max": (("space", "stop"), 1.0),
    "--growth": (("space", "growth"), 3.0),
    "--precision": (("space", "precision"), 0.1),
    "--repeats": (("space", "repeats"), 2),
    "--max-probes": (("space", "max_probes"), 2),
    "--over": (("over",), "rate"),
    "--probe-duration": (("plan", "probe_duration_s"), 1.0),
    "--warmup": (("plan", "warmup_s"), 0.2),
    "--cooldown": (("plan", "cooldown_s"), 1.0),
    "--min-sessions": (("plan", "min_sessions"), 2),
    "--goodput": (("criteria", "goodput"), 1.0),
    "--max-failures": (("criteria", "max_failures"), 1.0),
    "--tier": (("criteria", "tiers"), ["default"]),
    "--name": (("name",), "flagged"),
    "--probe-html": (("plan", "probe_html"), True),
    "--no-early-stop": (("plan", "early_stop"), False),
}
CAPACITY_CONFIG = {"--model": "model: turnbench-sim", "--api": "api: completions"}


Ran = tuple[subprocess.CompletedProcess[str], Path]
"""A case's `turnbench` process and its `--out` folder."""


def _capacity(flag: str, tmp_path: Path, sim: SimProcess) -> Ran:
    """`turnbench capacity` of one probe with `flag`, the base flags it does not replace."""
    values = _values(flag, CAPACITY_OPTIONS[flag], _hints("capacity"), CAPACITY_NEEDS)
    base = {f: v for f, v in CAPACITY_BASE.items() if f != flag and f not in values}
    out = tmp_path / "out"
    args = ["capacity", "--target", sim.url, "--out", str(out)]
    args += [item for f, v in base.items() for item in (f, *v)]
    if flag not in ("--target", "--out"):
        args += [flag, *values]
    return turnbench(*args, cwd=tmp_path), out


@pytest.fixture(scope="module")
def capacity_runs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fast_sim: SimProcess,
) -> Iterator[dict[str, Future[Ran]]]:
    """The selected capacity cases, two at a time (`two_at_a_time`: the SLO, 10 s, is far
    from what a busy machine makes of the fast simulator)."""

    def run(flag: str) -> Ran:
        return _capacity(flag, case_folder(tmp_path_factory), fast_sim)

    with two_at_a_time(request, "test_each_capacity_flag_alone", "flag", run) as runs:
        yield runs


@pytest.mark.xdist_group("capacity-flags")  # (`two_at_a_time`: all its cases on one worker)
@pytest.mark.parametrize("flag", sorted(set(CAPACITY_OPTIONS) - SKIPPED))
def test_each_capacity_flag_alone(flag: str, capacity_runs: dict[str, Future[Ran]]) -> None:
    """One probe against the fast simulator; every probe passes, so the search holds at its
    --max: the answer, then the report's path, last; the flag's value is in the record."""
    proc, out = capacity_runs[flag].result()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    *_, sentence, last = proc.stdout.strip().splitlines()
    assert last == f"report: {folder / 'report.html'}"
    assert re.match(r"holds at least \d+ (user|sessions/s) \(the --max\) at ", sentence), sentence
    record = json.loads((folder / "search.json").read_text())
    if flag in CAPACITY_RECORDED:
        keys, want = CAPACITY_RECORDED[flag]
        value: Any = record
        for key in keys:
            value = value[key]
        assert value == want, record
    (probe,) = record["probes"]
    assert probe["folder"] == f"probe-01-{record['over']}-{record['space']['start']:g}"
    if flag in CAPACITY_CONFIG:
        assert CAPACITY_CONFIG[flag] in (folder / probe["folder"] / "config.yaml").read_text()


# ---------------------------------------------------------------------------------------------
# turnbench sweep

SWEEP_OPTIONS = _options("sweep")
# Every case has these (one point of half a second); a flag under test replaces its own.
SWEEP_BASE: dict[str, list[str]] = {"--users": ["1"], "--point-duration": ["0.5"]}
SWEEP_NEEDS: dict[str, list[str]] = {
    "--target": [],  # every case has it: the fast simulator
    "--out": [],  # every case has it
    "--users": ["1,2"],
    "--rate": ["8"],
    "--model": ["turnbench-sim"],
    "--api": ["completions"],
    "--name": ["flagged"],
    "--as": ["runs", "--cooldown", "0"],
    "--warmup": ["0.1"],  # shorter than the point
    "--set": ["workload.turns=2"],
    "--slo": ["ttft.p90=10s"],
}
SWEEP_ALONE = {"--rate": "--users"}  # the points are given one way or the other


def _sweep(flag: str, tmp_path: Path, sim: SimProcess) -> Ran:
    """`turnbench sweep` of one point with `flag`, the base flags it does not replace."""
    values = _values(flag, SWEEP_OPTIONS[flag], _hints("sweep"), SWEEP_NEEDS)
    base = {
        f: v
        for f, v in SWEEP_BASE.items()
        if f != flag and f not in values and SWEEP_ALONE.get(flag) != f
    }
    out = tmp_path / "out"
    args = ["sweep", "--target", sim.url, "--out", str(out)]
    args += [item for f, v in base.items() for item in (f, *v)]
    if flag not in ("--target", "--out"):
        args += [flag, *values]
    return turnbench(*args, cwd=tmp_path), out


@pytest.fixture(scope="module")
def sweep_runs(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fast_sim: SimProcess,
) -> Iterator[dict[str, Future[Ran]]]:
    """The selected sweep cases, two at a time (`two_at_a_time`)."""

    def run(flag: str) -> Ran:
        return _sweep(flag, case_folder(tmp_path_factory), fast_sim)

    with two_at_a_time(request, "test_each_sweep_flag_alone", "flag", run) as runs:
        yield runs


@pytest.mark.xdist_group("sweep-flags")  # (`two_at_a_time`: all its cases on one worker)
@pytest.mark.parametrize("flag", sorted(set(SWEEP_OPTIONS) - SKIPPED))
def test_each_sweep_flag_alone(flag: str, sweep_runs: dict[str, Future[Ran]]) -> None:
    """A sweep of one point (stages) against the fast simulator: exit 0, the run's (or the
    series') file last."""
    proc, out = sweep_runs[flag].result()
    values = _values(flag, SWEEP_OPTIONS[flag], _hints("sweep"), SWEEP_NEEDS)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    last = proc.stdout.strip().splitlines()[-1]
    file = folder / ("sweep.json" if "runs" in values else "report.html")
    assert last == f"{file.stem if 'runs' in values else 'report'}: {file}"


# ---------------------------------------------------------------------------------------------
# --help of every command

OPTION_LINE = re.compile(r"^│\s*(?:\*\s+)?(--[\w-]+)")


def _paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _paths(sub, (*path, name))


@pytest.mark.parametrize("path", list(_paths(TREE)), ids=lambda p: " ".join(p) or "turnbench")
def test_help_of_every_command(path: tuple[str, ...], tmp_path: Path) -> None:
    """Exit 0, every option listed, and no `<bool>` after a switch: it takes no value, so a
    marker there tells the user to type one (`--help true`)."""
    proc = turnbench(*path, "--help", cwd=tmp_path, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if match := OPTION_LINE.match(line):
            lines[match[1]] = line
    options = [p for p in _command(*path).params if getattr(p, "param_type_name", "") == "option"]
    switches = ["--help"] + [p.opts[0] for p in options if p.is_flag]
    for param in options:
        if not param.hidden:
            assert param.opts[0] in lines, f"{param.opts[0]} is missing from:\n{proc.stdout}"
    for flag in switches:
        assert flag in lines, f"{flag} is missing from:\n{proc.stdout}"
        assert "<bool>" not in lines[flag], lines[flag]
