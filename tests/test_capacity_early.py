"""The early stop of a capacity probe, on hand-built events.db files: it stops exactly when
the misses pass what any probe of up to twice the rate so far would allow, and a probe it
stops would have failed had it run to its end."""

from __future__ import annotations

from pathlib import Path

import pytest

from handmade import write_events_db
from turnbench.capacity.criteria import build, judge
from turnbench.capacity.early import probe_stop
from turnbench.client.attempt import Attempt
from turnbench.metrics.summary import summarize
from turnbench.slo import with_flags

MS = 1_000_000
SLO = with_flags(None, ["ttft.p90=100ms"])


def _attempt(i: int, ttft_ms: float, *, status: str = "ok", stage: str = "main") -> Attempt:
    sent = (1000 + i * 10) * MS
    return Attempt(
        stage=stage, worker=0, session_id=f"s{i}", conversation_id=f"s{i}", turn_index=1,
        attempt=1, t_intended_ns=sent, t_sent_ns=sent, t_first_token_ns=sent + int(ttft_ms * MS),
        t_end_ns=sent + int(ttft_ms * MS) + 50 * MS, completion_tokens=10, status=status,
        error_kind=None if status == "ok" else "http_500",
    )  # fmt: skip


def _db(tmp_path: Path, fast: int, slow: int, *, failed: int = 0, name: str = "e") -> Path:
    rows = [_attempt(i, 20) for i in range(fast)]
    rows += [_attempt(fast + i, 300) for i in range(slow)]
    rows += [_attempt(fast + slow + i, 20, status="error") for i in range(failed)]
    rows += [_attempt(10_000 + i, 900, stage="warmup") for i in range(50)]  # never judged
    return write_events_db(tmp_path / f"{name}.db", rows, config={"slo": SLO.model_dump()})


def _rule(max_failures: float = 1.0):  # type: ignore[no-untyped-def]
    rule = probe_stop(SLO, build(SLO, None, None, max_failures), warmup_s=0.0, duration_s=10.0)
    assert rule is not None
    return rule


def test_stops_once_the_misses_pass_what_twice_the_rate_allows(tmp_path: Path) -> None:
    """Half-way (5 of 10 s) with 20 judged requests the bound is 4 x 20 = 80 requests, which
    allow 0.1 x 79 + 1 = 8.9 misses: 8 go on, 9 stop."""
    assert _rule().verdict(_db(tmp_path, 12, 8, name="a"), 5.0) is None
    why = _rule().verdict(_db(tmp_path, 11, 9, name="b"), 5.0)
    assert why == (
        "ttft p90 <= 100 ms: 9 of 20 requests missed it, more than the percentile allows of "
        "even 80 requests"
    )


def test_never_before_a_fifth_of_the_measured_part(tmp_path: Path) -> None:
    """20 misses of a p99 at 1.9 s would stop it by the bound (211 requests allow 3.1), but
    not a fifth of the 10 s has run."""
    slo = with_flags(None, ["ttft.p99=100ms"])
    rule = probe_stop(slo, build(slo, None, None, 1.0), warmup_s=0.0, duration_s=10.0)
    assert rule is not None
    db = _db(tmp_path, 0, 20)
    assert rule.verdict(db, 1.9) is None and rule.verdict(db, 2.0) is not None


def test_a_stopped_probe_would_have_failed_at_its_end(tmp_path: Path) -> None:
    """The 9 misses of the stopped probe, followed by the most requests the bound allows,
    all fast: its p90 still fails, as the summary judges it."""
    db = _db(tmp_path, 71, 9)
    checks = judge(summarize(db), build(SLO, None, None, 100.0))
    assert [c.passed for c in checks] == [False, True], checks


def test_failed_requests_stop_it_too(tmp_path: Path) -> None:
    """20 ok and 2 failed half-way: at most 1 % of 88 requests may fail."""
    db = _db(tmp_path, 20, 0, failed=2)
    assert _rule().verdict(db, 5.0) == (
        "2 of 22 requests failed, more than 1 % of even 88 requests"
    )
    assert _rule(max_failures=5.0).verdict(db, 5.0) is None


@pytest.mark.parametrize("flags", [["itl.p90=50ms"], ["ttft.p90=100ms"]])
def test_what_does_not_stop_early(flags: list[str], tmp_path: Path) -> None:
    """An itl objective (a pool of chunk gaps) never stops a probe; goodput criteria give no
    rule at all."""
    slo = with_flags(None, flags)
    if flags[0].startswith("itl"):
        rule = probe_stop(slo, build(slo, None, None, 100.0), warmup_s=0.0, duration_s=10.0)
        assert rule is not None and rule.verdict(_db(tmp_path, 0, 20), 5.0) is None
    else:
        assert probe_stop(slo, build(slo, None, 90.0, 1.0), warmup_s=0, duration_s=10) is None
