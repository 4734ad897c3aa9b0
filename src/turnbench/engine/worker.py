"""A worker: owns the sessions it is given, plays every turn of them, ships rows back.

Why this split: the same core runs in a worker process (over a pipe) and in a Ray actor (over
actor calls). Session state never leaves the worker; what crosses the boundary is a "start
session" message one way and compact batches of rows, finished session numbers and counters
the other way, so the hot path (one request, its chunks) has no inter-process step at all.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import random
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

import msgspec

from turnbench.cache.registry import BlockRegistry
from turnbench.client.apis import api_for
from turnbench.client.fetch import fetch_json
from turnbench.client.transport import Transport
from turnbench.config import RunConfig
from turnbench.engine.outage import OutageGuard
from turnbench.engine.player import Recorder, RunContext, play_session
from turnbench.pacing.clock import RunClock
from turnbench.pacing.gates import Gate
from turnbench.record.recorder import Rows
from turnbench.record.schema import SessionRecord, WorkerRecord
from turnbench.session import Session
from turnbench.tokens.sizer import TextSizer
from turnbench.workload.conversation import Conversation


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to start: picklable, and free of secrets but the auth header."""

    worker: int
    config: dict[str, Any]
    url: str
    model: str
    max_context_tokens: int | None
    in_flight_limit: int | None
    max_requests: int | None
    auth_headers: dict[str, str]
    sizer: TextSizer = field(default_factory=TextSizer)
    """The run's text sizer, calibrated once by the coordinator (a frozen dataclass)."""
    ca_pem: str | None = None
    """The text of `target.ca_bundle`, read once by the coordinator: a Ray actor on another
    machine may not have the file, and a relative path means the config file's folder."""
    salt: str | None = None
    """The run's salt word (`cache.salt`), the same in every worker: prefixes shared inside
    the run stay shared."""


class SessionStart(NamedTuple):
    """An order to start session `number`: what the scheduler hands to the launcher, and
    the launcher through its channel to the worker that will play it (a named tuple: it
    pickles as one small tuple)."""

    number: int
    conversation: Conversation
    t_intended_ns: int
    gate_wait_ns: int
    after: int | None = None
    """Start when this session (on the same worker) ends, due at that end."""


R = TypeVar("R")


class Batch(msgspec.Struct, Generic[R]):
    """What a worker sends back every few milliseconds.

    Generic in its rows: a worker encodes `Batch[Rows]`; the coordinator decodes
    `Batch[msgspec.Raw]` and hands the rows, still encoded, to the events.db writer.
    """

    worker: int
    rows: R
    row_count: int
    done: list[tuple[int, int]]
    """Sessions that ended since the last batch: (session number, end time in run ns)."""
    stats: dict[str, int]
    errors: dict[str, int]
    drained: bool
    ttft: bytes | None = None
    """The TTFTs of the successes since the last batch, an encoded HdrHistogram."""


batch_encoder = msgspec.msgpack.Encoder()
batch_decoder = msgspec.msgpack.Decoder(Batch[msgspec.Raw])

COUNTERS = (
    "sessions_done",
    "requests_started",
    "requests_ok",
    "requests_failed",
    "output_tokens",
    "target_gone",
)
"""The `LiveStats` counters a batch carries; the coordinator sums them over workers."""


_ENDS_KEPT = 4096


