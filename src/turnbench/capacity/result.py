"""The search's answer as a sentence, and search.json, the record of every probe.

Why a sentence: the question is "how many users does it hold?", and the answer must read as
one: "holds 24 users (bracket 24–25) at p90 TTFT 480 ms; 1,850 output tok/s", with the
probes that bracket it, the spread of their repeats and any warm cache said in plain words
beside it. The cases that cannot bracket (the smallest load fails, the largest holds) are
answers too, not errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from turnbench.capacity.criteria import Check, Criteria
from turnbench.capacity.probe import ProbeResult, load_words
from turnbench.capacity.search import Conclusion, Over, Space

SEARCH_JSON = "search.json"
VERSION = 1


def number(value: float | None) -> str:
    """A measured value for a sentence: 480, 22.4, 0.5, 1,850."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _with_unit(value: float | None, unit: str) -> str:
    return f"{number(value)} %" if unit == "%" else f"{number(value)} {unit}"


def failing(check: Check) -> str:
    """A failed check in words: `p90 TTFT 900 ms > 500 ms`."""
    if check.measured is None:
        return f"{check.name} not measured (nothing succeeded)"
    sign = ">" if check.bound == "max" else "<"
    return (
        f"{check.name} {_with_unit(check.measured, check.unit)} {sign} "
        f"{_with_unit(check.threshold, check.unit)}"
    )


@dataclass(frozen=True)
class Answer:
    """Where the search ended, in words (`sentence`, printed last) and as figures."""

    kind: str
    holds: float | None
    fails: float | None
    sentence: str
    details: list[str]
    quoted: dict[str, Any] | None
    """The check the sentence quotes at `holds`: its name, unit, and worst/min/max value."""
    output_tokens_per_s: float | None


def _at(probes: Sequence[ProbeResult], load: float | None) -> list[ProbeResult]:
    return [p for p in probes if p.counts and p.spec.load == load]


def _quoted(at_lo: list[ProbeResult]) -> dict[str, Any] | None:
    """The check closest to its threshold at the answer's load, over its repeats."""
    checks = [c for p in at_lo for c in p.checks if c.measured is not None]
    if not checks:
        return None
    worst = max(checks, key=lambda c: c.strain)
    values = [c.measured for c in checks if c.name == worst.name and c.measured is not None]
    return {
        "check": worst.name,
        "unit": worst.unit,
        "worst": worst.measured,
        "min": min(values),
        "max": max(values),
        "probes": len(values),
    }


def _at_phrase(quoted: dict[str, Any] | None, tokens: float | None) -> str:
    if quoted is None:
        return ""
    spread = ""
    if quoted["probes"] > 1:
        spread = (
            f" ({number(quoted['min'])}–{number(quoted['max'])} over {quoted['probes']} probes)"
        )
    value = _with_unit(quoted["worst"], quoted["unit"])
    out = f" at {quoted['check']} {value}{spread}"
    return out + (f"; {number(tokens)} output tok/s" if tokens is not None else "")


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _fail_detail(over: Over, at_hi: list[ProbeResult]) -> str | None:
    failed = [p for p in at_hi if not p.passed]
    if not failed:
        return None
    why = "; ".join(failing(c) for c in failed[0].checks if not c.passed)
    tally = f"{len(failed)} of {len(at_hi)} probes failed"
    return f"{load_words(over, failed[0].spec.load)}: {why} ({tally})"


def _notes(probes: Sequence[ProbeResult], min_sessions: int) -> list[str]:
    warm = [p.spec.name for p in probes if p.warm]
    short = [
        p.spec.name for p in probes if p.counts and p.finished < min_sessions and not p.interrupted
    ]
    out = []
    if short:
        out.append(
            f"{', '.join(short)} finished fewer than --min-sessions {min_sessions} "
            "conversations even when run longer: their verdicts rest on few conversations"
        )
    if warm:
        out.append(
            f"the server's prefix cache was warm at the start of {', '.join(warm)}: prefixes "
            "left by an earlier run or probe flattered them (cache.salt keeps probes apart)"
        )
    return out


