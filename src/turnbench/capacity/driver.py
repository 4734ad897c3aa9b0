"""The search loop: ask `search.next_step` for a load, run it as a probe, cool down, repeat.

Why search.json after every probe: a search takes minutes, and Ctrl-C (or a server that goes
away) must leave every finished probe reported and the record of the search on disk. The
built-in simulator, when no target is given, is started once for the whole search: a fresh
server per probe would measure its start-up, and the probes' salts keep them apart anyway.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from turnbench.capacity.criteria import Criteria
from turnbench.capacity.probe import ProbeResult, ProbeSpec, load_words, probe_config, run_probe
from turnbench.capacity.report import probes_table, render_html
from turnbench.capacity.result import Answer, answer, failing, number, search_record, write_record
from turnbench.capacity.search import Conclusion, Space, Step, Trial, next_step
from turnbench.config import RunConfig
from turnbench.errors import EngineError, InputError, TargetError
from turnbench.pacing.limits import endless
from turnbench.run import new_folder
from turnbench.target import Target, start_builtin_sim


@dataclass(frozen=True)
class Plan:
    """How each probe runs: its length, warm-up, the pause before it, and the fewest
    conversations it must finish to give a verdict."""

    space: Space
    criteria: Criteria
    probe_s: float
    warmup_s: float
    cooldown_s: float
    min_sessions: int
    probe_html: bool = False
    """Draw each probe's report.html (~2 s a probe); by default `turnbench report` does it
    later from the probe's events.db."""
    early_stop: bool = True
    """Stop a probe once it has clearly failed (`capacity/early.py`)."""

    def check(self) -> None:
        """Refuse probe settings that cannot measure anything, in the words of the flags."""
        self.space.check()
        if not self.probe_s > 0:
            raise InputError(f"--probe-duration must be above 0, got {self.probe_s:g}")
        if not 0 <= self.warmup_s < self.probe_s:
            raise InputError(
                f"--warmup {self.warmup_s:g} must be at least 0 and shorter than the probe's "
                f"{self.probe_s:g} s (--probe-duration)"
            )
        if self.cooldown_s < 0:
            raise InputError(f"--cooldown must be 0 or more, got {self.cooldown_s:g}")
        if self.min_sessions < 0:
            raise InputError(f"--min-sessions must be 0 or more, got {self.min_sessions}")

    def settings(self) -> dict[str, Any]:
        """The probe settings as search.json records them."""
        return {
            "probe_duration_s": self.probe_s,
            "warmup_s": self.warmup_s,
            "cooldown_s": self.cooldown_s,
            "min_sessions": self.min_sessions,
            "probe_html": self.probe_html,
            "early_stop": self.early_stop,
        }


@dataclass(frozen=True)
class Search:
    """A finished (or interrupted) search: its folder, probes and answer."""

    folder: Path
    probes: list[ProbeResult]
    answer: Answer
    record: dict[str, Any]


def _said(probe: ProbeResult) -> str:
    """One line of what a probe measured: its verdict, every check, its throughput."""
    if probe.interrupted:
        return "  [yellow]interrupted[/]: no verdict"
    checks = "; ".join(
        failing(c) if not c.passed else f"{c.name} {number(c.measured)} {c.unit}"
        for c in probe.checks
    )
    verdict = "[green]pass[/]" if probe.passed else "[bold red]FAIL[/]"
    tokens = number(probe.figures["output_tokens_per_s"])
    warm = "; [yellow]cache warm at start[/]" if probe.warm else ""
    early = f"\n  stopped early: {escape(probe.stopped_early)}" if probe.stopped_early else ""
    return (
        f"  {verdict}: {escape(checks)}; {tokens} output tok/s; "
        f"{probe.finished} conversations finished{warm}{early}"
    )


