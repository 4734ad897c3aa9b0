"""The capacity search's rule as pure functions: bracketing, bisection, repeats, the cases that
cannot bracket, the probe budget; the criteria and the answer's wording from made-up summaries.

Why made-up verdicts: a "server" whose capacity is a number (`holds(load) = load <= N`) walks
every branch of the rule in microseconds, and a noisy one (a repeat that flips) shows what
the rule does with noise, which a real server shows only by chance.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from handmade import write_events_db
from turnbench.capacity.criteria import Check, Criteria, build, judge
from turnbench.capacity.probe import ProbeResult, ProbeSpec, probe_config, result_of
from turnbench.capacity.result import answer
from turnbench.capacity.search import (
    Conclusion,
    Space,
    Step,
    Trial,
    bracket,
    grow,
    midpoint,
    next_step,
)
from turnbench.config import RunConfig
from turnbench.errors import InputError
from turnbench.metrics.cache_model import Cache, WarmStart
from turnbench.metrics.model import Dist, Summary, Throughput
from turnbench.metrics.slo_model import (
    ByTurns,
    ConversationShare,
    ObjectiveResult,
    Share,
    Slo,
    TierResult,
)
from turnbench.metrics.summary import summarize
from turnbench.slo import with_flags


def walk(
    space: Space, holds: Callable[[float, int], bool]
) -> tuple[Conclusion, list[tuple[float, str]]]:
    """Run the rule to its end; `holds(load, nth probe of that load)` is the server."""
    trials: list[Trial] = []
    steps: list[tuple[float, str]] = []
    while True:
        step = next_step(space, trials)
        if isinstance(step, Conclusion):
            return step, steps
        nth = sum(t.load == step.load for t in trials)
        trials.append(Trial(step.load, holds(step.load, nth)))
        steps.append((step.load, step.role))


def capacity(n: float) -> Callable[[float, int], bool]:
    return lambda load, _nth: load <= n


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 24, 63, 100, 1000])
def test_users_exactly_found(n: int) -> None:
    space = Space("users", start=1, stop=1024, precision=0.0001, repeats=1, max_probes=40)
    end, steps = walk(space, capacity(n))
    assert (end.kind, end.holds, end.fails) == ("holds", n, n + 1)
    assert end.narrowed and end.repeated
    loads = [load for load, _ in steps]
    assert loads.count(n) == 2 and loads.count(n + 1) == 2  # the boundary, repeated once each


def test_bracket_then_bisect_order() -> None:
    space = Space("users", start=1, stop=64, repeats=0)
    _end, steps = walk(space, capacity(5))
    assert steps == [
        (1, "start"),
        (2, "grow"),
        (4, "grow"),
        (8, "grow"),
        (6, "bisect"),
        (5, "bisect"),
    ]


def test_precision_stops_bisection_early_for_users() -> None:
    """100 against 104 users is 4 % apart: within --precision 0.05, no more probes."""
    space = Space("users", start=100, stop=1000, growth=1.04, precision=0.05, repeats=0)
    end, steps = walk(space, capacity(102))
    assert (end.holds, end.fails) == (100, 104)
    assert [load for load, _ in steps] == [100, 104]


def test_rates_bisect_geometrically_to_the_precision() -> None:
    space = Space("rate", start=0.5, stop=100, precision=0.1, repeats=0)
    end, steps = walk(space, capacity(3.3))
    assert end.kind == "holds" and end.holds is not None and end.fails is not None
    assert end.holds <= 3.3 < end.fails and end.fails / end.holds - 1 <= 0.1
    assert all(len(f"{load:g}".replace(".", "").lstrip("0")) <= 3 for load, _ in steps)


def test_growth_is_at_least_one_user_and_capped_at_max() -> None:
    space = Space("users", start=1, stop=10, growth=1.2)
    assert grow(space, 1) == 2 and grow(space, 5) == 6 and grow(space, 9) == 10
    assert grow(Space("users", start=1, stop=10), 8) == 10


def test_midpoint() -> None:
    users = Space("users", start=1, stop=64, precision=0.01)
    assert midpoint(users, 8, 16) == 12 and midpoint(users, 8, 9) is None
    rates = Space("rate", start=1, stop=64, precision=0.1)
    assert midpoint(rates, 2, 8) == 4 and midpoint(rates, 2, 2.1) is None


def test_fails_already_at_the_start() -> None:
    end, steps = walk(Space("users", start=1, stop=64), capacity(0))
    assert (end.kind, end.holds, end.fails) == ("fails_at_start", None, 1)
    assert steps == [(1, "start")]


def test_holds_at_the_max() -> None:
    end, steps = walk(Space("users", start=1, stop=64), capacity(1000))
    assert (end.kind, end.holds, end.fails) == ("holds_at_max", 64, None)
    assert [load for load, _ in steps] == [1, 2, 4, 8, 16, 32, 64]


def test_a_single_load_range() -> None:
    assert walk(Space("users", start=4, stop=4), capacity(9))[0].kind == "holds_at_max"
    assert walk(Space("users", start=4, stop=4), capacity(2))[0].kind == "fails_at_start"


def test_a_repeat_that_fails_moves_the_bracket_down() -> None:
    """8 passes once, then fails on its repeat: it did not hold, so the search bisects again
    between 4 (the largest that held below it) and 8, and 7 holds twice."""
    flaky = lambda load, nth: load <= 7 or (load == 8 and nth == 0)  # noqa: E731
    end, steps = walk(Space("users", start=1, stop=64, repeats=1), flaky)
    assert (end.kind, end.holds, end.fails) == ("holds", 7, 8)
    assert [load for load, _ in steps][-4:] == [8, 6, 7, 7]


def test_a_repeat_of_the_failing_end_that_passes_keeps_it_failed() -> None:
    """A load holds only when every probe of it passed: a lucky repeat changes nothing."""
    flaky = lambda load, nth: load <= 5 or (load == 6 and nth == 1)  # noqa: E731
    end, _ = walk(Space("users", start=1, stop=64, repeats=1), flaky)
    assert (end.holds, end.fails) == (5, 6)


def test_a_pass_above_a_failure_is_not_capacity() -> None:
    trials = [Trial(1, True), Trial(4, False), Trial(8, True)]
    assert bracket(trials) == (1, 4)


def test_the_probe_budget_bounds_every_phase() -> None:
    growing = walk(Space("users", start=1, stop=1024, max_probes=3), capacity(1000))[0]
    assert (growing.kind, growing.holds, growing.out_of_probes) == ("not_bracketed", 4, True)
    bisecting = walk(Space("users", start=1, stop=1024, max_probes=7), capacity(37))[0]
    assert bisecting.kind == "holds" and bisecting.out_of_probes and not bisecting.narrowed
    assert (bisecting.holds, bisecting.fails) == (32, 64)
    repeating = walk(Space("users", start=1, stop=8, max_probes=5, repeats=2), capacity(3))[0]
    assert repeating.narrowed and not repeating.repeated and repeating.out_of_probes
    spent = next_step(Space("users", 1, 64, max_probes=3), [Trial(1, True)], spent=3)
    assert isinstance(spent, Conclusion) and spent.kind == "not_bracketed"


def test_no_trial_probes_the_start() -> None:
    assert next_step(Space("rate", start=0.5, stop=8), []) == Step(0.5, "start")


@pytest.mark.parametrize(
    ("space", "words"),
    [
        (Space("users", start=0, stop=4), "--start must be above 0"),
        (Space("users", start=8, stop=4), "--start 8 is above --max 4: the range is empty"),
        (Space("users", start=1.5, stop=4), "a user count is a whole number"),
        (Space("rate", start=1, stop=4, growth=1), "--growth must be above 1"),
        (Space("rate", start=1, stop=4, precision=0), "--precision must be in (0, 1]"),
        (Space("rate", start=1, stop=4, repeats=-1), "--repeats must be 0 or more"),
        (Space("rate", start=1, stop=4, max_probes=0), "--max-probes must be at least 1"),
    ],
)
def test_bad_ranges_are_one_line(space: Space, words: str) -> None:
    with pytest.raises(InputError) as raised:
        space.check()
    assert words in str(raised.value) and "\n" not in str(raised.value)


# ---------------------------------------------------------------------------------------------
# criteria and the answer, from made-up summaries


@functools.cache
def _empty_summary() -> Summary:
    """The summary of a run with no rows: what `summary` fills in."""
    with tempfile.TemporaryDirectory() as tmp:
        return summarize(write_events_db(Path(tmp) / "events.db", []))


def summary(
    *,
    p95: float | None = 50.0,
    ok: int = 100,
    failed: int = 0,
    conversations: float | None = 1.0,
    sessions: int = 20,
    unfinished: int = 2,
    fully_ok: int = 18,
    tokens: float = 1850.0,
    warm: bool = False,
) -> Summary:
    """A summary with the figures the search reads."""
    objective = ObjectiveResult(
        slo="ttft p95 <= 100 ms",
        metric="ttft",
        percentile=95.0,
        threshold=100.0,
        turns="all",
        unit="ms",
        bound="max",
        measured=p95,
        values=ok,
        met_ratio=None,
        passed=None if p95 is None else p95 <= 100,
    )
    share = Share(total=ok, good=ok, ratio=1.0, per_s=None)
    good = ConversationShare(
        total=sessions, good=0, ratio=conversations, per_s=1.0, unfinished=unfinished
    )
    tier = TierResult(
        passed=objective.passed,
        objectives=[objective],
        conversation_s=None,
        requests=ByTurns(all=share, first=share, later=share),
        output_tokens=ByTurns(all=share, first=share, later=share),
        conversations=good,
    )
    stats = Dist(ok, None, 20.0, p95, None, p95, None, None)
    base = _empty_summary()
    warm_start = WarmStart(
        checked=True,
        first_token_s=None,
        requests=3,
        with_cached=3 if warm else 0,
        cached_tokens=300 if warm else 0,
        warm=warm,
    )
    return msgspec.structs.replace(
        base,
        run=msgspec.structs.replace(base.run, end_reason="duration"),
        requests=msgspec.structs.replace(
            base.requests,
            ok=ok,
            failed=failed,
            window_s=10.0,
            throughput=Throughput(
                requests_per_s=10.0, output_tokens_per_s=tokens, total_tokens_per_s=None
            ),
            ttft_ms=stats,
            tpot_ms=stats,
            e2e_ms=stats,
        ),
        per_conversation=msgspec.structs.replace(
            base.per_conversation,
            sessions=sessions,
            outcomes={"completed": sessions - unfinished, "unfinished": unfinished},
            sessions_fully_ok=fully_ok,
        ),
        slo=Slo(window_s=10.0, tiers={"default": tier}),
        cache=Cache(block_size=16, warm_start=warm_start),
    )


SLO = with_flags(None, ["ttft.p95=100ms"])
PERCENTILES = build(SLO, None, None, 1.0)


def probe(load: float, index: int, **figures: Any) -> ProbeResult:
    spec = ProbeSpec(index, "users", load, "bisect", 10.0, 2.0)
    return result_of(spec, Path(spec.name), summary(**figures), PERCENTILES)


def test_criteria_checks() -> None:
    assert [c.passed for c in judge(summary(), PERCENTILES)] == [True, True]
    assert [c.passed for c in judge(summary(p95=150), PERCENTILES)] == [False, True]
    assert [c.passed for c in judge(summary(ok=98, failed=2), PERCENTILES)] == [True, False]
    nothing = judge(summary(p95=None, ok=0, failed=0), PERCENTILES)
    assert [c.passed for c in nothing] == [False, False]  # no data holds nothing
    goodput = build(SLO, "default", 95, 1.0)
    assert [c.passed for c in judge(summary(conversations=0.96), goodput)] == [True]
    assert [c.passed for c in judge(summary(conversations=0.9), goodput)] == [False]
    bare = build(None, None, 95, 1.0)  # no SLO: a conversation is good when every turn was
    (check,) = judge(summary(sessions=20, unfinished=0, fully_ok=19), bare)
    assert check.passed and check.measured == pytest.approx(95.0)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((None, None, None, 1.0), "give an SLO (--slo ttft.p90=500ms"),
        ((SLO, "batch", None, 1.0), "--tier 'batch' is not a tier of the SLOs (tiers: default)"),
        ((None, "x", 90, 1.0), "--tier 'x' is not a tier of the SLOs (tiers: none: give --slo)"),
        ((SLO, None, 0, 1.0), "--goodput is a percentage in (0, 100]"),
        ((SLO, None, None, 101), "--max-failures is a percentage in [0, 100]"),
    ],
)
def test_bad_criteria_are_one_line(args: Any, words: str) -> None:
    with pytest.raises(InputError) as raised:
        build(*args)
    assert words in str(raised.value)


def test_the_answer_reads_as_a_sentence() -> None:
    space = Space("users", start=1, stop=64, repeats=1)
    probes = [probe(24, 1, p95=48.0), probe(25, 2, p95=900.0), probe(24, 3, p95=41.0)]
    probes.append(probe(25, 4, p95=850.0))
    end = Conclusion("holds", 24, 25, narrowed=True, repeated=True)
    said = answer(space, end, probes, min_sessions=5)
    assert said.sentence == (
        "holds 24 users (bracket 24–25) at p95 TTFT 48 ms (41–48 over 2 probes); 1,850 output tok/s"
    )
    assert said.details == ["25 users: p95 TTFT 900 ms > 100 ms (2 of 2 probes failed)"]


def test_answers_that_cannot_bracket() -> None:
    space = Space("users", start=1, stop=64)
    first = answer(space, Conclusion("fails_at_start", None, 1), [probe(1, 1, p95=900.0)], 5)
    assert first.sentence == "fails already at 1 user: p95 TTFT 900 ms > 100 ms"
    top = answer(space, Conclusion("holds_at_max", 64, None), [probe(64, 1)], 5)
    assert (
        top.sentence == "holds at least 64 users (the --max) at p95 TTFT 50 ms; 1,850 output tok/s"
    )


def test_the_answer_says_when_a_start_was_warm_and_when_probes_were_short() -> None:
    space = Space("users", start=1, stop=64, repeats=0)
    probes = [probe(8, 1, warm=True, sessions=3, unfinished=0), probe(9, 2, p95=300.0)]
    said = answer(space, Conclusion("holds", 8, 9, narrowed=True, repeated=True), probes, 5)
    assert said.sentence.endswith("(warm cache at the start of probe-01-users-8)")
    assert any("probe-01-users-8 finished fewer than --min-sessions 5" in d for d in said.details)
    assert any("warm at the start of probe-01-users-8" in d for d in said.details)


def test_an_interrupted_search_says_what_it_had() -> None:
    space = Space("users", start=1, stop=64)
    said = answer(space, None, [probe(1, 1), probe(2, 2, p95=300.0)], 5)
    assert said.sentence == "interrupted after 2 probes: so far 1 user held, 2 users failed"


def test_a_short_probe_runs_again_for_longer() -> None:
    spec = ProbeSpec(3, "users", 4, "grow", 20.0, 5.0)
    longer = spec.extended(4, finished=2, min_sessions=5)
    assert (longer.index, longer.role, longer.load) == (4, "extend", 4)
    assert longer.duration_s == pytest.approx(5 + 15 * 3)  # (5 + 1) / 2 times the measured part
    assert spec.extended(4, finished=0, min_sessions=50).duration_s == pytest.approx(5 + 15 * 4)


def test_a_probe_config_holds_the_load_and_only_the_duration_ends_it() -> None:
    cfg = RunConfig.model_validate({"load": {"sessions": 7, "max_requests": 9, "users": 3}})
    users = probe_config(cfg, ProbeSpec(2, "users", 12, "grow", 10.0, 2.5))
    assert (users.name, users.load.mode, users.load.users) == ("probe-02-users-12", "users", 12)
    assert (users.load.duration_s, users.load.warmup_s, users.load.end) == (10.0, 2.5, "cut")
    assert users.load.sessions is None and users.load.max_requests is None
    rate = probe_config(cfg, ProbeSpec(3, "rate", 2.5, "grow", 10.0, 2.5))
    assert (rate.name, rate.load.mode, rate.load.rate) == ("probe-03-rate-2.5", "session-rate", 2.5)
    trace = RunConfig.model_validate({"load": {"mode": "session-rate", "arrival": "trace"}})
    with pytest.raises(InputError, match=r"load\.arrival trace"):
        probe_config(trace, ProbeSpec(1, "rate", 1, "start", 10.0, 2.5))


def test_the_quoted_check_is_the_one_nearest_its_threshold() -> None:
    near = Check("p90 TTFT", 95.0, 100.0, "ms", "max", True)
    far = Check("failed requests", 0.0, 1.0, "%", "max", True)
    speed = Check("p25 output tok/s per user", 31.0, 30.0, "tokens/s", "min", True)
    assert max([far, near, speed], key=lambda c: c.strain) is speed
    assert Criteria(("default",), None, 1.0).describe() == (
        "every objective of tier default; at most 1 % failed requests"
    )
