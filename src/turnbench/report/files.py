"""The files a run's report is made of: summary.json and report.html, rebuilt from events.db.

Why apart from `run.py`: `turnbench report RUN_DIR` rebuilds them from the file alone, with
no engine, target or config; a run calls the same function when it ends.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from turnbench.errors import InputError
from turnbench.metrics.model import Summary, to_json


def default_console() -> Console:
    """The terminal's console; 120 columns when the output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def write_report(run_dir: Path, console: Console | None = None, *, html: bool = True) -> Summary:
    """(Re)build summary.json and report.html from events.db; print the console report,
    then the report's path as the last line.

    `html=False` (a capacity probe, a sweep point) skips report.html, the one costly part
    (1.5-2 s, most of it importing Bokeh and building its models): the folder keeps events.db
    and summary.json, and `turnbench report` draws it later; the last line then names
    summary.json."""
    db = run_dir / "events.db"
    if not db.exists():
        raise InputError("no events.db in this folder", file=str(run_dir))
    # numpy, bokeh: imported when a report is written, not before a run starts
    from turnbench.metrics.series import series
    from turnbench.metrics.summary import summarize
    from turnbench.report.console import print_report
    from turnbench.report.html import render as render_html
    from turnbench.report.lanes import lane_rows
    from turnbench.report.load_series import load_series

    console = console or default_console()
    summary = summarize(db)
    (run_dir / "summary.json").write_bytes(to_json(summary))
    report = run_dir / ("report.html" if html else "summary.json")
    if html:
        page = render_html(summary, series(db), load_series(db), lane_rows(db), run_dir)
        report.write_text(page, encoding="utf-8")
    print_report(summary, console)
    if html:
        console.print(f"report.html: {report.stat().st_size / 1e6:.2f} MB", highlight=False)
    # the last line of every run and report: where to look (a path, never wrapped)
    console.print(f"report: {report}", soft_wrap=True, highlight=False)
    return summary
