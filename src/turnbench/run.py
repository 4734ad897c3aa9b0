"""`turnbench run`: from a validated config to a run folder with events.db and a report.

Why one orchestrator: the order matters for honesty — check the input and the server before
anything runs, write every attempt while it runs, and whatever ends the run (its limit, Ctrl-C,
SIGTERM) close events.db and report what ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.text import Text

from turnbench import __version__
from turnbench.client.apis import api_for
from turnbench.config import RunConfig
from turnbench.engine.inprocess import InProcessLauncher
from turnbench.engine.procs import ProcessPool
from turnbench.engine.remote import RemoteLauncher, shares
from turnbench.engine.scheduler import Launcher, Scheduler
from turnbench.engine.worker import WorkerCore, WorkerSpec
from turnbench.entry import interrupted
from turnbench.errors import EngineError, InputError, TargetError
from turnbench.observe.scraper import metrics_url, scraping
from turnbench.pacing.clock import RunClock
from turnbench.pacing.ends import EarlyStop
from turnbench.pacing.limits import ran_out_notice, resolve_limits
from turnbench.pacing.stages import run_end
from turnbench.record.recorder import EventRecorder
from turnbench.report.files import default_console, write_report
from turnbench.report.progress import show_progress
from turnbench.run_inputs import (
    auth_headers,
    check_api_fits_workload,
    open_workload,
    read_ca_pem,
    text_sizer,
)
from turnbench.target import Target, probe, start_builtin_sim, unserved_api
from turnbench.tokens import TextSizer
from turnbench.workload.conversation import Conversation
from turnbench.workload.cycling import run_salt

if TYPE_CHECKING:
    from turnbench.engine.ray_actors import RayPool

    Pool = ProcessPool | RayPool


def new_folder(cfg: RunConfig, out: Path | None, name: str | None = None) -> Path:
    """A new folder `<UTC timestamp>-<name>` (`cfg.name` by default) in `out` (else
    `cfg.out_dir`), suffixed `-2`, `-3`... when one of that name exists: a run's, or a
    capacity search's."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = out if out is not None else Path(cfg.out_dir)
    name = name or cfg.name
    path = base / f"{stamp}-{name}"
    n = 1
    while path.exists():
        n += 1
        path = base / f"{stamp}-{name}-{n}"
    path.mkdir(parents=True)
    return path


def _specs(
    cfg: RunConfig,
    target: Target,
    max_ctx: int | None,
    sizer: TextSizer,
    ca_pem: str | None,
    salt: str | None,
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
            auth_headers=auth_headers(cfg),
            sizer=sizer,
            ca_pem=ca_pem,
            salt=salt,
        )
        for i in range(n)
    ]


def _observe(
    cfg: RunConfig, spec: WorkerSpec, clock: RunClock, recorder: EventRecorder, console: Console
) -> contextlib.AbstractAsyncContextManager[object]:
    """Scrape the target's /metrics beside the run, on its clock (`target.metrics_interval_s`
    0: not at all); a failure is one `note:` line and the run goes on."""
    return scraping(
        cfg.target,
        spec.url,
        clock=clock,
        recorder=recorder,
        say=lambda message: console.print(
            Text.assemble(("note:", "yellow"), " ", message), soft_wrap=True
        ),
        auth_headers=spec.auth_headers,
        ca_pem=spec.ca_pem,
    )


def _pool(cfg: RunConfig, specs: list[WorkerSpec], procs: ProcessPool | None) -> Pool | None:
    """The workers beyond the run's own: worker processes (`procs`, spawned early by
    `execute`) or Ray actors; None when the run's own worker plays everything.

    Why before the run folder exists: a Ray cluster that cannot be reached must be one error
    line and leave nothing behind.
    """
    if cfg.engine.kind == "ray":
        from turnbench.engine.ray_actors import RayPool

        return RayPool(specs, cfg.engine.ray_address)
    if len(specs) == 1:
        return None
    return procs if procs is not None else ProcessPool(len(specs))


