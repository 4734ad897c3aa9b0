"""Service-level objectives: the typed `slo:` section of a run and the parser of `--slo` items.

Why a module of its own: the config validates the section, `metrics/goodput.py` reads it back
from events.db's resolved config to judge a run (any old run can be re-judged), and a capacity
search takes the same objectives; none of them needs the rest of the config for it.

Why objectives as text too (`ttft p90 <= 500ms`): that is how an SLO is written in a runbook
or a ticket; the same words work in YAML, in `--slo` and in the report, and every form is
validated into the same model (thresholds in ms for times, tokens/s for speeds).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from turnbench.errors import InputError

Metric = Literal["ttft", "tpot", "e2e", "itl", "output_tokens_per_s"]
TurnClass = Literal["all", "first", "later"]

METRICS: dict[str, str] = {
    "ttft": "ms",
    "tpot": "ms",
    "e2e": "ms",
    "itl": "ms",
    "output_tokens_per_s": "tokens/s",
}
"""Every metric an objective may bound, with the unit its threshold is kept in."""
FLOORS = frozenset({"output_tokens_per_s"})
"""Metrics whose objective is a lower bound (`>=`); every other one is an upper bound (`<=`)."""
TURN_CLASSES: dict[str, str] = {"all": "every turn", "first": "first turns", "later": "later turns"}
"""Which turns an objective judges: first turns (turn_index 1, no cached prefix of their own)
or later ones (turn_index > 1)."""
DEFAULT_TIER = "default"
"""The tier a `--slo` item without a `TIER:` prefix joins."""
TIME_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0}
SPEED_UNITS = frozenset({"", "tok/s", "tokens/s"})
FLAG_HELP = (
    r"An SLO, repeatable: \[TIER:]METRIC.pNN\[.first|.later]=VALUE or 'METRIC pNN <= VALUE', "
    "e.g. ttft.p90=500ms, e2e.p99=8s, ttft.p90.later=200ms, output_tokens_per_s.p25=30. "
    f"Metrics: {', '.join(METRICS)}; times in ms (bare numbers) or s, speeds in tokens/s."
)

_TIER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_NAME_CHARS = "letters, digits, _ and -"
_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)$")
_VALUE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z/]*)$")
_FORM = "expected METRIC.pNN=VALUE or 'METRIC pNN <= VALUE' (e.g. ttft.p90=500ms)"


def _known_metric(name: str) -> str:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRICS)}")
    return name


def parse_threshold(value: Any, metric: str) -> float:
    """A threshold in the metric's unit: a time in ms from `500ms`, `0.5s` or a bare number (ms),
    a speed in tokens/s from `30`, `30tok/s` or `30 tokens/s`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"threshold must be a number or a string with a unit, got {value!r}")
    if not isinstance(value, str):
        number, unit = float(value), ""
    else:
        match = _VALUE.match(value.strip())
        if match is None:
            raise ValueError(f"threshold {value!r} is not a number with an optional unit")
        number, unit = float(match[1]), match[2].lower()
    if metric in FLOORS:
        if unit not in SPEED_UNITS:
            raise ValueError(f"{metric} is a speed: its unit is tokens/s, not {unit!r}")
        scaled = number
    else:
        if unit not in TIME_UNITS:
            raise ValueError(f"{metric} is a time: its unit is ms or s, not {unit!r}")
        scaled = number * TIME_UNITS[unit]
    if not scaled > 0:
        raise ValueError(f"threshold must be greater than 0, got {value!r}")
    return scaled


