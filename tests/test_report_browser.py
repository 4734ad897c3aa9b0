"""report.html and compare.html in a real browser: Debian's chromium, driven by Playwright.

Why a browser: the report is a page of JavaScript plots; only a browser shows that it draws
every panel, logs no error, fetches nothing (every non-file request is aborted and recorded)
and answers a hover with a value. Never a downloaded browser: `/usr/bin/chromium` or nothing
(`make test` installs it); in CI (`CI` set) a missing one fails instead of skipping.
Screenshots go to `$TURNBENCH_ARTIFACTS` (else the test's tmp folder), their paths printed.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_options import turnbench
from conftest import SimProcess
from runs import RunResult, run_bench

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = "<script>window.__pwned=1</script>"
MARKUP = "<img src=x onerror=window.__pwned=2>"
REPORT_PANELS = {
    "stages",
    "curve_ttft",
    "curve_tpot",
    "throughput",
    "concurrency",
    "lag",
    "errors",
    "ttft_time",
    "server_queue",
    "server_cache",
    "cache_time",
    "lanes",
    "per_turn",
    "ttft_context",
    "cache_turn",
    "cdf_ttft",
    "cdf_e2e",
}
COMPARE_PANELS = {"per_turn", "cdf_ttft", "cdf_e2e", "throughput"}
SWEEP_PANELS = {"curve_ttft", "curve_tpot", "frontier", "conversations"}
CAPACITY_PANELS = {"tokens", "check0"}


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: `make test` installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A short run of two stages against the simulator with failures, retries, think time
    and a hostile model name: every panel has something to draw."""
    tmp = tmp_path_factory.mktemp("browser-run")
    return run_bench(
        tmp,
        {
            "name": "browser",
            "seed": 3,
            "target": {
                "sim_args": ["--model", HOSTILE, "--fault", "http500=0.15", "--decode-ms-base", "3"]
            },
            "workload": {
                "type": "synthetic",
                "conversations": 8,
                "turns": 4,
                "input_tokens": 40,
                "output_tokens": 12,
                "system_prompt_tokens": 64,
            },
            "session": {
                "think_time": 0.5,
                "on_failure": "retry",
                "retry": {"backoff_s": 0.05, "jitter": 0},
            },
            "stages": [
                {"name": "low", "mode": "users", "users": 2, "duration_s": 2.5},
                {"name": "high", "mode": "users", "users": 4, "duration_s": 2.5},
            ],
        },
    )


def launch() -> Iterator[Any]:
    """Debian's chromium through Playwright, or a skip (a failure in CI) when either is
    missing; a fixture yields from it once its runs are done."""
    if not CHROMIUM.exists():
        _missing(f"no {CHROMIUM}: `apt-get install -y chromium`")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("no playwright: pip install -e '.[dev]'")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def browser(run: RunResult) -> Iterator[Any]:
    """Chromium, started after the run: Playwright's sync API keeps an event loop running in
    this thread, where a run's own `asyncio.run` could not start."""
    yield from launch()


