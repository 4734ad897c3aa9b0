"""The `slo:` section and `--slo`: every written form parses to the same objective, every bad
form is one line (through the real CLI too), and a real run against the simulator judges its
SLOs into summary.json, which `turnbench report` judges again from events.db alone."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from cli_options import turnbench
from conftest import SimProcess
from turnbench.config import RunConfig
from turnbench.config_load import load_config
from turnbench.errors import InputError
from turnbench.slo import METRICS, Objective, SloConfig, with_flags

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("ttft p90 <= 500ms", ("ttft", 90, 500, "all")),
        ("ttft.p90=500ms", ("ttft", 90, 500, "all")),
        ("ttft.p90<=0.5s", ("ttft", 90, 500, "all")),
        ("TTFT P90 <= 500", ("ttft", 90, 500, "all")),
        ("e2e.p99=8s", ("e2e", 99, 8000, "all")),
        ("tpot p90 <= 50ms", ("tpot", 90, 50, "all")),
        ("itl.p99.9=100", ("itl", 99.9, 100, "all")),
        ("ttft.p90.first=300ms", ("ttft", 90, 300, "first")),
        ("ttft p90 later <= 200ms", ("ttft", 90, 200, "later")),
        ("output_tokens_per_s p25 >= 30", ("output_tokens_per_s", 25, 30, "all")),
        ("output_tokens_per_s.p25=30tok/s", ("output_tokens_per_s", 25, 30, "all")),
        ("output_tokens_per_s.p10 = 12.5 tokens/s", ("output_tokens_per_s", 10, 12.5, "all")),
        ("e2e.p100=.5s", ("e2e", 100, 500, "all")),
    ],
)
def test_text_forms(text: str, want: tuple[str, float, float, str]) -> None:
    o = Objective.model_validate(text)
    assert (o.metric, o.percentile, o.threshold, o.turns) == pytest.approx(want)


def test_mapping_form_and_label() -> None:
    o = Objective.model_validate(
        {"metric": "ttft", "percentile": 99, "threshold": "10s", "turns": "first"}
    )
    assert o == Objective.model_validate("ttft.p99.first=10000")
    assert o.label == "ttft p99 <= 10000 ms (first turns)"
    floor = Objective.model_validate(
        {"metric": "output_tokens_per_s", "percentile": 25, "threshold": 30}
    )
    assert floor.floor and floor.label == "output_tokens_per_s p25 >= 30 tokens/s"
    # the stored form (ms, tokens/s) reads back as the same objective: events.db re-judges it
    assert Objective.model_validate(o.model_dump(mode="json")) == o


BAD = [
    ("ttfb.p90=500ms", "unknown metric 'ttfb'; expected one of " + ", ".join(METRICS)),
    ("ttft=500ms", "ttft needs one percentile, e.g. ttft.p90"),
    ("ttft.p90.p99=5", "ttft needs one percentile"),
    ("ttft.p0=5", "percentile must be in (0, 100], got p0"),
    ("ttft.p101=5", "percentile must be in (0, 100], got p101"),
    ("ttft.p90>=500ms", "ttft is a limit (a time): write <= or ="),
    ("output_tokens_per_s.p25<=30", "output_tokens_per_s is a floor (a speed): write >= or ="),
    ("ttft.p90=30tok/s", "ttft is a time: its unit is ms or s, not 'tok/s'"),
    ("output_tokens_per_s.p25=30ms", "output_tokens_per_s is a speed: its unit is tokens/s"),
    ("ttft.p90=0", "threshold must be greater than 0"),
    ("ttft.p90=fast", "threshold 'fast' is not a number with an optional unit"),
    ("ttft.p90.sometimes=5", "unknown word 'sometimes' after ttft"),
    ("ttft.p90.first.later=5", "give at most one turn class"),
    ("ttft p90", "expected METRIC.pNN=VALUE"),
    ("ttft.p90=", "expected METRIC.pNN=VALUE"),
    ("a b:ttft.p90=5", "tier name 'a b' may hold only letters, digits, _ and -"),
]


@pytest.mark.parametrize(("item", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_flag_items_are_one_input_error(item: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        with_flags(None, [item])
    assert str(err.value).startswith(f"--slo {item!r}: ")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("item", "message"),
    [BAD[0], BAD[5], BAD[7], ("ttft.p90=5xs", "ttft is a time: its unit is ms or s, not 'xs'")],
    ids=["unknown metric", "wrong direction", "wrong unit", "unknown unit"],
)
def test_bad_slo_flags_through_the_cli(item: str, message: str, tmp_path: Path) -> None:
    """A bare command line, no config: one line on stderr, exit 2, nothing written, and the
    run never starts (no simulator is needed to refuse it)."""
    proc = turnbench("run", "--slo", "e2e.p99=8s", "--slo", item, "--out", "o", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"error: --slo {item!r}: {message}\n"
    assert proc.stdout == "" and not (tmp_path / "o").exists()


def test_flags_join_their_tier_and_replace_the_same_objective() -> None:
    base = SloConfig.model_validate(
        {"tiers": {"default": {"objectives": ["ttft p90 <= 500ms", "e2e p99 <= 8s"]}}}
    )
    got = with_flags(base, ["ttft.p90=800ms", "ttft.p90.later=200", "batch:e2e.p99=60s"])
    assert got is not None
    assert [o.label for o in got.tiers["default"].objectives] == [
        "e2e p99 <= 8000 ms",
        "ttft p90 <= 800 ms",
        "ttft p90 <= 200 ms (later turns)",
    ]
    assert [o.label for o in got.tiers["batch"].objectives] == ["e2e p99 <= 60000 ms"]
    assert with_flags(base, []) is base and with_flags(None, []) is None
    assert base.tiers["default"].objectives[0].threshold == 500  # the file's config untouched


MAPPING = {"metric": "ttft", "percentile": 90, "threshold": 5}


@pytest.mark.parametrize(
    ("slo", "field", "message"),
    [
        ({"tiers": {}}, "slo.tiers", "give at least one tier"),
        ({"tiers": {"x": {}}}, "slo.tiers.x", "needs at least one objective or a conversation_s"),
        (
            {"tiers": {"x": {"objectives": ["ttfb p90 <= 5"]}}},
            "slo.tiers.x.objectives.0",
            "unknown metric 'ttfb'",
        ),
        (
            {"tiers": {"x": {"objectives": ["ttft.p90=5", "ttft p90 <= 6"]}}},
            "slo.tiers.x",
            "ttft p90 of every turn is bounded twice",
        ),
        (
            {"tiers": {"x": {"objectives": [{**MAPPING, "max": 1}]}}},
            "slo.tiers.x.objectives.0.max",
            "unknown key",
        ),
        ({"tiers": {"x": {"conversation_s": 0}}}, "slo.tiers.x.conversation_s", "greater than 0"),
        ({"tier": {}}, "slo.tiers", "Field required"),  # pydantic's first error names it
    ],
)
def test_bad_sections_are_one_line_naming_the_key(
    tmp_path: Path, slo: dict[str, Any], field: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"slo": slo}))
    with pytest.raises(InputError) as err:
        load_config(path)
    assert f"[{field}]" in str(err.value) and message in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_the_documented_example_is_valid() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    block = re.search(r"```yaml\n(slo:.*?)```", text, re.S)
    assert block is not None
    cfg = RunConfig.model_validate(yaml.safe_load(block[1]))
    assert cfg.slo is not None and set(cfg.slo.tiers) == {"interactive", "batch"}
    assert cfg.slo.tiers["interactive"].conversation_s == 120
    assert cfg.slo.tiers["interactive"].objectives[-1].turns == "later"
    assert RunConfig().slo is None


def test_a_run_with_slo_flags_judges_them(tmp_path: Path, fast_sim: SimProcess) -> None:
    """A real run against the simulator with only flags; summary.json holds the verdicts and
    the goodput, the console shows both tables, and `turnbench report` gives the same slo
    block again from events.db."""
    out = tmp_path / "out"
    proc = turnbench(
        "run", "--target", fast_sim.url, "--sessions", "6", "--turns", "3",
        "--slo", "ttft.p90=10s", "--slo", "e2e p99 <= 20s", "--slo", "itl.p99=5s",
        "--slo", "output_tokens_per_s.p25=1", "--slo", "strict:ttft.p50.later=0.000001",
        "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = out.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    slo = summary["slo"]
    assert set(slo["tiers"]) == {"default", "strict"}
    default, strict = slo["tiers"]["default"], slo["tiers"]["strict"]
    assert [o["slo"] for o in default["objectives"]] == [
        "ttft p90 <= 10000 ms",
        "e2e p99 <= 20000 ms",
        "itl p99 <= 5000 ms",
        "output_tokens_per_s p25 >= 1 tokens/s",
    ]
    assert default["passed"] is True and strict["passed"] is False
    ok = summary["requests"]["ok"]
    assert ok == 18 and default["requests"]["all"]["good"] == ok
    assert default["requests"]["first"]["total"] == 6 == default["requests"]["later"]["total"] / 2
    assert default["conversations"] == {
        "total": 6,
        "good": 6,
        "ratio": 1.0,
        "per_s": pytest.approx(6 / summary["requests"]["window_s"]),
        "unfinished": 0,
    }
    conn = sqlite3.connect(run_dir / "events.db")
    later = conn.execute(
        "SELECT (t_first_token_ns - t_sent_ns) / 1e6 FROM requests "
        "WHERE status = 'ok' AND turn_index > 1"
    ).fetchall()
    conn.close()
    (ttft,) = strict["objectives"]
    assert ttft["values"] == 12
    assert ttft["measured"] == pytest.approx(float(np.percentile([v for (v,) in later], 50)))
    assert strict["requests"]["later"]["good"] == 0 and strict["requests"]["first"]["good"] == 6
    assert "SLOs (percentiles" in proc.stdout and "Goodput" in proc.stdout
    assert "Goodput" in (run_dir / "report.html").read_text()
    assert "slo:" in (run_dir / "config.yaml").read_text()
    # re-judged from events.db alone, in a folder holding nothing else
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(run_dir / "events.db", again / "events.db")
    proc = turnbench("report", str(again), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((again / "summary.json").read_text())["slo"] == slo
