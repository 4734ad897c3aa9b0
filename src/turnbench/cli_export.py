"""The `turnbench export` and `turnbench compare` commands: a run's table as a file, and runs
side by side (docs/export.md, docs/compare.md).

Why a module of its own: these two read finished runs only, and import numpy, pyarrow or bokeh
only when they run; `cli.py` imports this module when one of them is wanted.
"""

from __future__ import annotations

from pathlib import Path

import typer

from turnbench.cli import app
from turnbench.cli_format import Command, fail
from turnbench.errors import InputError

TABLE_NAMES = ("requests", "turns", "conversations", "server_metrics")
FORMAT_NAMES = ("csv", "json", "parquet")


@app.command("export", cls=Command)
def export_command(
    run_dir: Path = typer.Argument(..., help="A run folder holding events.db."),
    fmt: str = typer.Option(
        ..., "--format", metavar="FORMAT", help=f"{', '.join(FORMAT_NAMES)}.", show_default=False
    ),
    table: str = typer.Option(
        "requests", "--table", metavar="TABLE", help=f"{', '.join(TABLE_NAMES)}."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        metavar="FILE",
        help="File to write, or a folder to write <table>.<ext> into; unset: the run folder.",
    ),
) -> None:
    """Write one table of a run's events.db as CSV, JSON or Parquet."""
    from turnbench.report.export import export_table

    try:
        path, rows = export_table(run_dir, table, fmt, out)
    except InputError as e:
        raise fail(str(e)) from None
    typer.echo(f"{rows:,} rows of {table} ({fmt})")
    typer.echo(f"export: {path}")  # the last line: where the file is


@app.command("compare", cls=Command)
def compare_command(
    runs: list[Path] = typer.Argument(
        ..., help="Two run folders or more; the first is the baseline.", show_default=False
    ),
    html: Path | None = typer.Option(
        None,
        "--html",
        metavar="FILE",
        help="Also write the comparison as a self-contained HTML page with plots.",
    ),
) -> None:
    """Compare runs side by side, against the first, marking differences within noise."""
    # numpy, bokeh: imported when a comparison is made, not for --help
    from turnbench.metrics.series import series
    from turnbench.report.compare import compare
    from turnbench.report.compare_html import render
    from turnbench.report.compare_tables import print_comparison
    from turnbench.report.files import default_console

    if html is not None and not html.parent.is_dir():
        raise fail(f"{html.parent}: the folder to write into does not exist")
    try:
        comparison = compare(runs)
    except InputError as e:
        raise fail(str(e)) from None
    console = default_console()
    print_comparison(comparison, console)
    if html is not None:
        page = render(comparison, [series(r.path / "events.db") for r in comparison.runs])
        try:
            html.write_text(page, encoding="utf-8")
        except OSError as e:
            raise fail(f"{html}: cannot write: {e.strerror or e}") from None
        console.print(f"compare: {html}", soft_wrap=True, highlight=False)
