"""`turnbench dataset` and `turnbench sim` as a newcomer types them, run as real processes.

A messages list under one other key is used and said; two such keys, or any bad input, is one
`error: ` line on stderr naming the file:line and field (or the flag), exit code 2.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared sample data not present")
CHOOSE = ("`workload.messages.messages_key: KEY`", "`--messages-key KEY`")


def turnbench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "turnbench", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]


def write_json(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps(records, indent=2))
    return path


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a refused command (exit code 2, nothing on stdout)."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


def test_single_other_key_is_used_and_said(tmp_path: Path) -> None:
    path = write_json(tmp_path / "t.json", [{"task_id": 1, "traj": chat("hi"), "reward": 1.0}])
    proc = turnbench("dataset", "inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"note: {path}: messages found under 'traj'\n"
    assert "t.json (messages)" in proc.stdout


@needs_data
def test_tau_bench_sample_inspects_as_is() -> None:
    path = DATA / "tool_calls_sample.json"
    proc = turnbench("dataset", "inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"note: {path}: messages found under 'traj'\n"
    assert "tool_calls_sample.json (messages)" in proc.stdout
    assert re.search(r"│ conversations +│ +8 │", proc.stdout), proc.stdout


def test_two_keys_name_both_ways_to_choose(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dpo.json", [{"chosen": chat("a"), "rejected": chat("b")}])
    out = str(tmp_path / "o.jsonl")
    for args in (("inspect", str(path)), ("convert", "--from", "messages", str(path), out)):
        line = one_error_line(turnbench("dataset", *args))
        assert line.startswith(f"error: {path}:2: record 0: ")
        assert "'chosen' and 'rejected'" in line
        assert all(way in line for way in CHOOSE)


def test_messages_key_flag_on_inspect_and_convert(tmp_path: Path) -> None:
    path = write_json(tmp_path / "dpo.json", [{"chosen": chat("a"), "rejected": chat("b")}])
    proc = turnbench("dataset", "inspect", "--messages-key", "rejected", str(path))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    out = tmp_path / "out.jsonl"
    proc = turnbench(
        "dataset", "convert", "--from", "messages", "--messages-key", "chosen", str(path), str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["messages"] == chat("a")


def test_non_json_file_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("workload:\n  type: dataset\n")
    line = one_error_line(turnbench("dataset", "inspect", str(path)))
    assert line.startswith(f"error: {path}:1: bad JSON")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port some other socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _files(tmp: Path) -> None:
    (tmp / "empty.jsonl").write_text("")
    (tmp / "typo.yaml").write_text("a: [1\n")
    (tmp / "latin1.jsonl").write_bytes(b'{"messages": "\xff"}\n')
    (tmp / "unknown.jsonl").write_text('{"foo": 1}\n')
    (tmp / "bad.jsonl").write_text('{"session_id": "a", "turns": [{"text": 1}]}\n')
    (tmp / "ok.jsonl").write_text(json.dumps({"messages": chat("hi")}) + "\n")
    write_json(tmp / "dpo.json", [{"chosen": chat("a"), "rejected": chat("b")}])
    (tmp / "dir").mkdir()


ERROR_CASES = {
    "missing file": (["dataset", "inspect", "{tmp}/missing.jsonl"], "missing.jsonl: cannot read"),
    "directory": (["dataset", "inspect", "{tmp}/dir"], "dir: the folder holds no .json or .jsonl"),
    "empty file": (["dataset", "inspect", "{tmp}/empty.jsonl"], "empty.jsonl: the dataset"),
    "not JSON": (["dataset", "inspect", "{tmp}/typo.yaml"], "typo.yaml:1: bad JSON"),
    "not UTF-8": (["dataset", "inspect", "{tmp}/latin1.jsonl"], "latin1.jsonl:1: not UTF-8"),
    "unknown content": (["dataset", "inspect", "{tmp}/unknown.jsonl"], "keys foo"),
    "bad field": (["dataset", "inspect", "{tmp}/bad.jsonl"], "bad.jsonl:1 [turns[0].text]"),
    "forced format": (
        ["dataset", "inspect", "--format", "rows", "{tmp}/ok.jsonl"],
        "ok.jsonl:1 [conversation_id]",
    ),
    "unknown --format": (["dataset", "inspect", "--format", "csv", "{tmp}/ok.jsonl"], "[--format]"),
    "two messages keys": (["dataset", "inspect", "{tmp}/dpo.json"], "--messages-key KEY"),
    "unknown --from": (
        ["dataset", "convert", "--from", "csv", "{tmp}/ok.jsonl", "{tmp}/o.jsonl"],
        "[--from]",
    ),
    "convert missing input": (
        ["dataset", "convert", "--from", "messages", "{tmp}/missing.jsonl", "{tmp}/o.jsonl"],
        "missing.jsonl: cannot read",
    ),
    "convert into a directory": (
        ["dataset", "convert", "--from", "messages", "{tmp}/ok.jsonl", "{tmp}/dir"],
        "dir: cannot write",
    ),
    "convert into a missing folder": (
        ["dataset", "convert", "--from", "messages", "{tmp}/ok.jsonl", "{tmp}/no/o.jsonl"],
        "o.jsonl: cannot write",
    ),
    "sim bad YAML": (["sim", "--port", "0", "--config", "{tmp}/typo.yaml"], "typo.yaml:2"),
    "sim missing config": (
        ["sim", "--port", "0", "--config", "{tmp}/missing.yaml"],
        "missing.yaml: cannot read",
    ),
    "sim config is a directory": (["sim", "--port", "0", "--config", "{tmp}/dir"], "dir: cannot"),
    "sim unknown --set key": (["sim", "--port", "0", "--set", "novel=1"], "--set [novel]"),
    "sim --set without =": (["sim", "--port", "0", "--set", "novel"], "[--set]"),
    "sim bad --set value": (["sim", "--port", "0", "--set", "seed=x"], "--set [seed]"),
    "sim bad --fault": (["sim", "--port", "0", "--fault", "explode=1"], "[--fault]"),
    "inspect without a file": (["dataset", "inspect"], "Missing argument"),
    "sim port not a number": (["sim", "--port", "abc"], "'--port'"),
    "sim port too big": (["sim", "--port", "70000"], "[--port]"),
    "sim negative port": (["sim", "--port", "-1"], "[--port]"),
    "sim port in use": (["sim", "--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}"),
    "sim bad host": (["sim", "--port", "0", "--host", "999.1.1.1"], "cannot listen on 999.1.1.1"),
}


@pytest.mark.parametrize(("args", "expected"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_every_error_is_one_line_exit_2(
    tmp_path: Path, busy_port: int, args: list[str], expected: str
) -> None:
    _files(tmp_path)
    fill = {"tmp": str(tmp_path), "busy": str(busy_port)}
    line = one_error_line(turnbench(*(a.format(**fill) for a in args)))
    assert expected.format(**fill) in line
