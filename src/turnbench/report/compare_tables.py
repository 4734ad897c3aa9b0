"""The comparison as tables of text, drawn by the console and the HTML page alike.

Why one place (as `tables.py` for one run): the console and the page must never disagree
about a number or a mark.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from turnbench.report.compare import Comparison, Difference, Figure, Section
from turnbench.report.console import to_rich
from turnbench.report.tables import TextTable, fmt

NOISE_MARK = "≈"
LEGEND = (
    f"{NOISE_MARK}: within run-to-run noise (the 95 % bootstrap interval of the difference "
    "contains 0); differences without a mark on a latency are outside it. Throughput, "
    "errors, goodput and cache figures have no noise estimate. Differences are against run A."
)


def difference(d: Difference) -> str:
    """`+12.3 (+4.5 %)`, with the noise mark when the difference is within noise."""
    if d.delta is None:
        return "-"
    rel = f" ({d.relative * 100:+,.1f} %)" if d.relative is not None else ""
    mark = f" {NOISE_MARK}" if d.within_noise else ""
    delta = f"{d.delta:+,}" if isinstance(d.delta, int) else f"{d.delta:+,.1f}"
    return f"{delta}{rel}{mark}"


def _header(c: Comparison) -> list[str]:
    out = ["figure", c.runs[0].letter]
    for run in c.runs[1:]:
        out += [run.letter, f"{run.letter} − {c.runs[0].letter}"]
    return out


def _row(f: Figure) -> list[str]:
    out = [f.label, fmt(f.values[0])]
    for value, d in zip(f.values[1:], f.differences, strict=True):
        out += [fmt(value), difference(d)]
    return out


def section_table(c: Comparison, s: Section) -> TextTable:
    """One section: a row per figure, a value column per run and a difference column per run
    after the baseline."""
    return TextTable(s.title, _header(c), [_row(f) for f in s.figures])


def runs_table(c: Comparison) -> TextTable:
    """Which run is which letter, and what each ran."""
    rows = []
    for run in c.runs:
        cfg = run.summary.config
        req = run.summary.requests
        rows.append(
            [
                run.letter,
                run.path.name,
                str((cfg.get("workload") or {}).get("type", "-")),
                str((cfg.get("load") or {}).get("mode", "-")),
                f"{req.ok} / {req.failed} / {req.cancelled}",
                fmt(req.window_s, 2),
            ]
        )
    header = ["run", "folder", "workload", "load mode", "ok / failed / cancelled", "window s"]
    return TextTable("Runs (A is the baseline)", header, rows)


def config_table(c: Comparison) -> TextTable:
    """The config keys whose values differ between the runs."""
    header = ["config key", *(r.letter for r in c.runs)]
    rows = [[key, *values] for key, values in c.config_diff]
    return TextTable("Config differences", header, rows)


def all_tables(c: Comparison) -> list[TextTable]:
    """Every table of the comparison, in order; sections without figures left out."""
    tables = [runs_table(c)]
    tables += [section_table(c, s) for s in c.sections if s.figures]
    if c.config_diff:
        tables.append(config_table(c))
    return tables


def print_comparison(c: Comparison, console: Console) -> None:
    """The tables, the legend of the noise mark, the notes and what differs in the configs."""
    for table in all_tables(c):
        drawn = to_rich(table)
        for column in drawn.columns:
            column.overflow = "fold"  # a URL or a path in full, over two lines if need be
        console.print(drawn)
    console.print(escape(LEGEND), soft_wrap=True, highlight=False)
    if not c.config_diff:
        console.print("configs: the same in every run", highlight=False)
    for note in c.notes:
        console.print(f"[yellow]note: {escape(note)}[/]", soft_wrap=True, highlight=False)