def _sentence(over: Over, end: Conclusion, space: Space, at: str, at_hi: list[ProbeResult]) -> str:
    lo, hi = end.holds, end.fails
    if end.kind == "fails_at_start":
        failed = next((p for p in at_hi if not p.passed), None)
        why = "; ".join(failing(c) for c in failed.checks if not c.passed) if failed else ""
        return f"fails already at {load_words(over, hi or space.start)}: {why}"
    assert lo is not None
    if end.kind == "holds_at_max":
        return f"holds at least {load_words(over, lo)} (the --max){at}"
    if end.kind == "not_bracketed":
        return (
            f"holds at least {load_words(over, lo)} (no load failed within --max-probes "
            f"{space.max_probes}){at}"
        )
    limit = ""
    if not end.narrowed:
        limit = f", not narrowed further: --max-probes {space.max_probes} reached"
    elif not end.repeated:
        limit = f"; not repeated: --max-probes {space.max_probes} reached"
    return f"holds {load_words(over, lo)} (bracket {lo:g}–{hi:g}{limit}){at}"


def answer(
    space: Space,
    end: Conclusion | None,
    probes: Sequence[ProbeResult],
    min_sessions: int,
    stopped: str | None = None,
) -> Answer:
    """The answer from where the search ended; `end` None: Ctrl-C stopped it, or the error
    `stopped` says (the target went away between probes)."""
    over = space.over
    if end is None:
        done = [p for p in probes if p.counts]
        held = [p.spec.load for p in done if p.passed]
        failed = [p.spec.load for p in done if not p.passed]
        so_far = []
        if held:
            so_far.append(f"{load_words(over, max(held))} held")
        if failed:
            so_far.append(f"{load_words(over, min(failed))} failed")
        tail = f": so far {', '.join(so_far)}" if so_far else ": no probe finished"
        probes_said = f"{len(done)} probe" + ("" if len(done) == 1 else "s")
        kind, why = ("interrupted", "") if stopped is None else ("stopped", f" ({stopped})")
        sentence = f"{kind} after {probes_said}{why}{tail}"
        return Answer(kind, None, None, sentence, _notes(probes, min_sessions), None, None)
    at_lo, at_hi = _at(probes, end.holds), _at(probes, end.fails)
    quoted = _quoted(at_lo)
    tokens = _mean([p.figures["output_tokens_per_s"] for p in at_lo])
    warm_ends = [p.spec.name for p in (*at_lo, *at_hi) if p.warm]
    at = _at_phrase(quoted, tokens)
    sentence = _sentence(over, end, space, at, at_hi)
    if warm_ends:
        sentence += f" (warm cache at the start of {', '.join(warm_ends)})"
    details = _notes(probes, min_sessions)
    if end.kind == "holds" and (fail := _fail_detail(over, at_hi)):
        details.insert(0, fail)
    return Answer(end.kind, end.holds, end.fails, sentence, details, quoted, tokens)


def search_record(
    *,
    name: str,
    target: str | None,
    space: Space,
    criteria: Criteria,
    plan: dict[str, Any],
    probes: Sequence[ProbeResult],
    result: Answer | None,
    search_dir: Path,
    elapsed_s: float,
) -> dict[str, Any]:
    """search.json's content: the search's settings, every probe, and the answer."""
    return {
        "version": VERSION,
        "name": name,
        "target": target,
        "over": space.over,
        "space": asdict(space),
        "plan": plan,
        "criteria": {**asdict(criteria), "description": criteria.describe()},
        "probes": [p.to_json(search_dir) for p in probes],
        "answer": asdict(result) if result is not None else None,
        "elapsed_s": elapsed_s,
    }


def write_record(search_dir: Path, record: dict[str, Any]) -> Path:
    """Write search.json whole or not at all (a Ctrl-C mid-write leaves the last one)."""
    path = search_dir / SEARCH_JSON
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(record, indent=2, default=str))
    os.replace(partial, path)
    return path