async def _run_async(
    cfg: RunConfig,
    specs: list[WorkerSpec],
    pool: Pool | None,
    stream: Iterator[Conversation],
    start_times: list[float] | None,
    recorder: EventRecorder,
    console: Console,
    show_live: bool,
    began: Callable[[], None],
    early_stop: EarlyStop | None = None,
) -> str:
    """Run on the run's own worker (`pool` None), on worker processes or on Ray actors.

    The run's clock starts only when every worker is up, so start-up never shows as lag;
    `began` is called then (a failure before it leaves no run folder).
    """
    if pool is None:
        core = WorkerCore(specs[0], recorder=recorder)
        await core.open()
        try:
            began()
            core.begin(time.time_ns())
            scheduler = Scheduler(
                cfg, InProcessLauncher(core), stream, core.clock, start_times=start_times
            )
            async with _observe(cfg, specs[0], core.clock, recorder, console):
                return await _drive(
                    cfg, scheduler, scheduler.launcher, recorder, console, show_live, early_stop
                )
        finally:
            await core.close()
    clock = RunClock()
    launcher = RemoteLauncher(
        pool.channels,
        recorder,
        clock,
        on_problem=lambda msg: console.print(f"[bold red]problem:[/] {msg}"),
        lead_s=pool.lead_s,
        waits_for_ends=cfg.waits_for_session_ends,
    )
    try:
        if isinstance(pool, ProcessPool):
            await pool.attach(launcher, specs)
        else:
            await pool.attach(launcher)
        began()
        wall_ns, clock.origin_ns = time.time_ns(), time.monotonic_ns()
        launcher.begin(wall_ns)
        scheduler = Scheduler(cfg, launcher, stream, clock, start_times=start_times)
        async with _observe(cfg, specs[0], clock, recorder, console):
            return await _drive(cfg, scheduler, launcher, recorder, console, show_live, early_stop)
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
    early_stop: EarlyStop | None = None,
) -> str:
    """Run the scheduler under the limits, the end policy and the signals; `early_stop`
    is asked twice a second whether the outcome is already known (a capacity probe)."""
    loop = asyncio.get_running_loop()
    end = run_end(cfg, early_stop)
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
    if interrupted():  # a Ctrl-C before this moment that the interpreter swallowed
        stop("interrupted")
    if end.duration_s is not None:
        timers.append(loop.call_later(end.duration_s, stop, "duration"))

    gone: list[bool] = []  # said that the target is gone

    def watch_recorder() -> None:
        if recorder.broken:  # nothing can be recorded any more: cut the run now
            console.print("[bold red]problem:[/] the events.db writer stopped; cutting the run")
            scheduler.stop()
            launcher.cancel()
            return
        if launcher.stats.target_gone and not gone:
            gone.append(True)
            console.print(f"[bold red]problem:[/] {_gone_message(cfg)}")
            stop("target_unreachable")
        else:
            recorder.flush()  # rows of a quiet spell (long think times) reach the file too
            if end.early_stop is not None and not scheduler.stopping:
                why = end.early_stop.verdict(recorder.path, scheduler.clock() / 1e9)
                if why is not None:
                    console.print(f"[yellow]early stop:[/] {why}")
                    recorder.notice("early_stop", why, scheduler.clock(), {})
                    stop("early_stop")
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
    if launcher.stats.target_gone and end_reason == "completed":
        if not gone:
            console.print(f"[bold red]problem:[/] {_gone_message(cfg)}")
        end_reason = "target_unreachable"
    if launcher.exhausted and end_reason == "completed":
        end_reason = "max_requests"
    notice = None
    if end_reason == "completed" and scheduler.ran_out_ns is not None:
        notice = ran_out_notice(
            cfg, scheduler.ran_out_ns, scheduler.started, requests_reached=launcher.exhausted
        )
    if notice is not None:
        message, data = notice
        console.print(f"[yellow]notice:[/] {message}")
        recorder.notice("workload_ran_out", message, scheduler.ran_out_ns or 0, data)
    return end_reason


def _gone_message(cfg: RunConfig) -> str:
    wait = cfg.session.outage.max_wait_s
    return (
        f"the target has not answered for {wait:g} s (session.outage.max_wait_s); "
        "the run ends with what it measured before"
    )


def _event_loop_runner() -> Any:
    """`uvloop.run` (else `asyncio.run`), with Python's own SIGINT handler while it runs.

    Why: asyncio's runner takes a Ctrl-C over only from that handler; it then cancels the main
    task and raises KeyboardInterrupt once the task has unwound. The entry point's handler
    would raise it inside whatever callback the loop was in: in a transport's `data_received`
    uvloop prints a "Fatal error on transport" traceback, and the probe of the server reports
    a connection error. The run itself takes SIGINT over for its graceful stop (`_run_async`).
    """
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - platforms without uvloop
        runner = asyncio.run

    def run(main: Any) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return runner(main)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return runner(main)
        finally:
            signal.signal(signal.SIGINT, previous)

    return run


