"""The top of report.html: the answer before the evidence.

Why first: a reader opens the report to learn whether the numbers can be trusted (did the
client or a cap hold the load back?), whether the SLOs held, what the capacity search found
when the run is one of its probes, and whether anything failed; the tables and plots below
are how they check it. Every text that came from a server or a config is escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from turnbench.metrics.model import Summary
from turnbench.report.tables import fmt

_BAD, _GOOD, _WARN = "bad", "good", "warn"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _card(title: str, big: str, small: str, tone: str) -> str:
    return (
        f"<div class='card {tone}'><div class='card-title'>{_esc(title)}</div>"
        f"<div class='card-big'>{_esc(big)}</div><div class='card-small'>{_esc(small)}</div></div>"
    )


def _verdict(summary: Summary) -> str:
    v = summary.verdict
    lag = f"schedule lag p99 {fmt(v.schedule_lag_p99_ms)} ms, gate wait p99 "
    lag += f"{fmt(v.gate_wait_p99_ms)} ms (threshold {fmt(v.threshold_ms)} ms)"
    if v.client_bound:
        return _card(
            "verdict", "client-bound", "trust latencies from the intended send; " + lag, _BAD
        )
    if v.capacity_bound:
        return _card("verdict", "capacity-bound", "a cap held requests back; " + lag, _WARN)
    return _card("verdict", "load sent as scheduled", lag, _GOOD)


def _requests(summary: Summary) -> str:
    req = summary.requests
    thr = req.throughput
    small = (
        f"{fmt(thr.requests_per_s, 2)} req/s, {fmt(thr.output_tokens_per_s, 1)} output "
        f"tok/s; TTFT p50 {fmt(req.ttft_ms.p50)} ms, p90 {fmt(req.ttft_ms.p90)} ms; "
        f"E2E p50 {fmt(req.e2e_ms.p50)} ms"
    )
    return _card("requests ok", f"{req.ok:,}", small, _GOOD if req.ok else _BAD)


def _errors(summary: Summary) -> str:
    req = summary.requests
    bad = req.failed + req.cancelled
    kinds = ", ".join(f"{k or 'unknown'} {n:,}" for k, n in summary.errors.items())
    down = summary.downtime_s or 0
    small = kinds or "none"
    if down:
        small += f"; target unreachable {down:.1f} s"
    tone = _GOOD if not req.failed and not down else _BAD
    return _card(
        "failed / cancelled",
        f"{req.failed:,} / {req.cancelled:,}",
        small if bad or down else "no attempt failed",
        tone,
    )


def _slo(summary: Summary) -> list[str]:
    slo = summary.slo
    if slo is None:
        return [_card("SLO", "none set", "add slo: to the config for goodput", "")]
    out = []
    for name, tier in slo.tiers.items():
        share = tier.requests.all
        ratio = share.ratio
        passed = tier.passed
        big = {True: "pass", False: "FAIL", None: "no data"}[passed]
        small = (
            f"goodput {fmt(ratio * 100 if ratio is not None else None)} % of requests "
            f"({fmt(share.per_s, 2)} good/s)"
        )
        out.append(_card(f"SLO {name}", big, small, {True: _GOOD, False: _BAD, None: ""}[passed]))
    return out


def capacity_answer(run_dir: Path | None) -> dict[str, Any] | None:
    """The capacity search this run is a probe of (search.json in the folder above), if any."""
    if run_dir is None or not (run_dir.parent / "search.json").is_file():
        return None
    try:
        record = json.loads((run_dir.parent / "search.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _capacity(run_dir: Path | None) -> list[str]:
    record = capacity_answer(run_dir)
    if record is None:
        return []
    answer = record.get("answer") or {}
    sentence = answer.get("sentence") or "no answer yet (the search was still running)"
    return [_card("capacity search", str(record.get("name", "")), sentence, "wide")]


def answer_html(summary: Summary, run_dir: Path | None) -> str:
    """The answer cards: verdict, requests, failures, each SLO tier, the capacity answer."""
    cards = [_verdict(summary), _requests(summary), _errors(summary), *_slo(summary)]
    cards += _capacity(run_dir)
    notes = "".join(f"<div class='warn'>{_esc(n)}</div>" for n in summary.verdict.notes)
    return f"<div class='cards'>{''.join(cards)}</div>{notes}"
