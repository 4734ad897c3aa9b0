"""`turnbench compare`: real runs against the simulator, compared through the real CLI.

Two runs of one config differ within noise; a run against a server whose TTFT is 200 ms longer
is flagged outside noise, slower; a run of another workload is compared on the turns both have,
and the config keys that differ are listed. The bootstrap behind the noise mark is checked
against a brute-force resampling of the same data.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_options import turnbench
from conftest import start_sim
from runs import run_bench
from turnbench.metrics import bootstrap
from turnbench.report.compare import REDACTED, Comparison, Figure, compare, config_differences
from turnbench.report.compare_tables import NOISE_MARK

pytestmark = pytest.mark.serial  # two runs' tails agree only if no other test loads the machine

SLOW_TTFT_MS = 200.0


def _config(url: str, turns: int = 4) -> dict[str, Any]:
    return {
        "target": {"url": url},
        "seed": 7,
        "workload": {
            "type": "synthetic",
            "conversations": 24,
            "turns": turns,
            # lengths that vary, as real prompts and replies do: the spread the bootstrap sees
            "input_tokens": {"dist": "uniform", "min": 16, "max": 600},
            "output_tokens": {"dist": "uniform", "min": 2, "max": 12},
        },
        "session": {"think_time": 0.0, "ignore_eos": True},
        "load": {"mode": "users", "users": 6, "warmup_s": 0.3},
        "slo": {"tiers": {"fast": {"objectives": ["ttft p90 <= 120ms"]}}},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Folders of four real runs: `a` and `b` of one config on one simulator (default delays),
    `slow` the same config against a simulator with a longer TTFT, `short` a workload of 2 turns
    instead of 4 on the first simulator."""
    base = tmp_path_factory.mktemp("compare")
    sim = start_sim()
    slow = start_sim("--ttft-base-ms", str(SLOW_TTFT_MS))
    try:
        yield {
            "a": run_bench(base / "a", _config(sim.v1)).path,
            "b": run_bench(base / "b", _config(sim.v1)).path,
            "slow": run_bench(base / "slow", _config(slow.v1)).path,
            "short": run_bench(base / "short", _config(sim.v1, turns=2)).path,
        }
    finally:
        sim.stop()
        slow.stop()


def _figures(c: Comparison) -> dict[str, Figure]:
    return {f.label: f for s in c.sections for f in s.figures}


def test_runs_of_one_config_differ_within_noise(runs: dict[str, Path]) -> None:
    """TTFT and E2E percentiles, overall and per turn, of two runs of the same config: the
    bootstrap interval of the difference contains 0.

    TPOT and ITL are held to a few per cent instead: the simulator decodes at a near-constant
    rate, so their spread within a run is a fraction of a millisecond, which a whole-run effect
    (a busier machine during one run) can exceed; the bootstrap of the requests cannot see such
    an effect (docs/compare.md), and rightly flags the difference it makes."""
    figures = _figures(compare([runs["a"], runs["b"]]))
    latencies = [f for f in figures.values() if re.match(r"(TTFT|E2E|turn \d) ", f.label)]
    assert len(latencies) == 6 + 4 * 2
    outside = [f.label for f in latencies if f.differences[0].within_noise is not True]
    assert not outside, outside
    for label in ("TPOT p50", "TPOT p90", "ITL p50", "ITL p90"):
        d = figures[label].differences[0]
        assert d.within_noise is not None and d.relative is not None
        assert abs(d.relative) < 0.05, (label, d.relative)


