"""`turnbench capacity` through the real CLI against the simulator as a separate process: it
finds a known capacity, answers in plain words when it cannot bracket, says when a probe's
start was warm, refuses bad input in one line, and leaves everything reported on Ctrl-C.

The known capacity: `max_num_seqs` N, replies of exactly 20 tokens (`ignore_eos`), no prefill
per token and no decode slow-down per running sequence, think time 0. Up to N users no
request ever waits: TTFT is `ttft_base_ms` (20 ms). With N + 1 closed-loop users the N
running replies end together and the user who asks last waits a whole reply (~180 ms): one
request in N + 1 queues, above the 5 % a p95 leaves, so `ttft p95 <= 100ms` passes at N and
fails at N + 1, a boundary as sharp as a step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cli_options import turnbench
from conftest import SimProcess, start_sim

N = 6
SIM_FLAGS = (
    "--max-num-seqs", str(N), "--ttft-base-ms", "20", "--prefill-ms-per-token", "0",
    "--decode-ms-base", "8", "--decode-ms-per-seq", "0",
)  # fmt: skip
CONFIG = """
name: known
target: {metrics_interval_s: 0}
session: {ignore_eos: true}
workload: {type: synthetic, turns: 2, input_tokens: 32, output_tokens: 20}
slo: {tiers: {default: {objectives: ["ttft p95 <= 100ms"]}}}
"""
QUICK = ("--probe-duration", "2", "--warmup", "0.4", "--cooldown", "0.2", "--min-sessions", "3")
PROBE_FILES = {"config.yaml", "events.db", "summary.json", "console.txt"}
"""A probe's folder: no report.html unless --probe-html (`turnbench report` draws it)."""


def search_dir(out: Path) -> Path:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return folder


def record(out: Path) -> dict[str, Any]:
    return json.loads((search_dir(out) / "search.json").read_text())


def assert_answered(proc: subprocess.CompletedProcess[str], out: Path) -> str:
    """Exit 0, no traceback, the report's path last and the answer just before it."""
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    *_, sentence, last = proc.stdout.strip().splitlines()
    assert last == f"report: {search_dir(out) / 'report.html'}"
    assert record(out)["answer"]["sentence"] == sentence
    return sentence


