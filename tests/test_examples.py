"""The shipped examples: every one validates, and the shortest runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from turnbench.config_load import load_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    for name in (
        "parallel.yaml",
        "sequential.yaml",
        "session-rate.yaml",
        "users.yaml",
        "retry-faults.yaml",
        "dataset.yaml",
        "truncate.yaml",
    ):
        assert name in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.target.url is None  # every example runs against the built-in simulator


def test_parallel_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "turnbench",
            "run",
            "examples/parallel.yaml",
            "--out",
            str(tmp_path),
            "--no-live",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["ok"] > 0
    assert summary["requests"]["failed"] == 0