def test_a_slower_server_is_flagged_outside_noise(runs: dict[str, Path]) -> None:
    """TTFT grows by about the simulator's added 180 ms, with a positive sign, and outside
    noise, overall and on every turn."""
    c = compare([runs["a"], runs["slow"]])
    figures = _figures(c)
    for label in ("TTFT p50", "TTFT p90", "turn 1 p50", "turn 4 p90"):
        d = figures[label].differences[0]
        assert d.within_noise is False, label
        assert d.delta is not None and d.relative is not None
        assert SLOW_TTFT_MS - 20 - 30 < d.delta < SLOW_TTFT_MS + 30, (label, d.delta)
        assert d.relative > 1.0
    good = figures["fast: requests good %"]
    assert good.values[0] is not None and good.values[0] > 90
    assert good.values[1] == 0.0 and good.differences[0].within_noise is None
    assert figures["requests/s"].differences[0].delta < 0  # type: ignore[operator]
    assert figures["requests/s"].differences[0].within_noise is None  # no noise estimate
    keys = dict(c.config_diff)
    assert "target.url" in keys and "resolved.cache_salt" not in keys


def test_other_workloads_compare_on_the_turns_they_share(runs: dict[str, Path]) -> None:
    c = compare([runs["a"], runs["short"]])
    turns = {f.label for f in c.sections[0].figures}
    assert turns == {"turn 1 p50", "turn 1 p90", "turn 2 p50", "turn 2 p90"}
    assert any("turn indexes 3-4 are not in every run" in n for n in c.notes), c.notes
    assert dict(c.config_diff) == {"workload.turns.mean": ["4.0", "2.0"]}