def _artifact(tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("TURNBENCH_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def _open(browser: Any, page_path: Path) -> tuple[Any, list[str], list[str]]:
    """The page opened from its file with every non-file request aborted; returns the page,
    the URLs it tried to fetch and its errors (console errors and uncaught exceptions)."""
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    fetched: list[str] = []
    errors: list[str] = []

    def block(route: Any) -> None:
        url = route.request.url
        if url.startswith("file://"):
            route.continue_()
        else:
            fetched.append(url)
            route.abort()

    page.route("**/*", block)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_path.as_uri())
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
    page.wait_for_timeout(500)  # the document's first render
    return page, fetched, errors


def _drawn(page: Any, panel: str) -> bool:
    """Whether the panel's canvas holds pixels of more than one colour (a plot, not blank)."""
    return bool(
        page.locator(f"#panel-{panel} canvas").evaluate_all(
            """canvases => canvases.some(c => {
                if (!c.width || !c.height) return false;
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                for (let i = 4; i < d.length; i += 4 * 97)
                    if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2]) return true;
                return false;
            })"""
        )
    )


def _hover_value(page: Any, panel: str) -> str:
    """Move the mouse across the panel's plot until Bokeh's tooltip shows; its text."""
    canvas = page.locator(f"#panel-{panel} canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None, panel
    tooltips = page.locator(".bk-tooltip-content")  # Bokeh lays tooltips over the page
    for fy in (0.5, 0.3, 0.7, 0.15):
        for fx in (0.5, 0.35, 0.65, 0.2, 0.8):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy)
            page.wait_for_timeout(150)
            shown = [t for t in tooltips.all() if t.is_visible() and t.inner_text().strip()]
            if shown:
                return str(shown[0].inner_text())
    raise AssertionError(f"{panel}: no tooltip appeared")


def _check_page(browser: Any, path: Path, panels: set[str], shot: Path) -> Any:
    page, fetched, errors = _open(browser, path)
    shown = set(page.eval_on_selector_all(".panel", "els => els.map(e => e.id.slice(6))"))
    assert shown == panels
    blank = [p for p in sorted(panels) if not _drawn(page, p)]
    assert not blank, f"panels with nothing drawn: {blank}"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert fetched == [], fetched
    assert errors == [], errors
    return page


def test_report_draws_every_panel_offline_and_hovers(
    browser: Any, run: RunResult, tmp_path: Path
) -> None:
    attempts = run.attempts
    assert any(a["status"] == "error" for a in attempts)  # the lanes have failures to show
    assert any(a["attempt"] > 1 and a["status"] == "ok" for a in attempts)
    shot = _artifact(tmp_path, "report.png")
    stages = run.summary["stages"]  # conversations/h: drawn when both stages completed some
    drawn = all(s["conversations_per_h_per_user"] is not None for s in stages)
    panels = REPORT_PANELS | ({"conversations"} if drawn else set())
    page = _check_page(browser, run.path / "report.html", panels, shot)
    for panel in ("per_turn", "throughput", "concurrency"):
        assert re.search(r"\d", _hover_value(page, panel)), panel
    assert page.evaluate("() => window.__pwned") is None  # the model name did not run
    assert HOSTILE in page.locator("h1 + p").inner_text()  # it is shown as text
    page.context.close()


BAR_AT = """(kind) => {
    const fv = Bokeh.index.all_views().find(v => v.model.type === 'Figure'
        && String(v.model.title.text).startsWith('Conversation swim lanes'));
    const bars = fv.model.renderers.find(r => r.glyph && r.glyph.type === 'HBar'
        && r.data_source.data.kind && r.data_source.data.kind[0] === kind);
    const d = bars.data_source.data;
    const sx = fv.frame.x_scale.compute((d.sent[0] + d.last[0]) / 2);
    const sy = fv.frame.y_scale.compute(fv.frame.y_range.synthetic(d.session[0]));
    const box = fv.canvas_view.el.getBoundingClientRect();
    return {x: box.left + sx, y: box.top + sy, session: d.session[0], turn: d.turn[0]};
}"""
"""Where the lanes' first bar of a kind (ok, error, ...) is on the screen, from Bokeh's own
scales, and its attempt."""


def _hover_bar(page: Any, kind: str) -> tuple[dict[str, Any], str]:
    """The bar's attempt and the tooltip shown with the mouse on its middle."""
    page.locator("#panel-lanes").scroll_into_view_if_needed()
    bar = page.evaluate(BAR_AT, kind)
    page.mouse.move(bar["x"], bar["y"])
    page.wait_for_timeout(300)
    shown = [t.inner_text() for t in page.locator(".bk-tooltip-content").all() if t.is_visible()]
    assert shown, f"no tooltip on the {kind} bar"
    return bar, str(shown[0])


def test_lane_hover_gives_the_attempt(browser: Any, run: RunResult, tmp_path: Path) -> None:
    """Hovering the middle of a bar gives that attempt's session, turn and figures."""
    page, _fetched, _errors = _open(browser, run.path / "report.html")
    bar, tooltip = _hover_bar(page, "ok")
    assert f"{bar['session']}, turn {bar['turn']}, attempt" in tooltip, tooltip
    assert re.search(r"E2E:?\s*[\d.]+ ms", tooltip), tooltip
    page.context.close()


def test_a_failed_attempts_message_renders_as_text(
    browser: Any, run: RunResult, tmp_path: Path
) -> None:
    """A server's error message holding markup is shown in the tooltip as the text it is."""
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    conn = sqlite3.connect(copy / "events.db")
    with conn:
        conn.execute(
            "UPDATE requests SET error_message = ? WHERE status = 'error'",
            (MARKUP,),
        )
    conn.close()
    proc = turnbench("report", str(copy), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (copy / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in text
    page, fetched, errors = _open(browser, copy / "report.html")
    _bar, tooltip = _hover_bar(page, "error")
    assert MARKUP in tooltip  # shown as the text it is
    assert page.evaluate("() => window.__pwned") is None
    assert fetched == [] and errors == []
    page.context.close()


def test_compare_page_draws_every_panel_offline_and_hovers(
    browser: Any, run: RunResult, fast_sim: SimProcess, tmp_path: Path
) -> None:
    """Two different runs (another workload, load and server): compared on what they share,
    every panel drawn with both runs' series."""
    made = turnbench(
        "run", "--target", fast_sim.url, "--users", "3", "--turns", "3", "--duration", "2",
        "--out", "other", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (other,) = (tmp_path / "other").iterdir()
    out = tmp_path / "compare.html"
    proc = turnbench("compare", str(run.path), str(other), "--html", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Config differences" in proc.stdout
    shot = _artifact(tmp_path, "compare.png")
    page = _check_page(browser, out, COMPARE_PANELS, shot)
    for panel in ("per_turn", "cdf_ttft"):
        assert re.search(r"\d", _hover_value(page, panel)), panel
    page.context.close()


POINT_AT = """(title) => {
    const fv = Bokeh.index.all_views().find(v => v.model.type === 'Figure'
        && String(v.model.title.text).startsWith(title));
    const d = fv.model.renderers.find(r => r.glyph && r.glyph.type === 'Scatter').data_source.data;
    const box = fv.canvas_view.el.getBoundingClientRect();
    return {x: box.left + fv.frame.x_scale.compute(d.x[0]),
            y: box.top + fv.frame.y_scale.compute(d.y[0])};
}"""
"""Where a figure's first point is on the screen, from Bokeh's own scales."""


def _hover_first_point(page: Any, panel: str, title: str) -> list[str]:
    """Put the mouse on the first point of the panel's figure titled `title`; the tooltips
    then shown."""
    page.locator(f"#panel-{panel}").scroll_into_view_if_needed()
    dot = page.evaluate(POINT_AT, title)
    page.mouse.move(dot["x"], dot["y"])
    page.wait_for_timeout(300)
    return [t.inner_text() for t in page.locator(".bk-tooltip-content").all() if t.is_visible()]


def test_sweep_page_draws_every_panel_offline_and_hovers(
    browser: Any, fast_sim: SimProcess, tmp_path: Path
) -> None:
    """A series sweep's sweep.html: both curves with their SLO lines and the frontier."""
    (tmp_path / "s.yaml").write_text(
        "target: {metrics_interval_s: 0}\nsession: {ignore_eos: true}\n"
        "workload: {type: synthetic, turns: 2, input_tokens: 16, output_tokens: 4}\n"
        "slo: {tiers: {fast: {objectives: ['ttft p90 <= 2s', 'tpot p90 <= 1s']}}}\n"
    )
    proc = turnbench(
        "sweep", "s.yaml", "--target", fast_sim.url, "--users", "1,3", "--as", "runs",
        "--point-duration", "1", "--cooldown", "0", "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (folder,) = (tmp_path / "out").iterdir()
    shot = _artifact(tmp_path, "sweep.png")
    page = _check_page(browser, folder / "sweep.html", SWEEP_PANELS, shot)
    shown = _hover_first_point(page, "curve_ttft", "Throughput-latency: p90 TTFT")
    assert shown and "point-01-users-1" in shown[0] and re.search(r"[\d.]+ ms", shown[0]), shown
    page.context.close()


def test_capacity_report_draws_its_plots_offline_and_hovers(
    browser: Any, fast_sim: SimProcess, tmp_path: Path
) -> None:
    """A capacity search's report.html: output tokens/s and the TTFT check against load,
    each probe coloured by its verdict, hover naming the probe."""
    (tmp_path / "c.yaml").write_text(
        "target: {metrics_interval_s: 0}\nsession: {ignore_eos: true}\n"
        "workload: {type: synthetic, turns: 2, input_tokens: 16, output_tokens: 4}\n"
    )
    proc = turnbench(
        "capacity", "c.yaml", "--target", fast_sim.url, "--slo", "ttft.p90=10s", "--max", "2",
        "--probe-duration", "1", "--cooldown", "0", "--min-sessions", "1", "--out", "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (folder,) = (tmp_path / "out").iterdir()
    shot = _artifact(tmp_path, "capacity.png")
    page = _check_page(browser, folder / "report.html", CAPACITY_PANELS, shot)
    shown = _hover_first_point(page, "tokens", "output tok/s against load")
    assert shown and "01 (start)" in shown[0] and "pass" in shown[0], shown
    page.context.close()
