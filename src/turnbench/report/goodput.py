"""The SLO and goodput tables of the report (console and report.html alike), from the
summary's `slo` block; none for a run without SLOs.

Why two tables: whether each percentile objective held is one row per objective, while the
goodput figures compare tiers side by side, one column per tier.
"""

from __future__ import annotations

from collections.abc import Callable

from turnbench.metrics.model import Summary
from turnbench.metrics.slo_model import Share, Slo, TierResult
from turnbench.report.tables import TextTable, fmt

RESULTS = {True: "pass", False: "FAIL", None: "no data"}


def _pct(ratio: float | None) -> str:
    return fmt(ratio * 100 if ratio is not None else None)


def objectives_table(slo: Slo) -> TextTable:
    """Every objective of every tier: the run's percentile against its threshold."""
    rows = []
    for name, tier in slo.tiers.items():
        for o in tier.objectives:
            rows.append(
                [
                    name,
                    o.slo,
                    fmt(o.measured),
                    fmt(o.values),
                    _pct(o.met_ratio),
                    RESULTS[o.passed],
                ]
            )
        rows.append([name, "every objective", "", "", "", RESULTS[tier.passed]])
    header = ["tier", "objective", "measured", "values", "requests met %", "result"]
    return TextTable("SLOs (percentiles over successful requests)", header, rows)


def _good(share: Share) -> str:
    return f"{fmt(share.good)} / {fmt(share.total)} ({_pct(share.ratio)} %)"


def goodput_table(slo: Slo) -> TextTable:
    """Request, output-token and conversation goodput of each tier: good / judged (%) and
    good per second of the measured window."""
    tiers = slo.tiers.values()
    figures: list[tuple[str, Callable[[TierResult], str]]] = [
        ("requests good / judged", lambda t: _good(t.requests.all)),
        ("  first turns", lambda t: _good(t.requests.first)),
        ("  later turns", lambda t: _good(t.requests.later)),
        ("good requests/s", lambda t: fmt(t.requests.all.per_s, 2)),
        ("output tokens good %", lambda t: _pct(t.output_tokens.all.ratio)),
        ("good output tokens/s", lambda t: fmt(t.output_tokens.all.per_s, 1)),
        ("conversation limit s", lambda t: fmt(t.conversation_s, 1)),
        ("conversations good / judged", lambda t: _good(t.conversations)),
        ("good conversations/s", lambda t: fmt(t.conversations.per_s, 3)),
        ("conversations unfinished (not judged)", lambda t: fmt(t.conversations.unfinished)),
    ]
    rows = [[label, *(cell(t) for t in tiers)] for label, cell in figures]
    title = "Goodput (requests meeting every objective of the tier; failed ones never do)"
    return TextTable(title, ["what", *slo.tiers], rows)


def goodput_tables(summary: Summary) -> list[TextTable]:
    """The SLO and goodput tables; none when the run had no SLOs (`summary.slo` null)."""
    slo = summary.slo
    if slo is None:
        return []
    return [objectives_table(slo), goodput_table(slo)]
