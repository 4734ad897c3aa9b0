"""One probe: the user's config at one load, run as an ordinary run folder, then judged.

Why an ordinary run: a probe's folder holds config.yaml, events.db and summary.json like any
run, so `turnbench report PROBE_DIR` re-reports (and re-judges) it, drawing its report.html
(the search skips that ~2 s part unless `--probe-html`); nothing in it depends on the search.
Every probe draws its own cache salt (`cache.salt`, on by default), so no probe finds an
earlier probe's prefixes in the server's cache."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import msgspec
from pydantic import ValidationError
from rich.console import Console

from turnbench.capacity.criteria import Check, Criteria, judge
from turnbench.capacity.early import probe_stop
from turnbench.capacity.search import Over
from turnbench.config import RunConfig
from turnbench.errors import InputError
from turnbench.metrics.cache_model import WarmStart
from turnbench.metrics.model import Summary, load_summary
from turnbench.pacing.load import RUN_WIDE_KEYS

MAX_EXTENSION = 4.0
"""A short probe is run again at most this many times longer (its measured part)."""


def load_words(over: Over, load: float) -> str:
    """A load as the answer says it: `1 user`, `24 users`, `2.5 sessions/s`."""
    if over == "users":
        return f"{load:g} user" + ("" if load == 1 else "s")
    return f"{load:g} sessions/s"


@dataclass(frozen=True)
class ProbeSpec:
    """What one probe runs: its number, load, why it runs, and how long."""

    index: int
    over: Over
    load: float
    role: str
    duration_s: float
    warmup_s: float
    kind: str = "probe"
    """What it is, the start of its folder's name: a search's `probe`, a sweep's `point`."""

    @property
    def name(self) -> str:
        """The probe's folder name: `probe-03-users-8`, `probe-04-rate-2.5`."""
        return f"{self.kind}-{self.index:02d}-{self.over}-{self.load:g}"

    def extended(self, index: int, finished: int, min_sessions: int) -> ProbeSpec:
        """The same load run again for longer, sized by the conversations it finished:
        enough for `min_sessions` at the rate it finished them, at most MAX_EXTENSION times."""
        factor = min(MAX_EXTENSION, (min_sessions + 1) / max(finished, 1))
        measured = (self.duration_s - self.warmup_s) * factor
        duration = math.ceil((self.warmup_s + measured) * 10) / 10
        return replace(self, index=index, role="extend", duration_s=duration)


def probe_config(cfg: RunConfig, spec: ProbeSpec) -> RunConfig:
    """The user's config with the probe's load: mode users (closed loop) or session-rate
    (open loop), its duration and warm-up, `end: cut` (a drain would lower the load being
    measured) and no session or request count, so the duration alone ends it."""
    if cfg.stages is not None:
        raise InputError(
            "a capacity search probes one load at a time: remove the config's stages",
            field="stages",
        )
    data = cfg.model_dump()
    given = data["load"]
    load = {key: given[key] for key in RUN_WIDE_KEYS}
    load.update(duration_s=spec.duration_s, warmup_s=spec.warmup_s, end="cut", max_requests=None)
    if spec.over == "users":
        load.update(mode="users", users=int(spec.load))
    else:
        if given.get("arrival") == "trace":
            raise InputError(
                "a rate search draws arrivals at each probe's rate: load.arrival trace has "
                "recorded times instead; use poisson, constant or gamma",
                field="load.arrival",
            )
        load.update({k: given[k] for k in ("arrival", "burstiness") if k in given})
        load.update(mode="session-rate", rate=spec.load)
    data["load"] = load
    data["name"] = spec.name
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(str(first["msg"]).removeprefix("Value error, "), field=where) from None