class _Loop:
    """The state of one search: its probes so far and the next probe's number."""

    def __init__(
        self, cfg: RunConfig, plan: Plan, folder: Path, base_dir: Path, console: Console
    ) -> None:
        self.cfg, self.plan, self.folder = cfg, plan, folder
        self.base_dir, self.console = base_dir, console
        self.probes: list[ProbeResult] = []

    def trials(self) -> list[Trial]:
        """The verdicts the search rule sees: interrupted and rerun probes give none."""
        return [Trial(p.spec.load, p.passed) for p in self.probes if p.counts]

    def run(self, spec: ProbeSpec) -> ProbeResult:
        """Cool down (after the first probe), run one probe, and say in one line what it
        measured, with the run's own warnings and notices under it."""
        if self.probes and self.plan.cooldown_s > 0:
            time.sleep(self.plan.cooldown_s)
        words = load_words(self.plan.space.over, spec.load)
        self.console.print(
            f"probe {spec.index:02d} ({spec.role}): {words} for {spec.duration_s:g} s "
            f"({spec.warmup_s:g} s warm-up)",
            highlight=False,
        )
        probe = run_probe(
            self.cfg,
            spec,
            self.plan.criteria,
            search_dir=self.folder,
            base_dir=self.base_dir,
            html=self.plan.probe_html,
            early_stop=self.plan.early_stop,
        )
        self.probes.append(probe)
        self.console.print(_said(probe), highlight=False)
        for note in probe.notes:
            self.console.print(f"  [yellow]note:[/] {escape(note)}", highlight=False)
        return probe

    def step(self, step: Step) -> bool:
        """Run the step's probe, and once more for longer if it finished too few
        conversations and the budget allows; False when Ctrl-C ended a probe."""
        plan = self.plan
        spec = ProbeSpec(
            len(self.probes) + 1, plan.space.over, step.load, step.role, plan.probe_s, plan.warmup_s
        )
        probe = self.run(spec)
        if probe.interrupted:
            return False
        short = probe.finished < plan.min_sessions and probe.stopped_early is None
        if short and len(self.probes) < plan.space.max_probes:
            longer = spec.extended(len(self.probes) + 1, probe.finished, plan.min_sessions)
            probe.superseded_by = longer.name
            self.console.print(
                f"  only {probe.finished} conversations finished (--min-sessions "
                f"{plan.min_sessions}): running it again for {longer.duration_s:g} s",
                highlight=False,
            )
            return not self.run(longer).interrupted
        return True


def run_search(
    cfg: RunConfig, plan: Plan, *, base_dir: Path, out: Path | None, console: Console
) -> Search:
    """Search for the largest load that meets the plan's criteria; write search.json and
    report.html into `<out>/<timestamp>-capacity-<name>/`, one folder per probe inside.

    Input errors are raised before anything is made (the range, the first probe's config),
    and so is a target or engine error before the first probe finished; one after it stops
    the search with the probes that finished reported (answer kind `stopped`).
    """
    plan.check()
    probe_config(
        cfg, ProbeSpec(1, plan.space.over, plan.space.start, "start", plan.probe_s, plan.warmup_s)
    )
    if not endless(cfg):
        console.print(
            "[yellow]note:[/] the workload is finite: a probe that plays it all ends early "
            "(set workload.cycle: true to repeat it)"
        )
    began = time.monotonic()
    builtin = None
    if cfg.target.url is None:
        builtin, url = start_builtin_sim(cfg.target.sim_args)
        console.print(f"started the built-in simulator at {url}")
        cfg = cfg.model_copy(update={"target": cfg.target.model_copy(update={"url": url})})
    folder = new_folder(cfg, out, f"capacity-{cfg.name}")
    console.print(f"search folder: {folder}", soft_wrap=True, highlight=False)
    console.print(f"criteria: {plan.criteria.describe()}", highlight=False)
    loop = _Loop(cfg, plan, folder, base_dir, console)
    end: Conclusion | None = None
    stopped: str | None = None
    finished = False
    try:
        while True:
            step = next_step(plan.space, loop.trials(), spent=len(loop.probes))
            if isinstance(step, Conclusion):
                end = step
                break
            if not loop.step(step):
                break
            _write(cfg, plan, loop, None, began)
        finished = True
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: the search stops; finished probes are kept")
    except (TargetError, EngineError) as e:
        if not loop.probes:
            raise  # nothing measured yet: one error line, no folder
        stopped = str(e)
        console.print(f"[bold red]problem:[/] {escape(stopped)}; finished probes are kept")
    finally:
        if builtin is not None:
            Target(url="", model="", max_model_len=None, builtin=builtin).close()
        if not finished and not loop.probes:
            shutil.rmtree(folder, ignore_errors=True)
    result = answer(plan.space, end, loop.probes, plan.min_sessions, stopped)
    record = _write(cfg, plan, loop, result, began)
    return Search(folder, loop.probes, result, record)


def _write(
    cfg: RunConfig, plan: Plan, loop: _Loop, result: Answer | None, began: float
) -> dict[str, Any]:
    """search.json now, and report.html once there is an answer."""
    record = search_record(
        name=cfg.name,
        target=cfg.target.url,
        space=plan.space,
        criteria=plan.criteria,
        plan=plan.settings(),
        probes=loop.probes,
        result=result,
        search_dir=loop.folder,
        elapsed_s=time.monotonic() - began,
    )
    if loop.folder.exists():
        write_record(loop.folder, record)
        if result is not None:
            (loop.folder / "report.html").write_text(
                render_html(record, loop.folder), encoding="utf-8"
            )
    return record


def print_search(search: Search, console: Console) -> None:
    """The probes table, the answer's details, the answer, then the report's path last."""
    from turnbench.report.console import to_rich

    if search.probes:
        console.print(to_rich(probes_table(search.record)))
    for detail in search.answer.details:
        console.print(f"[yellow]note:[/] {escape(detail)}", soft_wrap=True, highlight=False)
    console.print(escape(search.answer.sentence), soft_wrap=True, highlight=False)
    report = search.folder / "report.html"
    if report.exists():
        console.print(f"report: {report}", soft_wrap=True, highlight=False)