@pytest.fixture(scope="module")
def known(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One search against a simulator that holds exactly N users."""
    folder = tmp_path_factory.mktemp("known")
    (folder / "known.yaml").write_text(CONFIG)
    sim = start_sim(*SIM_FLAGS)
    try:
        proc = turnbench(
            "capacity",
            "known.yaml",
            "--target",
            sim.url,
            *QUICK,
            "--out",
            str(folder / "out"),
            cwd=folder,
        )
    finally:
        sim.stop()
    return proc, folder / "out"


def test_finds_the_known_capacity(known: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = known
    sentence = assert_answered(proc, out)
    found = record(out)
    answer = found["answer"]
    assert answer["kind"] == "holds"
    assert abs(answer["holds"] - N) <= 0.1 * N, sentence
    assert sentence.startswith(f"holds {answer['holds']:g} users (bracket ")
    assert "p95 TTFT" in sentence and "output tok/s" in sentence
    assert found["elapsed_s"] < 60
    counted = [p for p in found["probes"] if p["counts"]]
    for end in (answer["holds"], answer["fails"]):
        assert sum(p["load"] == end for p in counted) == 2  # --repeats 1: each end twice
    assert not any(p["warm"] for p in found["probes"])  # salted: nothing left by a probe


def test_every_probe_is_a_run_folder(known: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _proc, out = known
    folder = search_dir(out)
    assert re.fullmatch(r"\d{8}-\d{6}-capacity-known", folder.name)
    probes = record(out)["probes"]
    for i, probe in enumerate(probes, start=1):
        assert probe["folder"] == f"probe-{i:02d}-users-{probe['load']:g}"
        assert {p.name for p in (folder / probe["folder"]).iterdir()} == PROBE_FILES
    assert (folder / "report.html").read_text().startswith("<!doctype html>")
    assert f"href='{probes[0]['folder']}/summary.json'" in (folder / "report.html").read_text()
    page = (folder / "report.html").read_text()
    assert "id='panel-tokens'" in page and not re.search(r"<script[^>]+src=", page)


def test_a_probe_is_re_reported_from_its_events_db(
    known: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _proc, out = known
    probe = search_dir(out) / record(out)["probes"][-1]["folder"]
    before = json.loads((probe / "summary.json").read_text())
    (probe / "summary.json").unlink()
    proc = turnbench("report", str(probe), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"report: {probe / 'report.html'}"
    assert (probe / "report.html").read_text().startswith("<!doctype html>")
    assert json.loads((probe / "summary.json").read_text())["slo"] == before["slo"]


def test_fails_already_at_the_first_load(sim_factory: Any, tmp_path: Path) -> None:
    sim: SimProcess = sim_factory("--ttft-base-ms", "300", "--decode-ms-base", "1")
    proc = turnbench(
        "capacity", "--target", sim.url, "--slo", "ttft.p90=100ms", "--set", "workload.turns=1",
        "--set", "session.max_tokens=4", *QUICK, "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    sentence = assert_answered(proc, tmp_path / "out")
    assert re.fullmatch(r"fails already at 1 user: p90 TTFT 3\d\d ms > 100 ms", sentence), sentence
    probes = record(tmp_path / "out")["probes"]
    # every request misses: it stops once even twice its rate so far could not make p90 pass
    # (a probe that finished too few conversations before a check could tell is run again)
    early = [p for p in probes if p["stopped_early"]]
    assert early and all(p["end_reason"] == "early_stop" and not p["passed"] for p in early)
    assert early[0]["stopped_early"].startswith("ttft p90 <= 100 ms: "), early[0]
    assert len(probes) == 1 or probes[0]["superseded_by"] == probes[1]["folder"]
    assert "stopped early: ttft p90" in proc.stdout


def test_holds_at_the_max_and_says_a_start_was_warm(sim_factory: Any, tmp_path: Path) -> None:
    """Unsalted, the second probe replays the first one's conversations (the same seed):
    its first requests find their prefixes in the server's cache, and the answer says so.
    The cache is large enough that nothing of the first probe is evicted, however many
    conversations it played."""
    sim: SimProcess = sim_factory("--set", "zero_delay=true", "--kv-cache-tokens", "50000000")
    proc = turnbench(
        "capacity", "--target", sim.url, "--slo", "ttft.p90=10s", "--max", "2",
        "--set", "cache.salt=false", *QUICK, "--out", str(tmp_path / "out"), cwd=tmp_path,
    )  # fmt: skip
    sentence = assert_answered(proc, tmp_path / "out")
    assert sentence.startswith("holds at least 2 users (the --max) at ")
    assert sentence.endswith("(warm cache at the start of probe-02-users-2)")
    assert [p["warm"] for p in record(tmp_path / "out")["probes"]] == [False, True]
    assert "the server's prefix cache was warm at the start of probe-02-users-2" in proc.stdout


UNREACHABLE = "http://127.0.0.1:9"
BAD_INPUT = {
    "no SLO": ([], "give an SLO (--slo ttft.p90=500ms, or the config's slo: section) or a"),
    "unknown metric": (["--slo", "speed.p90=1"], "--slo 'speed.p90=1': unknown metric 'speed'"),
    "inverted range": (
        ["--slo", "ttft.p90=1s", "--start", "8", "--max", "4"],
        "the range is empty",
    ),
    "empty range": (["--slo", "ttft.p90=1s", "--start", "0"], "--start must be above 0"),
    "unknown tier": (["--slo", "ttft.p90=1s", "--tier", "gold"], "--tier 'gold' is not a tier"),
    "bad mode": (["--slo", "ttft.p90=1s", "--over", "turns"], "--over expects users or rate"),
    "long warm-up": (
        ["--slo", "ttft.p90=1s", "--probe-duration", "2", "--warmup", "2"],
        "--warmup 2 must be at least 0 and shorter than the probe's 2 s",
    ),
    "unreachable target": (["--slo", "ttft.p90=1s"], "127.0.0.1:9"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_leaves_nothing(case: str, tmp_path: Path) -> None:
    args, words = BAD_INPUT[case]
    proc = turnbench("capacity", "--target", UNREACHABLE, *args, "--out", "out", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert words in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ctrl_c_keeps_every_finished_probe(fast_sim: SimProcess, tmp_path: Path) -> None:
    """SIGINT during the second probe: it is cut and kept (marked interrupted, no verdict),
    the first stays reported, search.json and report.html are written, exit 130."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "capacity", "--target", fast_sim.url,
         "--slo", "ttft.p90=10s", "--probe-duration", "4", "--cooldown", "0",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*/*-probe-02-users-2/events.db")):
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the run
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: every process of the group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    found = record(out)
    first, second = found["probes"]
    assert first["counts"] and first["passed"] and first["end_reason"] == "duration"
    assert second["end_reason"] == "interrupted" and not second["counts"]
    assert found["answer"]["sentence"] == "interrupted after 1 probe: so far 1 user held"
    folder = search_dir(out)
    for probe in (first, second):
        assert {p.name for p in (folder / probe["folder"]).iterdir()} >= PROBE_FILES
    assert stdout.strip().splitlines()[-1] == f"report: {folder / 'report.html'}"


def test_a_target_gone_between_probes_stops_with_what_was_measured(
    sim_factory: Any, tmp_path: Path
) -> None:
    """The server stops during the cool-down after the first probe: the second cannot start,
    the search stops with the first probe reported and says why, exit 2."""
    sim: SimProcess = sim_factory("--set", "zero_delay=true")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnbench", "capacity", "--target", sim.url,
         "--slo", "ttft.p90=10s", "--probe-duration", "1", "--cooldown", "4",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.glob("*/probe-01-users-1/console.txt")):
        time.sleep(0.1)
    sim.stop()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stdout + stderr
    answer = record(out)["answer"]
    assert answer["kind"] == "stopped"
    assert answer["sentence"].startswith("stopped after 1 probe (")
    assert answer["sentence"].endswith("): so far 1 user held")
    assert stdout.strip().splitlines()[-1] == f"report: {search_dir(out) / 'report.html'}"
