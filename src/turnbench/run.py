"""`turnbench run`: from a validated config to a run folder with events.db and a report.

Why one orchestrator: the order matters for honesty — check the input and the server before
anything runs, write every attempt while it runs, and whatever ends the run (its limit, Ctrl-C,
SIGTERM) close events.db and report what ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console

from turnbench import __version__
from turnbench.config import RunConfig
from turnbench.engine.inprocess import InProcessLauncher
from turnbench.engine.procs import ProcessPool
from turnbench.engine.remote import RemoteLauncher, shares
from turnbench.engine.scheduler import Launcher, Scheduler
from turnbench.engine.worker import WorkerCore, WorkerSpec
from turnbench.errors import InputError
from turnbench.pacing.clock import RunClock
from turnbench.record.recorder import EventRecorder
from turnbench.report.progress import show_progress
from turnbench.target import Target, probe, start_builtin_sim
from turnbench.workload.config import DatasetWorkload
from turnbench.workload.conversation import Conversation
from turnbench.workload.dataset import load_dataset
from turnbench.workload.lengths import TextSizer, calibrate
from turnbench.workload.sources import conversations

if TYPE_CHECKING:
    from turnbench.engine.ray_actors import RayPool


def _open_workload(
    cfg: RunConfig, base_dir: Path, sizer: TextSizer
) -> tuple[Iterator[Conversation], list[float] | None]:
    """The conversation stream, checked up front; recorded start times for trace arrivals."""
    stream = conversations(cfg.workload, seed=cfg.seed, base_dir=base_dir, sizer=sizer)
    first = next(stream, None)
    if first is None:
        raise InputError("the workload has no conversation to play", field="workload")
    stream = itertools.chain([first], stream)
    if cfg.load.arrival != "trace" or cfg.load.mode != "session-rate":
        return stream, None
    plans = sorted(stream, key=lambda c: c.start_s or 0.0)
    return iter(plans), [c.start_s or 0.0 for c in plans]


async def _sizer(
    cfg: RunConfig, target: Target, headers: dict[str, str], base_dir: Path
) -> TextSizer:
    """Size texts for the server's tokenizer: tokenizer.json, else /tokenize, else approximate.

    Why after the probe: /tokenize is the probed server's; the workload is opened after this,
    since a source's texts (system prompts, trace blocks) are written to length with it.
    """
    path = cfg.target.tokenizer_json
    if path is not None and not Path(path).is_absolute():
        path = str(base_dir / path)
    return await calibrate(
        target.url,
        target.model,
        headers,
        tokenizer_json=path,
        verify_tls=cfg.target.verify_tls,
    )


def _uses_tools(conversation: Conversation) -> bool:
    if conversation.tools:
        return True
    return any(
        m.get("role") == "tool" or m.get("tool_calls")
        for turn in conversation.turns
        for m in (*turn.messages, *((turn.reply,) if turn.reply else ()))
    )


def _check_api_fits_workload(cfg: RunConfig, base_dir: Path) -> None:
    """The completions API has no tool calls: refuse a dataset with tool turns up front."""
    workload = cfg.workload
    if cfg.target.api != "completions" or not isinstance(workload, DatasetWorkload):
        return
    path = workload.path if workload.path.is_absolute() else base_dir / workload.path
    for conversation in load_dataset(path, workload.format, workload).conversations:
        if _uses_tools(conversation):
            raise InputError(
                f"conversation {conversation.id!r} has tool calls, which the completions API "
                "cannot send; use `target.api: chat`",
                file=str(path),
                field="target.api",
            )


def _auth_headers(cfg: RunConfig) -> dict[str, str]:
    key = os.environ.get(cfg.target.api_key_env)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _check_combinations(cfg: RunConfig) -> None:
    load = cfg.load
    cycling = getattr(cfg.workload, "cycle", False)
    if load.mode == "parallel" and cycling and load.sessions is None:
        raise InputError(
            "mode parallel with a cycled workload needs load.sessions", field="load.sessions"
        )
    endless = cycling and load.sessions is None and load.max_requests is None
    if endless and load.duration_s is None:
        raise InputError(
            "a cycled workload needs a limit: load.duration_s, load.sessions or load.max_requests",
            field="load",
        )


def _run_dir(cfg: RunConfig, out: Path | None) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = out if out is not None else Path(cfg.out_dir)
    path = base / f"{stamp}-{cfg.name}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{cfg.name}-{n}"
    path.mkdir(parents=True)
    return path


def _specs(
    cfg: RunConfig, target: Target, max_ctx: int | None, sizer: TextSizer
) -> list[WorkerSpec]:
    n = cfg.engine.worker_count()
    in_flight = shares(cfg.load.max_in_flight, n)
    requests = shares(cfg.load.max_requests, n)
    config = cfg.model_dump(mode="json")
    return [
        WorkerSpec(
            worker=i,
            config=config,
            url=target.url,
            model=target.model,
            max_context_tokens=max_ctx,
            in_flight_limit=in_flight[i],
            max_requests=requests[i],
            auth_headers=_auth_headers(cfg),
            sizer=sizer,
        )
        for i in range(n)
    ]


async def _run_async(
    cfg: RunConfig,
    target: Target,
    stream: Iterator[Conversation],
    start_times: list[float] | None,
    recorder: EventRecorder,
    console: Console,
    show_live: bool,
    sizer: TextSizer,
    procs: ProcessPool | None,
) -> str:
    """Run on the run's own worker (`workers: 1`), on worker processes (`procs`, spawned
    early by `execute`) or on Ray actors.

    The run's clock starts only when every worker is up, so start-up never shows as lag.
    """
    max_ctx = cfg.session.max_context_tokens or target.max_model_len
    specs = _specs(cfg, target, max_ctx, sizer)
    if cfg.engine.kind == "local" and len(specs) == 1:
        core = WorkerCore(specs[0], recorder=recorder)
        await core.open()
        try:
            core.begin(time.time_ns())
            scheduler = Scheduler(
                cfg.load,
                cfg.seed,
                InProcessLauncher(core),
                stream,
                core.clock,
                start_times=start_times,
            )
            return await _drive(cfg, scheduler, scheduler.launcher, recorder, console, show_live)
        finally:
            await core.close()
    pool: ProcessPool | RayPool
    if cfg.engine.kind == "ray":
        from turnbench.engine.ray_actors import RayPool

        pool = RayPool(specs, cfg.engine.ray_address)
    else:
        pool = procs if procs is not None else ProcessPool(len(specs))
    clock = RunClock()
    launcher = RemoteLauncher(
        pool.channels,
        recorder,
        clock,
        on_problem=lambda msg: console.print(f"[bold red]problem:[/] {msg}"),
        lead_s=pool.lead_s,
        waits_for_ends=cfg.load.waits_for_session_ends,
    )
    try:
        if isinstance(pool, ProcessPool):
            await pool.attach(launcher, specs)
        else:
            await pool.attach(launcher)
        wall_ns, clock.origin_ns = time.time_ns(), time.monotonic_ns()
        launcher.begin(wall_ns)
        scheduler = Scheduler(cfg.load, cfg.seed, launcher, stream, clock, start_times=start_times)
        return await _drive(cfg, scheduler, launcher, recorder, console, show_live)
    finally:
        clock.close()
        await pool.close()


async def _drive(
    cfg: RunConfig,
    scheduler: Scheduler,
    launcher: Launcher,
    recorder: EventRecorder,
    console: Console,
    show_live: bool,
) -> str:
    """Run the scheduler under the limits, the end policy and the signals."""
    loop = asyncio.get_running_loop()
    end_reason = "completed"
    timers: list[asyncio.TimerHandle] = []

    def stop(reason: str) -> None:
        nonlocal end_reason
        if scheduler.stopping and reason == "interrupted" and end_reason == "interrupted":
            launcher.cancel()  # a second Ctrl-C: cut at once
            return
        if end_reason == "completed" or reason == "interrupted":
            end_reason = reason
        scheduler.stop()
        if cfg.load.end == "cut":
            launcher.cancel()
        else:
            timers.append(loop.call_later(cfg.load.drain_timeout_s, launcher.cancel))

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop, "interrupted")
    if cfg.load.duration_s is not None:
        timers.append(loop.call_later(cfg.load.duration_s, stop, "duration"))

    def watch_recorder() -> None:
        if recorder.broken:  # nothing can be recorded any more: cut the run now
            console.print("[bold red]problem:[/] the events.db writer stopped; cutting the run")
            scheduler.stop()
            launcher.cancel()
        else:
            recorder.flush()  # rows of a quiet spell (long think times) reach the file too
            timers.append(loop.call_later(0.5, watch_recorder))

    watch_recorder()
    progress = asyncio.create_task(show_progress(launcher.stats, console)) if show_live else None
    try:
        await scheduler.run()
    finally:
        for handle in timers:
            handle.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
    if launcher.exhausted and end_reason == "completed":
        end_reason = "max_requests"
    return end_reason


def _event_loop_runner() -> Any:
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run


def execute(
    cfg: RunConfig,
    *,
    base_dir: Path,
    out: Path | None = None,
    console: Console | None = None,
    live: bool = True,
) -> Path:
    """Run a benchmark; return its run folder (config.yaml, events.db, summary.json)."""
    console = console or default_console()
    _check_combinations(cfg)
    _check_api_fits_workload(cfg, base_dir)
    headers = {**cfg.target.headers, **_auth_headers(cfg)}
    run = _event_loop_runner()
    target: Target | None = None
    builtin = None
    procs = None
    if cfg.engine.kind == "local" and cfg.engine.worker_count() > 1:
        procs = ProcessPool(cfg.engine.worker_count())  # they import while we probe and load
    try:
        url = cfg.target.url
        if url is None:
            builtin, url = start_builtin_sim(cfg.target.sim_args)
            console.print(f"started the built-in simulator at {url}")
        target = run(probe(url, cfg.target.model, headers, verify_tls=cfg.target.verify_tls))
        target.builtin = builtin
        sizer = run(_sizer(cfg, target, headers, base_dir))
        stream, start_times = _open_workload(cfg, base_dir, sizer)
        if not cfg.target.verify_tls:
            console.print("[yellow]warning:[/] TLS certificates are not verified")
        run_dir = _run_dir(cfg, out)
        resolved = cfg.redacted()
        resolved["resolved"] = {
            "url": target.url,
            "model": target.model,
            "max_model_len": target.max_model_len,
            "length_source": sizer.source,
        }
        (run_dir / "config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        recorder = EventRecorder(run_dir / "events.db", run_id=run_dir.name)
        recorder.start_run(
            name=cfg.name,
            turnbench_version=__version__,
            started_wall_ns=time.time_ns(),
            target=target.url,
            model=target.model,
            api=cfg.target.api,
            max_model_len=target.max_model_len,
            config_json=resolved,
        )
        console.print(f"run folder: {run_dir}")
        reason = "crashed"
        try:
            reason = run(
                _run_async(cfg, target, stream, start_times, recorder, console, live, sizer, procs)
            )
            procs = None  # closed by the run
        except KeyboardInterrupt:
            reason = "interrupted"
        finally:
            recorder.close()
            recorder.end_run(reason)
        write_report(run_dir, console)
        return run_dir
    finally:
        if procs is not None:
            procs.discard()
        if target is not None:
            target.close()
        elif builtin is not None:
            Target(url="", model="", max_model_len=None, builtin=builtin).close()


def default_console() -> Console:
    """The terminal's console; 120 columns when the output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def write_report(run_dir: Path, console: Console | None = None) -> dict[str, Any]:
    """(Re)build summary.json and report.html from events.db; print the console report."""
    db = run_dir / "events.db"
    if not db.exists():
        raise InputError("no events.db in this folder", file=str(run_dir))
    # numpy, matplotlib: imported when a report is written, not before a run starts
    from turnbench.metrics.series import series
    from turnbench.metrics.summary import summarize
    from turnbench.report.console import print_report
    from turnbench.report.html import render as render_html

    summary = summarize(db)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (run_dir / "report.html").write_text(render_html(summary, series(db)), encoding="utf-8")
    print_report(summary, console or default_console())
    return summary