def _table_row(stdout: str, label: str) -> list[str]:
    (line,) = [ln for ln in stdout.splitlines() if re.match(rf"│ {re.escape(label)}\s+│", ln)]
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_console_shows_each_difference_and_the_noise_mark(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    """Through the real CLI, three runs: the slow run's TTFT unmarked and positive, the twin
    run's marked; the config keys that differ, with their values; no HTML without --html."""
    proc = turnbench(
        "compare",
        str(runs["a"]),
        str(runs["b"]),
        str(runs["slow"]),
        cwd=tmp_path,
        env={"COLUMNS": "200"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    _, a, _, b_diff, slow, slow_diff = _table_row(proc.stdout, "TTFT p50")
    assert b_diff.endswith(NOISE_MARK)
    assert not slow_diff.endswith(NOISE_MARK) and slow_diff.startswith("+")
    assert float(slow.replace(",", "")) > float(a.replace(",", "")) + 100
    config = proc.stdout.split("Config differences", 1)[1]
    assert "target.url" in config and "resolved.url" in config
    assert not list(tmp_path.glob("*.html"))
    assert "compare:" not in proc.stdout


def test_html_page_is_self_contained(runs: dict[str, Path], tmp_path: Path) -> None:
    """Tables and the overlaid plots, Bokeh inlined; nothing fetched; a folder name is
    escaped; the path is the last line (tests/test_report_browser.py opens it in a browser)."""
    odd = tmp_path / "<script>alert(1)"
    shutil.copytree(runs["a"], odd)
    page = tmp_path / "compare.html"
    proc = turnbench("compare", str(odd), str(runs["short"]), "--html", str(page), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == f"compare: {page}"
    text = page.read_text(encoding="utf-8")
    assert text.lower().startswith("<!doctype html")
    panels = re.findall(r"<div class='panel' id='panel-(\w+)'>", text)
    assert panels == ["per_turn", "cdf_ttft", "cdf_e2e", "throughput"]
    assert "/* BEGIN bokeh.min.js */" in text
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert not re.search(r"""<script[^>]*\ssrc=|<link[^>]*\shref=""", text)
    assert "turn 2 p90" in text and "workload.turns" in text


BAD = {
    "one run": (["{a}"], r"compare needs two runs or more"),
    "not a folder": (["{a}", "{missing}"], r"\{missing\}: not a folder"),
    "no events.db": (["{a}", "{empty}"], r"\{empty\}: no events.db in this folder"),
    "html folder missing": (
        ["{a}", "{a}", "--html", "{missing}/x.html"],
        r"the folder to write into does not exist",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line(case: str, runs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    places = {
        "{a}": str(runs["a"]),
        "{missing}": str(tmp_path / "missing"),
        "{empty}": str(tmp_path / "empty"),
    }
    args, pattern = BAD[case]
    for key, value in places.items():
        args = [x.replace(key, value) for x in args]
        pattern = pattern.replace(re.escape(key), re.escape(value))
    proc = turnbench("compare", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ")
    assert re.search(pattern, proc.stderr), proc.stderr


def test_secrets_never_show_in_the_config_differences() -> None:
    a = {"target": {"headers": {"Authorization": "Bearer one", "X-Team": "a"}, "api_key": "k1"}}
    b = {"target": {"headers": {"Authorization": "Bearer two", "X-Team": "b"}, "api_key": "k2"}}
    diff = dict(config_differences([a, b]))
    assert diff["target.headers.Authorization"] == [REDACTED, REDACTED]
    assert diff["target.api_key"] == [REDACTED, REDACTED]
    assert diff["target.headers.X-Team"] == ["a", "b"]


def _brute(values: np.ndarray, percentiles: tuple[int, ...], n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(3)
    picks = rng.integers(0, values.size, size=(n, values.size))
    return np.percentile(values[picks], percentiles, axis=1)


def test_order_statistic_bootstrap_matches_resampling() -> None:
    """The fast replicates have the spread and the interval of resampling the values."""
    values = np.random.default_rng(1).lognormal(3.0, 0.7, 1500)
    fast = bootstrap.replicates(values, (50, 90, 99), bootstrap.rng_for("test"))
    assert fast is not None
    slow = _brute(values, (50, 90, 99))
    for f, s in zip(fast, slow, strict=True):
        assert f.std() == pytest.approx(s.std(), rel=0.12)
        low, high = bootstrap.interval(f)
        slow_low, slow_high = bootstrap.interval(s)
        width = slow_high - slow_low
        assert abs(low - slow_low) < 0.2 * width and abs(high - slow_high) < 0.2 * width


def test_itl_is_resampled_by_request() -> None:
    """Gaps of one request move together: the clustered replicates have the spread of resampling
    whole requests, several times that of resampling gaps one by one."""
    rng = np.random.default_rng(2)
    means = rng.lognormal(2.0, 0.5, 400)
    gaps = np.concatenate([rng.normal(m, 0.5, 40) for m in means])
    owners = np.repeat(np.arange(400), 40)
    clustered = bootstrap.clustered_replicates(
        gaps, owners, 400, (50, 90), bootstrap.rng_for("itl")
    )
    assert clustered is not None
    picks = rng.integers(0, 400, size=(1500, 400))
    whole = np.percentile(gaps.reshape(400, 40)[picks].reshape(1500, -1), (50, 90), axis=1)
    one_by_one = bootstrap.replicates(gaps, (50, 90), bootstrap.rng_for("flat"))
    assert one_by_one is not None
    for c, w, o in zip(clustered, whole, one_by_one, strict=True):
        assert c.std() == pytest.approx(w.std(), rel=0.15)
        assert c.std() > 3 * o.std()


def test_a_subset_of_requests_is_scaled_to_the_whole_run() -> None:
    """m of n requests resampled: the spread shrinks by √(m / n), as n requests would give."""
    rng = np.random.default_rng(4)
    gaps = rng.lognormal(2.0, 0.5, 20_000)
    owners = np.arange(20_000)
    whole = bootstrap.clustered_replicates(gaps, owners, 20_000, (50,), bootstrap.rng_for("w"))
    part = bootstrap.clustered_replicates(
        gaps[:2000], owners[:2000], 20_000, (50,), bootstrap.rng_for("p")
    )
    assert whole is not None and part is not None
    assert part.std() == pytest.approx(whole.std(), rel=0.25)


def test_noise_needs_values() -> None:
    assert bootstrap.replicates(np.array([1.0]), (50,), bootstrap.rng_for("x")) is None
    assert bootstrap.within_noise(None, np.zeros(3)) is None
    same = bootstrap.replicates(np.full(50, 5.0), (50, 99), bootstrap.rng_for("y"))
    assert same is not None and np.all(same == 5.0)
