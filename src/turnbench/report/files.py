"""The files a run's report is made of: summary.json and report.html, rebuilt from events.db.

Why apart from `run.py`: `turnbench report RUN_DIR` rebuilds them from the file alone, with
no engine, target or config; a run calls the same function when it ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from turnbench.errors import InputError


def default_console() -> Console:
    """The terminal's console; 120 columns when the output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def write_report(run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """(Re)build summary.json and report.html from events.db; print the console report,
    then the report's path as the last line."""
    db = run_dir / "events.db"
    if not db.exists():
        raise InputError("no events.db in this folder", file=str(run_dir))
    # numpy, matplotlib: imported when a report is written, not before a run starts
    from turnbench.metrics.series import series
    from turnbench.metrics.summary import summarize
    from turnbench.report.console import print_report
    from turnbench.report.html import render as render_html

    console = console or default_console()
    summary = summarize(db)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    report = run_dir / "report.html"
    report.write_text(render_html(summary, series(db)), encoding="utf-8")
    print_report(summary, console)
    # the last line of every run and report: where to look (a path, never wrapped)
    console.print(f"report: {report}", soft_wrap=True, highlight=False)
    return summary