class WorkerCore:
    """The sessions of one worker, in that worker's event loop."""

    def __init__(self, spec: WorkerSpec, recorder: Recorder | None = None) -> None:
        """`recorder`: where rows go in this process (the run's own worker); without one they
        wait in an outbox for `take_batch` (worker processes and Ray actors)."""
        self.spec = spec
        self.cfg = RunConfig.model_validate(spec.config)
        self._outbox = Rows()
        self._recorder: Recorder = recorder or self._outbox
        self._ships = recorder is None
        self._waits_for_ends = self.cfg.waits_for_session_ends
        """Then a batch goes out the moment a session ends; otherwise once a batch period is
        soon enough, and far cheaper."""
        self._chains = self._ships and self.cfg.chains_sessions
        """Whether a session's successor may arrive after it ended (worker processes and
        actors in a closed loop; the run's own worker never gets one)."""
        duration = self.cfg.duration_s
        self._run_end_ns = int(duration * 1e9) if duration is not None else 1 << 62
        """When the run ends by its duration (run ns): no conversation starts from then on,
        though the news of the end may not have arrived yet."""
        self._done: list[tuple[int, int]] = []
        self._tasks: dict[int, asyncio.Task[SessionRecord | None]] = {}
        self._successors: dict[int, SessionStart] = {}
        """Session number -> the session to start when it ends (a closed-loop user's next)."""
        self._ends: dict[int, int] = {}
        """When sessions ended whose successor has not arrived (yet): a successor is sent
        while its predecessor plays, so one arrives late only after a very short session.
        Some sessions never get one (a user's last, one followed by a shared-prefix group's
        conversation), so only the latest `_ENDS_KEPT` are kept."""
        self._transport: Transport | None = None
        self.clock = RunClock()
        """Nanoseconds since the run's start; its origin is set at `begin`."""
        self.ctx: RunContext | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def open(self) -> None:
        """Open the connection pool; the clock starts at `begin`."""
        spec = self.spec
        clock = self.clock
        cfg = self.cfg.model_copy(deep=True)
        cfg.load.max_requests = spec.max_requests
        self._transport = Transport(
            spec.url,
            headers=cfg.target.headers,
            timeouts=cfg.target.timeouts,
            clock=clock,
            verify_tls=cfg.target.verify_tls,
            ca_pem=spec.ca_pem,
            replica_header=cfg.target.replica_header,
            token_header=cfg.session.session_token_header,
        )
        await self._transport.__aenter__()
        self.ctx = RunContext(
            cfg=cfg,
            model=spec.model,
            transport=self._transport,
            api=api_for(cfg.target),
            recorder=self._recorder,
            clock=clock,
            in_flight=Gate(spec.in_flight_limit, clock),
            worker=spec.worker,
            auth_headers=spec.auth_headers,
            sizer=spec.sizer,
            salt=spec.salt,
            registry=BlockRegistry(cfg.cache.block_size, cfg.cache.ideal_capacity_mb)
            if cfg.cache.ideal
            else None,
        )
        self.ctx.outage = OutageGuard(
            cfg.session.outage,
            clock,
            self._probe,
            self._current_recorder,
            spec.worker,
            self._give_up,
        )

    def _current_recorder(self) -> Recorder:
        assert self.ctx is not None
        return self.ctx.recorder

    async def _probe(self) -> bool:
        """Whether the target answers at all (any HTTP status), for the outage breaker."""
        assert self.ctx is not None
        target = self.ctx.cfg.target
        await fetch_json(
            self.spec.url + "/models",
            headers=self.spec.auth_headers,
            timeout_s=min(target.timeouts.connect_s, 2.0),
            verify_tls=target.verify_tls,
            ca_pem=self.spec.ca_pem,
        )
        return True

    def _give_up(self) -> None:
        """The target stayed unreachable past `session.outage.max_wait_s`: this worker's
        sessions start no other turn, and the coordinator ends the run (`target_gone`)."""
        assert self.ctx is not None
        self.ctx.drained = True
        self.ctx.stats.target_gone = 1
        self.wake()

    def begin(self, wall_anchor_ns: int) -> None:
        """Start this worker's clock at the run's start, given as wall-clock time.

        Why wall clock: workers on other machines share no monotonic clock; each derives its
        own monotonic origin from the run's wall-clock start, so rows of all workers line up
        (to the precision the machines' clocks agree: NTP on a cluster).

        Everything allocated before the run (modules, config, workload, connections) leaves
        the cycle collector's view (`gc.freeze`): a full collection that walks it all stops
        the event loop, and every session due meanwhile is late.
        """
        gc.freeze()
        self.clock.origin_ns = time.monotonic_ns() - (time.time_ns() - wall_anchor_ns)
        self._recorder.record(
            WorkerRecord(
                worker=self.spec.worker,
                pid=os.getpid(),
                host=socket.gethostname(),
                wall_anchor_ns=wall_anchor_ns,
                mono_anchor_ns=self.clock.origin_ns,
            )
        )

    def start(self, order: SessionStart) -> asyncio.Task[SessionRecord | None] | None:
        """Start the ordered session here when it is due; every one of its turns will run
        here.

        With `after`, it is due when session `after` ends (at the end that session
        recorded), and starts then; None is returned while it waits for that.
        Its id and random stream depend on its number only, not on the worker that plays it.
        """
        ctx = self.ctx
        assert ctx is not None
        index, conversation, t_intended_ns, gate_wait_ns, after = order
        if after is not None:
            if after in self._tasks:
                self._successors[after] = order
                return None
            t_intended_ns = self._ends.pop(after, t_intended_ns)
            if ctx.stopping or ctx.drained or t_intended_ns >= self._run_end_ns:
                self._report_end(index, t_intended_ns)  # a new conversation: never after the end
                return None
        session = Session(
            f"s{index}",
            conversation,
            ctx.cfg.session,
            max_context_tokens=self.spec.max_context_tokens,
            rng=random.Random(f"{ctx.cfg.seed}:{index}"),
            sizer=ctx.sizer,
            salt=ctx.salt,
            registry=ctx.registry,
        )
        task = asyncio.create_task(play_session(ctx, session, t_intended_ns, gate_wait_ns))
        self._tasks[index] = task
        task.add_done_callback(functools.partial(self._finish, index))
        return task

    def _finish(self, index: int, task: asyncio.Task[SessionRecord | None]) -> None:
        self._tasks.pop(index, None)
        end = self.ended_at(task)
        successor = self._successors.pop(index, None)
        if successor is not None:
            self.start(successor._replace(t_intended_ns=end))
        elif self._chains:
            self._ends[index] = end
            if len(self._ends) > _ENDS_KEPT:
                del self._ends[next(iter(self._ends))]
        self._report_end(index, end)

    def _report_end(self, index: int, end: int) -> None:
        """Tell the coordinator session `index` is over (or will never start)."""
        if self._ships:
            self._done.append((index, end))
            if self._waits_for_ends:
                self.wake()

    def ended_at(self, task: asyncio.Task[SessionRecord | None]) -> int:
        """When a finished session task's session ended (run ns): as its row says, or now
        when it has none (cut before it started, or failed)."""
        rec = None if task.cancelled() or task.exception() is not None else task.result()
        return self.clock() if rec is None else rec.t_end_ns

    def wake(self) -> None:
        """Let `next_batch` return now: a closed-loop user is waiting for the news that its
        session ended, or the worker is leaving."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self, period_s: float) -> bytes | None:
        """The next batch: at once if a session the coordinator waits for ended since the
        last one, else after `period_s` or the first `wake`, whichever comes first.

        Why a bare future and timer (not `asyncio.wait_for` on an event): the news that a
        session ended must cross the busy event loop in one step, not three.
        """
        if not (self._done and self._waits_for_ends):
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(period_s, self.wake)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        return self.take_batch()

    def stop(self, at_ns: int | None = None) -> None:
        """The run ended at `at_ns` (now if None): no new turns unless the end policy is
        drain, and no session due later starts."""
        assert self.ctx is not None
        self.ctx.stopping = True
        self.ctx.stopped_at_ns = self.clock() if at_ns is None else at_ns

    def cancel(self) -> None:
        """Cut every session in flight (each records itself as unfinished)."""
        for task in list(self._tasks.values()):
            task.cancel()

    @property
    def active(self) -> int:
        return len(self._tasks)

    def take_batch(self) -> bytes | None:
        """Everything recorded since the last call, encoded; None when there is nothing."""
        assert self.ctx is not None
        rows = self._outbox
        stats = self.ctx.stats
        if not (len(rows) or self._done):
            return None
        batch = Batch(
            worker=self.spec.worker,
            rows=rows,
            row_count=len(rows),
            done=self._done,
            stats={k: getattr(stats, k) for k in COUNTERS},
            errors=dict(stats.errors),
            drained=self.ctx.drained,
            ttft=stats.ttft.take_encoded(),
        )
        self._outbox = Rows()
        self.ctx.recorder = self._outbox
        self._done = []
        return batch_encoder.encode(batch)

    async def close(self) -> None:
        """Close the connection pool and the clock's timer (after the sessions ended)."""
        if self.ctx is not None and self.ctx.outage is not None:
            self.ctx.outage.close()
        self.clock.close()
        if self._transport is not None:
            await self._transport.__aexit__(None, None, None)
