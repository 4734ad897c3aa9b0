"""`turnbench sim` as a process: clean exit on signals, one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import start_sim


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly(sig: signal.Signals) -> None:
    sim = start_sim("--zero-delay")
    with urllib.request.urlopen(sim.url + "/health", timeout=10) as resp:
        assert resp.status == 200
    sim.proc.send_signal(sig)
    assert sim.proc.wait(timeout=15) == 0
    assert sim.proc.stderr is not None
    assert "Traceback" not in sim.proc.stderr.read()


def run_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnbench", "sim", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize(
    ("yaml_text", "args", "expected"),
    [
        ("max_num_seqs: [1\n", (), "invalid YAML"),
        ("max_num_seqz: 4\n", (), "max_num_seqz"),
        ("max_num_seqs: many\n", (), "max_num_seqs"),
        ("faults: {stall: 2}\n", (), "faults.stall"),
        ("", ("--fault", "explode=1"), "--fault"),
        ("", ("--fault", "reset=lots"), "reset=lots"),
        ("", ("--set", "output_len.dist=zipf"), "output_len.dist"),
        ("", ("--set", "novel=1"), "novel"),
    ],
)
def test_bad_config_is_one_line_exit_2(
    tmp_path: Path, yaml_text: str, args: tuple[str, ...], expected: str
) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text(yaml_text)
    proc = run_sim("--config", str(cfg), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    if yaml_text and not args:
        assert str(cfg) in lines[0]
    assert proc.stdout == ""


def test_yaml_config_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("model: from-yaml\nmax_model_len: 1024\noutput_len: {dist: fixed, mean: 9}\n")
    sim = start_sim("--config", str(cfg), "--model", "from-flag", "--zero-delay")
    try:
        with urllib.request.urlopen(sim.v1 + "/models", timeout=10) as resp:
            model = json.loads(resp.read())["data"][0]
        assert model["id"] == "from-flag" and model["max_model_len"] == 1024
        req = urllib.request.Request(
            sim.v1 + "/completions", data=json.dumps({"prompt": "x"}).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["usage"]["completion_tokens"] == 9
    finally:
        sim.stop()