def parse_objective(text: str) -> dict[str, Any]:
    """The fields of an objective written as text: `ttft p90 <= 500ms`, `ttft.p90=500ms`,
    `ttft.p90.first=300ms`, `output_tokens_per_s p25 >= 30`.

    `=` takes the metric's own direction; `<=` and `>=` must agree with it, so that a floor
    written as a limit (or the other way round) is an error rather than an SLO that always
    passes.
    """
    op = next((o for o in ("<=", ">=", "=") if o in text), None)
    if op is None:
        raise ValueError(_FORM)
    left, _, right = text.partition(op)
    # split at dots and spaces followed by a letter: `p99.9` keeps its decimal point
    words = [w for w in re.split(r"[\s.]+(?=[a-z])", left.strip().lower()) if w]
    if not words or not right.strip():
        raise ValueError(_FORM)
    metric = _known_metric(words[0])
    percentiles = [m[1] for w in words[1:] if (m := _PERCENTILE.match(w))]
    turns = [w for w in words[1:] if w in TURN_CLASSES]
    stray = [w for w in words[1:] if not _PERCENTILE.match(w) and w not in TURN_CLASSES]
    if stray:
        raise ValueError(
            f"unknown word {stray[0]!r} after {metric}; expected pNN and optionally first or later"
        )
    if len(percentiles) != 1:
        raise ValueError(f"{metric} needs one percentile, e.g. {metric}.p90; {_FORM}")
    if len(turns) > 1:
        raise ValueError("give at most one turn class: first, later or all")
    floor = metric in FLOORS
    if op == ("<=" if floor else ">="):
        bound = ">=" if floor else "<="
        kind = "a floor (a speed)" if floor else "a limit (a time)"
        raise ValueError(f"{metric} is {kind}: write {bound} or =")
    percentile = float(percentiles[0])
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got p{percentiles[0]}")
    return {
        "metric": metric,
        "percentile": percentile,
        "threshold": parse_threshold(right.strip(), metric),
        "turns": turns[0] if turns else "all",
    }


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    """One threshold on one request metric at one percentile, over one class of turns."""

    metric: Metric = Field(
        description="ttft, tpot, e2e, itl (ms) or output_tokens_per_s (tokens/s, a floor)."
    )
    percentile: float = Field(
        gt=0, le=100, description="The percentile of the run judged against the threshold."
    )
    threshold: float = Field(
        gt=0,
        description="ms for a time (a string may say `500ms` or `8s`), tokens/s for a speed: "
        "the most a time may be, the least a speed may be.",
    )
    turns: TurnClass = Field(
        "all", description="Which turns it judges: all, first (turn 1) or later (turn > 1)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        if isinstance(data, str):
            return parse_objective(data)
        if isinstance(data, dict) and isinstance(data.get("threshold"), str):
            metric = _known_metric(str(data.get("metric")))
            return {**data, "threshold": parse_threshold(data["threshold"], metric)}
        return data

    @property
    def floor(self) -> bool:
        """Whether the threshold is a least value (a speed) rather than a most value (a time)."""
        return self.metric in FLOORS

    @property
    def key(self) -> tuple[str, float, str]:
        """What makes two objectives the same one (a later `--slo` replaces an earlier)."""
        return self.metric, self.percentile, self.turns

    @property
    def label(self) -> str:
        """The objective as a user writes it, e.g. `ttft p90 <= 500 ms (later turns)`."""
        turns = "" if self.turns == "all" else f" ({TURN_CLASSES[self.turns]})"
        bound = ">=" if self.floor else "<="
        unit = METRICS[self.metric]
        return f"{self.metric} p{self.percentile:g} {bound} {self.threshold:g} {unit}{turns}"


class Tier(_Strict):
    """A named set of objectives a request (and a conversation) meets or not as a whole."""

    objectives: list[Objective] = Field(
        default_factory=list,
        description="Objectives as text (`ttft p90 <= 500ms`) or mappings (metric, percentile, "
        "threshold, turns); a request meets the tier when it meets every one that applies.",
    )
    conversation_s: float | None = Field(
        None,
        gt=0,
        description="Longest a conversation may last (its session's start to end, think "
        "time included), seconds, to count as good; unset: no limit.",
    )

    @model_validator(mode="after")
    def _check(self) -> Tier:
        if not self.objectives and self.conversation_s is None:
            raise ValueError("a tier needs at least one objective or a conversation_s")
        seen: set[tuple[str, float, str]] = set()
        for objective in self.objectives:
            if objective.key in seen:
                turns = TURN_CLASSES[objective.turns]
                raise ValueError(
                    f"{objective.metric} p{objective.percentile:g} of {turns} is bounded twice"
                )
            seen.add(objective.key)
        return self


class SloConfig(_Strict):
    """Service-level objectives, judged on the run's requests and conversations (goodput)."""

    tiers: dict[str, Tier] = Field(
        description="Named tiers, e.g. interactive and batch, each judged apart (at least one)."
    )

    @field_validator("tiers")
    @classmethod
    def _names(cls, tiers: dict[str, Tier]) -> dict[str, Tier]:
        if not tiers:
            raise ValueError("give at least one tier")
        for name in tiers:
            if not _TIER_NAME.match(name):
                raise ValueError(f"tier name {name!r} may hold only {_NAME_CHARS}")
        return tiers


def _one_line(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def with_flags(slo: SloConfig | None, items: list[str]) -> SloConfig | None:
    """The config's SLOs with the `--slo [TIER:]OBJECTIVE` items added: each joins its tier
    (`default` without a prefix; a new tier is created) and replaces an objective of the same
    metric, percentile and turn class there, since a flag wins over the file.

    A bad item raises an InputError of one line naming the item.
    """
    if not items:
        return slo
    data = slo.model_dump() if slo is not None else {"tiers": {}}
    for item in items:
        tier, sep, text = item.partition(":")
        if not sep:
            tier, text = DEFAULT_TIER, item
        if not _TIER_NAME.match(tier):
            raise InputError(f"--slo {item!r}: tier name {tier!r} may hold only {_NAME_CHARS}")
        try:
            objective = Objective.model_validate(text)
        except ValidationError as e:
            raise InputError(f"--slo {item!r}: {_one_line(e)}") from None
        kept = data["tiers"].setdefault(tier, {"objectives": []})["objectives"]
        kept[:] = [o for o in kept if Objective.model_validate(o).key != objective.key]
        kept.append(objective.model_dump())
    return SloConfig.model_validate(data)
