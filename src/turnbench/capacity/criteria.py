"""What a probe must meet, and whether its summary meets it: one check per objective.

Why from the summary: a probe is a run whose summary.json (built from events.db alone)
already judged its SLO tiers (`metrics/goodput.py`); the search only reads that verdict, so
`turnbench report PROBE_DIR` shows exactly what the search decided on.

Two ways to judge, as AIPerf (percentile SLOs) and GuideLLM (goodput) search:
- percentiles: every objective of the chosen tiers passes, and at most `max_failures` % of
  the judged requests failed (a percentile is over successful requests only, so a server
  that refuses half its load with 429 would otherwise pass);
- goodput (`--goodput P`): at least P % of the conversations were good for each chosen tier
  (every request succeeded and met every threshold); with no SLO at all, good means every
  turn succeeded. Failures count against goodput already.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from turnbench.errors import InputError
from turnbench.metrics.model import Summary
from turnbench.metrics.slo_model import ObjectiveResult
from turnbench.slo import SloConfig

NO_SLO = (
    "give an SLO (--slo ttft.p90=500ms, or the config's slo: section) or a "
    "conversation-goodput floor (--goodput 95)"
)
_NAMES = {
    "ttft": "TTFT",
    "tpot": "TPOT",
    "e2e": "E2E",
    "itl": "ITL",
    "output_tokens_per_s": "output tok/s per user",
}
_TURNS = {"all": "", "first": " of first turns", "later": " of later turns"}


@dataclass(frozen=True)
class Criteria:
    """The tiers a probe must pass (all of the SLO's, or the `--tier`), the conversation
    goodput floor in percent (None: judge the percentiles) and the failed-request limit."""

    tiers: tuple[str, ...]
    goodput: float | None
    max_failures: float

    def describe(self) -> str:
        """The criteria in words, for the console and search.json."""
        if self.goodput is not None:
            judged = f" of tier {', '.join(self.tiers)}" if self.tiers else " (every turn ok)"
            return f"at least {self.goodput:g} % good conversations{judged}"
        tiers = ", ".join(self.tiers)
        return f"every objective of tier {tiers}; at most {self.max_failures:g} % failed requests"


@dataclass(frozen=True)
class Check:
    """One objective judged on one probe: the measured value against its threshold."""

    name: str
    """How the answer quotes it: `p90 TTFT`, `good conversations (default)`."""
    measured: float | None
    threshold: float
    unit: str
    bound: Literal["max", "min"]
    passed: bool
    """False as well when nothing was measured: a probe that shows nothing holds nothing."""

    @property
    def strain(self) -> float:
        """How close to its threshold it came (1 = at it, above 1 = past it): the check
        with the highest strain is the one the answer quotes."""
        if self.measured is None:
            return float("inf")
        if self.bound == "max":
            return self.measured / self.threshold
        return self.threshold / self.measured if self.measured > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        """The check as search.json holds it."""
        return asdict(self)


def build(
    slo: SloConfig | None, tier: str | None, goodput: float | None, max_failures: float
) -> Criteria:
    """The criteria from the resolved SLOs and the flags; a bad combination is one line."""
    if goodput is not None and not 0 < goodput <= 100:
        raise InputError(f"--goodput is a percentage in (0, 100], got {goodput:g}")
    if not 0 <= max_failures <= 100:
        raise InputError(f"--max-failures is a percentage in [0, 100], got {max_failures:g}")
    if slo is None and goodput is None:
        raise InputError(NO_SLO)
    names = tuple(slo.tiers) if slo is not None else ()
    if tier is not None:
        if tier not in names:
            known = ", ".join(names) if names else "none: give --slo"
            raise InputError(f"--tier {tier!r} is not a tier of the SLOs (tiers: {known})")
        names = (tier,)
    if goodput is None and slo is not None and not any(slo.tiers[n].objectives for n in names):
        raise InputError(
            f"tier {', '.join(names)} has no percentile objective: give one (--slo "
            "ttft.p90=500ms) or judge its conversations with --goodput"
        )
    return Criteria(names, goodput, max_failures)


def _objective(o: ObjectiveResult) -> Check:
    name = f"p{o.percentile:g} {_NAMES[o.metric]}{_TURNS[o.turns]}"
    return Check(name, o.measured, o.threshold, o.unit, o.bound, o.passed is True)


def _goodput_check(name: str, ratio: float | None, floor: float) -> Check:
    measured = ratio * 100 if ratio is not None else None
    passed = measured is not None and measured >= floor
    return Check(name, measured, floor, "%", "min", passed)


def _failures(summary: Summary, limit: float) -> Check:
    requests = summary.requests
    judged = requests.ok + requests.failed
    measured = requests.failed / judged * 100 if judged else None
    passed = measured is not None and measured <= limit
    return Check("failed requests", measured, limit, "%", "max", passed)


def judge(summary: Summary, criteria: Criteria) -> list[Check]:
    """Every check of the criteria on one probe's summary (summary.json's content)."""
    tiers = summary.slo.tiers if summary.slo else {}
    if criteria.goodput is None:
        checks = [_objective(o) for name in criteria.tiers for o in tiers[name].objectives]
        return [*checks, _failures(summary, criteria.max_failures)]
    if criteria.tiers:
        return [
            _goodput_check(
                f"good conversations ({name})",
                tiers[name].conversations.ratio,
                criteria.goodput,
            )
            for name in criteria.tiers
        ]
    conversations = summary.per_conversation
    judged = conversations.sessions - conversations.outcomes.get("unfinished", 0)
    ratio = conversations.sessions_fully_ok / judged if judged else None
    return [_goodput_check("good conversations", ratio, criteria.goodput)]