@dataclass
class ProbeResult:
    """One probe's verdict and figures, as search.json and the answer need them."""

    spec: ProbeSpec
    folder: Path
    checks: list[Check]
    finished: int
    """Conversations that ended on their own in the measured part (not cut by its end)."""
    figures: dict[str, float | None]
    goodput: dict[str, dict[str, float | None]]
    warm_start: WarmStart | None
    end_reason: str
    notes: list[str] = field(default_factory=list)
    stopped_early: str | None = None
    """Why the probe stopped before its end: it had clearly failed (None: it ran whole)."""
    superseded_by: str | None = None
    """The longer probe run in its place when this one finished too few conversations."""

    @property
    def passed(self) -> bool:
        """Whether it met every check."""
        return all(c.passed for c in self.checks)

    @property
    def interrupted(self) -> bool:
        """Ctrl-C ended it: it gives no verdict."""
        return self.end_reason == "interrupted"

    @property
    def counts(self) -> bool:
        """Whether its verdict enters the search (not interrupted, not run again longer)."""
        return not self.interrupted and self.superseded_by is None

    @property
    def warm(self) -> bool:
        """Whether the server's prefix cache was warm at its start (summary cache.warm_start)."""
        return self.warm_start is not None and self.warm_start.warm

    def to_json(self, search_dir: Path) -> dict[str, Any]:
        """The probe as search.json lists it."""
        return {
            "probe": self.spec.index,
            "folder": str(self.folder.relative_to(search_dir)),
            "role": self.spec.role,
            "over": self.spec.over,
            "load": self.spec.load,
            "duration_s": self.spec.duration_s,
            "warmup_s": self.spec.warmup_s,
            "end_reason": self.end_reason,
            "stopped_early": self.stopped_early,
            "passed": self.passed,
            "counts": self.counts,
            "superseded_by": self.superseded_by,
            "checks": [c.to_json() for c in self.checks],
            "finished_conversations": self.finished,
            **self.figures,
            "goodput": self.goodput,
            "warm_start": msgspec.to_builtins(self.warm_start),
            "warm": self.warm,
            "notes": self.notes,
        }


def result_of(spec: ProbeSpec, folder: Path, summary: Summary, criteria: Criteria) -> ProbeResult:
    """A probe's result from its summary (summary.json's content)."""
    requests = summary.requests
    conversations = summary.per_conversation
    tiers = summary.slo.tiers if summary.slo else {}
    figures = {
        "ttft_p50_ms": requests.ttft_ms.p50,
        "ttft_p90_ms": requests.ttft_ms.p90,
        "ttft_p99_ms": requests.ttft_ms.p99,
        "tpot_p90_ms": requests.tpot_ms.p90,
        "e2e_p90_ms": requests.e2e_ms.p90,
        "requests_per_s": requests.throughput.requests_per_s,
        "output_tokens_per_s": requests.throughput.output_tokens_per_s,
        "requests_ok": requests.ok,
        "requests_failed": requests.failed,
        "window_s": requests.window_s,
    }
    goodput = {
        name: {
            "requests": tier.requests.all.ratio,
            "conversations": tier.conversations.ratio,
            "conversations_per_s": tier.conversations.per_s,
        }
        for name, tier in tiers.items()
    }
    early = [n["message"] for n in summary.notices if n["kind"] == "early_stop"]
    notes = [
        *summary.verdict.notes,
        *(n["message"] for n in summary.notices if n["kind"] != "early_stop"),
    ]
    return ProbeResult(
        spec=spec,
        folder=folder,
        checks=judge(summary, criteria),
        finished=conversations.sessions - conversations.outcomes.get("unfinished", 0),
        figures=figures,
        goodput=goodput,
        warm_start=summary.cache.warm_start if summary.cache else None,
        end_reason=summary.run.end_reason or "crashed",
        notes=notes,
        stopped_early=early[0] if early else None,
    )


def run_probe(
    cfg: RunConfig,
    spec: ProbeSpec,
    criteria: Criteria,
    *,
    search_dir: Path,
    base_dir: Path,
    html: bool = False,
    early_stop: bool = True,
) -> ProbeResult:
    """Run one probe into `search_dir/<probe name>/` and judge it.

    Its console output (the run's report) goes to console.txt in its folder rather than to
    the terminal: the search prints one line per probe. `early_stop`: stop it once it has
    clearly failed (`capacity/early.py`). `run.execute` names a run folder
    `<timestamp>-<name>`; the probe's folder is renamed to its name alone once the run has
    closed every file, so the search folder lists its probes in order.
    """
    from turnbench.run import execute  # the engine: imported when a probe runs

    text = io.StringIO()
    console = Console(file=text, width=120)
    rule = None
    if early_stop:
        rule = probe_stop(cfg.slo, criteria, warmup_s=spec.warmup_s, duration_s=spec.duration_s)
    stamped = execute(
        probe_config(cfg, spec),
        base_dir=base_dir,
        out=search_dir,
        console=console,
        live=False,
        html=html,
        early_stop=rule,
    )
    folder = search_dir / spec.name
    stamped.rename(folder)
    (folder / "console.txt").write_text(text.getvalue().replace(str(stamped), str(folder)))
    return result_of(spec, folder, load_summary(folder / "summary.json"), criteria)
