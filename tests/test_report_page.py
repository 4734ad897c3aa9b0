"""report.html's Bokeh document: every figure passes Bokeh's own checks, which a report skips
to save their cost; a malformed figure fails them; and the page's script is what
`bokeh.embed.components` writes for the same figures (`figures.page` writes it without
Bokeh's extra walks over the document, so a Bokeh upgrade that changes it must show here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from bokeh.embed import components
from bokeh.models import ColumnDataSource

from cli_options import turnbench
from conftest import SimProcess
from runs import run_bench
from turnbench.metrics.series import series
from turnbench.metrics.summary import summarize
from turnbench.report.figures import new_figure, page, time_range
from turnbench.report.html import render
from turnbench.report.lanes import lane_rows
from turnbench.report.load_series import load_series


def _render_checked(run_dir: Path) -> str:
    db = run_dir / "events.db"
    return render(summarize(db), series(db), load_series(db), lane_rows(db), run_dir, validate=True)


def _panels(html: str) -> set[str]:
    return set(re.findall(r"<div class='panel' id='panel-(\w+)'>", html))


def test_a_staged_run_with_failures_passes_bokehs_checks(tmp_path: Path) -> None:
    """Stages, retried failures, think time and the server's metrics: the most panels a plain
    run draws, each checked (a ValueError names any problem)."""
    result = run_bench(
        tmp_path,
        {
            "seed": 5,
            "target": {"sim_args": ["--fault", "http500=0.3", "--decode-ms-base", "2"]},
            "workload": {
                "type": "synthetic",
                "conversations": 6,
                "turns": 3,
                "input_tokens": 30,
                "output_tokens": 8,
                "system_prompt_tokens": 32,
            },
            "session": {
                "think_time": 0.2,
                "on_failure": "retry",
                "retry": {"backoff_s": 0.05, "jitter": 0},
            },
            "stages": [
                {"name": "low", "mode": "users", "users": 2, "duration_s": 1.5},
                {"name": "high", "mode": "users", "users": 3, "duration_s": 1.5},
            ],
        },
    )
    panels = _panels(_render_checked(result.path))
    assert {"stages", "curve_ttft", "errors", "lanes", "server_queue", "cache_turn"} <= panels


def test_an_agent_run_passes_bokehs_checks(tmp_path: Path, fast_sim: SimProcess) -> None:
    """Sub-agents: the agent panels and the nested lanes, each checked."""
    proc = turnbench(
        "run", "--agent", "1:1", "--sessions", "3", "--target", fast_sim.url, "--out", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (run_dir,) = (tmp_path / "out").iterdir()
    panels = _panels(_render_checked(run_dir))
    assert {"agent_split", "agent_ttft_depth", "lanes"} <= panels


def test_a_malformed_figure_fails_the_check() -> None:
    """A series drawn on a y range the figure does not have: Bokeh's check finds it."""
    p = new_figure("bad", "x", "y")
    p.line([0, 1], [1, 2], y_range_name="no such range")
    with pytest.raises(ValueError, match="BAD_EXTRA_RANGE_NAME"):
        page({"bad": p}, validate=True)


def _two_figures() -> dict[str, Any]:
    """Two small figures on one shared x range, as the time plots are."""
    x = time_range()
    figs = {}
    for name in ("a", "b"):
        p = new_figure(f"plot {name}", "t", "v", x_range=x)
        src = ColumnDataSource({"t": [0.0, 1.0, 2.0], "v": [1.0, 3.0, 2.0]})
        p.line("t", "v", source=src, legend_label=f"series {name}")
        p.scatter("t", "v", source=src, size=4)
        figs[name] = p
    return figs


def _normal(script: str, divs: dict[str, str]) -> tuple[Any, str, dict[str, str]]:
    """The document with ids and the two unseen glyphs left out, and the rest of the script
    and the divs with their random ids replaced."""
    docs = json.loads(re.search(r"const docs_json = '(.*?)';\n", script, re.S).group(1))
    (doc,) = docs.values()

    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            dropped = ("id", "nonselection_glyph", "muted_glyph")
            return {k: strip(v) for k, v in o.items() if k not in dropped}
        return [strip(v) for v in o] if isinstance(o, list) else o

    def ids(text: str) -> str:
        text = re.sub(r"const docs_json = '.*?';\n", "", text, flags=re.S)
        text = re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "UUID", text)
        return re.sub(r'"p\d+"', '"ID"', text)

    return strip(doc), ids(script), {k: ids(v) for k, v in divs.items()}


def test_the_page_script_is_what_bokeh_writes_for_the_same_figures() -> None:
    ours = _normal(*page(_two_figures()))
    script, divs = components(_two_figures())
    assert ours == _normal(script, divs)
