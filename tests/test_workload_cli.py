"""`dataset inspect` and `dataset convert`, run through typer's CliRunner."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from turnbench.tokens.template import count_chat_tokens
from turnbench.workload.cli import dataset_app
from turnbench.workload.dataset import load_dataset

DATA = Path(__file__).parent.parent.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared sample data not present")
RUNNER = CliRunner()


def row(output: str, label: str, after: str = "") -> list[str]:
    """The cells after `label` in the first table row with that label below `after`."""
    for line in output[output.index(after) :].splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in:\n{output}")


@needs_data
def test_inspect_sharegpt_sample_numbers() -> None:
    raw = json.loads((DATA / "sharegpt_sample.json").read_text())
    result = RUNNER.invoke(dataset_app, ["inspect", str(DATA / "sharegpt_sample.json")])
    assert result.exit_code == 0, result.output
    out = result.output
    # independent count: hRPPgZT_0 and hRPPgZT_8 are one conversation
    humans = [sum(m["from"] == "human" for m in r["conversations"]) for r in raw]
    merged = [*humans[:3], humans[3] + humans[4]]
    assert row(out, "records") == ["5"]
    assert row(out, "conversations") == ["4"]
    assert row(out, "turns") == [str(sum(merged))] == ["14"]
    assert row(out, "turns per conversation (mean)") == [f"{sum(merged) / 4:.2f}"]
    for turns in set(merged):
        assert row(out, str(turns), "turns per conversation ") == [str(merged.count(turns))]
    firsts = [
        count_chat_tokens([{"role": "user", "content": r["conversations"][0]["value"]}])
        for r in raw[:4]
    ]
    assert row(out, "1", "context growth")[:2] == ["4", f"{statistics.fmean(firsts):.1f}"]
    assert row(out, "repaired") == ["split parts merged", "1"]


def test_inspect_bad_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"session_id": "a", "turns": [{"text": 1}]}\n')
    result = RUNNER.invoke(dataset_app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:1 [turns[0].text]" in result.output


@needs_data
@pytest.mark.parametrize(
    "name,fmt",
    [
        ("sharegpt_sample.json", "sharegpt"),
        ("endpoints_rows_parallel_tools_sample.jsonl", "rows"),
        ("aiperf_mooncake_sessions_sample.jsonl", "trace"),
        ("aiperf_multi_turn_sample.jsonl", "aiperf"),
    ],
)
def test_convert_round_trips(tmp_path: Path, name: str, fmt: str) -> None:
    out = tmp_path / "out.jsonl"
    result = RUNNER.invoke(dataset_app, ["convert", "--from", fmt, str(DATA / name), str(out)])
    assert result.exit_code == 0, result.output
    original = list(load_dataset(DATA / name, fmt).conversations)  # type: ignore[arg-type]
    back = load_dataset(out, "messages")
    assert list(back.conversations) == original
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) <= {"id", "messages", "tools", "metadata", "group", "start_s"}


def test_convert_rejects_unknown_format(tmp_path: Path) -> None:
    result = RUNNER.invoke(dataset_app, ["convert", "--from", "csv", "a", str(tmp_path / "b")])
    assert result.exit_code == 2
