"""The console report: the verdict, then the tables of `tables.py` drawn with rich."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from turnbench.metrics.model import Summary
from turnbench.report.tables import TextTable, all_tables, unreachable_problem


def to_rich(table: TextTable) -> Table:
    """A rich table; every cell escaped, since some came from the server (model name)."""
    out = Table(title=table.title, title_justify="left", show_header=table.header is not None)
    for i, col in enumerate(table.header or ["what", "value"]):
        out.add_column(escape(col), justify="left" if i == 0 else "right")
    for row in table.rows:
        out.add_row(*(escape(cell) for cell in row))
    return out


def print_report(summary: Summary, console: Console | None = None) -> None:
    """Print the whole console report: a red problem line first when the target stayed
    unreachable and ended the run (everything below is only what ran before), then verdict
    notes, then the tables, then the run's notices, one line each, last, where a user who
    skims past the tables still sees them. Nothing follows them: the caller's own last line
    (where the report is) comes next."""
    console = console or Console()
    problem = unreachable_problem(summary)
    if problem is not None:
        console.print(f"[bold red]problem: {escape(problem)}[/]", soft_wrap=True, highlight=False)
    for note in summary.verdict.notes:
        console.print(f"[bold yellow]warning:[/] {escape(note)}")
    for table in all_tables(summary):
        console.print(to_rich(table))
    for notice in summary.notices:
        console.print(
            f"[yellow]notice: {escape(notice['message'])}[/]", soft_wrap=True, highlight=False
        )