def execute(
    cfg: RunConfig,
    *,
    base_dir: Path,
    out: Path | None = None,
    console: Console | None = None,
    live: bool = True,
    html: bool = True,
    early_stop: EarlyStop | None = None,
) -> Path:
    """Run a benchmark; return its run folder (config.yaml, events.db, summary.json).

    Everything that can refuse the run (the input, the server, the engine) is checked before
    the run folder is made; a failure after it and before the first session removes it.
    `html=False`: no report.html (see `write_report`); `early_stop`: ends the run once it
    says the outcome is known (its reason is a notice, the end reason `early_stop`).
    """
    console = console or default_console()
    cfg, said = resolve_limits(cfg)
    if said is not None:
        console.print(said)
    check_api_fits_workload(cfg, base_dir)
    ca_pem = read_ca_pem(cfg, base_dir)
    headers = {**cfg.target.headers, **auth_headers(cfg)}
    run = _event_loop_runner()
    target: Target | None = None
    builtin = None
    procs = None
    pool: Pool | None = None
    if cfg.engine.kind == "local" and cfg.engine.worker_count() > 1:
        procs = ProcessPool(cfg.engine.worker_count())  # they import while we probe and load
    try:
        url = cfg.target.url
        if url is None:
            builtin, url = start_builtin_sim(cfg.target.sim_args)
            console.print(f"started the built-in simulator at {url}")
        target = run(
            probe(url, cfg.target.model, headers, verify_tls=cfg.target.verify_tls, ca_pem=ca_pem)
        )
        target.builtin = builtin
        if builtin is None:
            console.print(f"API root: {target.url} (model {target.model})")
        sizer = run(text_sizer(cfg, target, headers, base_dir, ca_pem))
        stream, start_times = open_workload(cfg, base_dir, sizer)
        if not cfg.target.verify_tls:
            console.print("[yellow]warning:[/] TLS certificates are not verified")
        max_ctx = cfg.session.max_context_tokens or target.max_model_len
        salt = run_salt() if cfg.cache.salt else None
        specs = _specs(cfg, target, max_ctx, sizer, ca_pem, salt)
        pool = _pool(cfg, specs, procs)
        procs = None  # the pool's now, closed by the run
        run_dir = new_folder(cfg, out)
        recorder: EventRecorder | None = None
        try:
            resolved = cfg.redacted()
            resolved["resolved"] = {
                "url": target.url,
                "model": target.model,
                "max_model_len": target.max_model_len,
                "length_source": sizer.source,
                "cache_salt": salt,
                "metrics_url": metrics_url(target.url, cfg.target.metrics_url)
                if cfg.target.metrics_interval_s > 0
                else None,
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
        except BaseException:  # (a Ctrl-C) before the run began: nothing of it is kept
            if recorder is not None:  # (else its writer keeps this process from exiting)
                with contextlib.suppress(EngineError):
                    recorder.close()
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        reason = "crashed"
        began = False

        def mark_begun() -> None:
            nonlocal began
            began = True

        discard = False
        try:
            run_async = _run_async(
                cfg,
                specs,
                pool,
                stream,
                start_times,
                recorder,
                console,
                live,
                mark_begun,
                early_stop,
            )
            pool = None  # closed by the run
            reason = run(run_async)
        except KeyboardInterrupt:
            reason = "interrupted"
        except (InputError, TargetError, EngineError):
            discard = not began
            raise
        finally:
            recorder.close()
            if discard:
                shutil.rmtree(run_dir, ignore_errors=True)
            else:
                recorder.end_run(reason)
        write_report(run_dir, console, html=html)
        api = api_for(cfg.target)
        unserved = unserved_api(run_dir / "events.db", api.name, target.url + api.path)
        if unserved is not None:
            raise TargetError(unserved)
        return run_dir
    finally:
        if procs is not None:
            procs.discard()
        if isinstance(pool, ProcessPool):
            pool.discard()
        elif pool is not None:
            run(pool.close())
        if target is not None:
            target.close()
        elif builtin is not None:
            Target(url="", model="", max_model_len=None, builtin=builtin).close()
