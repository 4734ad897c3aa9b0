"""The coordinator's side of worker processes and Ray actors.

Why a coordinator: pacing and caps must hold for the run as a whole, so one place decides when
a session starts (the scheduler) and which worker owns it (least loaded, a shared-prefix group
kept together); after that, the worker plays every turn of it alone. Rows come back in batches
and go, still encoded, to the one recorder. A worker that dies is reported, its sessions are
recorded as `unfinished`, and the run goes on with the others.

Caps that act per request (`max_in_flight`, `max_requests`) are split between workers in
shares that add up to the total, so the total is never exceeded without a per-request
round trip between processes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from turnbench.engine.player import LiveStats
from turnbench.engine.worker import COUNTERS, SessionStart, batch_decoder
from turnbench.record.recorder import EventRecorder
from turnbench.record.schema import SessionRecord
from turnbench.workload.conversation import Conversation


class Channel(Protocol):
    """How the coordinator talks to one worker (a pipe, or Ray actor calls)."""

    def begin(self, wall_anchor_ns: int) -> None:
        """Start the worker's clock at the run's start (wall-clock nanoseconds)."""
        ...

    def start(self, order: SessionStart) -> None:
        """Ask the worker to start a session (with `after`: when that one of its own ends)."""
        ...

    def stop(self, at_ns: int) -> None:
        """Tell the worker the run ended at `at_ns` (run ns): sessions due later must not
        start, though they were handed over ahead of time."""
        ...

    def cancel(self) -> None:
        """Tell the worker to cut its sessions."""
        ...


def shares(total: int | None, parts: int) -> list[int | None]:
    """Split a cap into `parts` shares that add up to it (None stays None for all)."""
    if total is None:
        return [None] * parts
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass
class _Pending:
    worker: int
    conversation_id: str
    turns: int
    t_intended_ns: int
    gate_wait_ns: int
    done: asyncio.Future[int]


@dataclass
class _WorkerState:
    channel: Channel
    active: int = 0
    given: int = 0
    alive: bool = True
    drained: bool = False
    stats: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


class RemoteLauncher:
    """Assigns sessions to workers and collects what they send back."""

    def __init__(
        self,
        channels: Sequence[Channel],
        recorder: EventRecorder,
        clock: Callable[[], int],
        on_problem: Callable[[str], None],
        *,
        lead_s: float,
        waits_for_ends: bool,
    ) -> None:
        """`lead_s`: how long before their due time sessions are handed to the workers, at
        least the hop to a worker (see `Scheduler.arrivals`). `waits_for_ends`: workers report
        each session's end at once (`RunConfig.waits_for_session_ends`)."""
        self.workers = [_WorkerState(c) for c in channels]
        self.lead_ns = int(lead_s * 1e9)
        self.waits_for_ends = waits_for_ends
        self.recorder = recorder
        self.clock = clock
        self.on_problem = on_problem
        self._stats = LiveStats()
        self._pending: dict[int, _Pending] = {}
        self._groups: dict[str, int] = {}

    @property
    def stats(self) -> LiveStats:
        return self._stats

    def begin(self, wall_anchor_ns: int) -> None:
        """Start every worker's clock: called once all workers are up. What the coordinator
        allocated before leaves the cycle collector's view (see `WorkerCore.begin`)."""
        gc.freeze()
        for w in self.workers:
            w.channel.begin(wall_anchor_ns)

    @property
    def exhausted(self) -> bool:
        alive = [w for w in self.workers if w.alive]
        return not alive or all(w.drained for w in alive)

    def _pick(self, conversation: Conversation) -> int:
        alive = [i for i, w in enumerate(self.workers) if w.alive and not w.drained]
        if not alive:
            raise RuntimeError("no worker is left to run sessions")
        group = conversation.group
        if group is not None and self._groups.get(group) in alive:
            return self._groups[group]
        # least loaded: playing the fewest sessions, when ends are reported at once; else the
        # active counts lag by a batch period (a worker's count drops by 50 ms of sessions at
        # once, and it would take every new session for a while): the fewest given so far
        if self.waits_for_ends:
            chosen = min(alive, key=lambda i: (self.workers[i].active, self.workers[i].given))
        else:
            chosen = min(alive, key=lambda i: self.workers[i].given)
        if group is not None:
            self._groups[group] = chosen
        return chosen

    chains = True
    """A user's next conversation can wait on the worker playing its current one
    (`RunConfig.chains_sessions` says when the scheduler does that)."""

    def launch(self, order: SessionStart) -> asyncio.Future[int]:
        """Hand the session to its worker; the future gives when it ended (run ns, as the
        worker recorded it) once the worker reports it done. With `after` (a session still
        playing), it goes to that session's worker and starts when that one ends."""
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.exhausted:
            done.set_result(self.clock())
            return done
        conversation = order.conversation
        previous = self._pending.get(order.after) if order.after is not None else None
        if previous is None or not self.workers[previous.worker].alive:
            if order.after is not None:  # it ended already, or its worker died: start anew
                order = order._replace(after=None)
            w = self._pick(conversation)
        else:
            w = previous.worker
        state = self.workers[w]
        self._pending[order.number] = _Pending(
            w,
            conversation.id,
            len(conversation.turns),
            order.t_intended_ns,
            order.gate_wait_ns,
            done,
        )
        state.active += 1
        state.given += 1
        self._refresh_active()
        state.channel.start(order)
        return done

    def receive(self, payload: bytes) -> None:
        """Take one batch from a worker: record its rows, settle finished sessions."""
        batch = batch_decoder.decode(payload)
        if batch.row_count:
            self.recorder.forward(batch.rows, batch.row_count)
        state = self.workers[batch.worker]
        state.stats = batch.stats
        state.errors = batch.errors
        state.drained = batch.drained
        if batch.ttft is not None:
            self._stats.ttft.add_encoded(batch.ttft)
        for index, ended in batch.done:
            self._settle(index, ended)
        self._refresh_stats()

    def _settle(self, index: int, ended: int) -> None:
        pending = self._pending.pop(index, None)
        if pending is None:
            return
        self.workers[pending.worker].active -= 1
        if not pending.done.done():
            pending.done.set_result(ended)
        self._refresh_active()

    def worker_died(self, worker: int, why: str) -> None:
        """Record the dead worker's sessions as unfinished and carry on without it."""
        state = self.workers[worker]
        if not state.alive:
            return
        state.alive = False
        lost = [i for i, p in self._pending.items() if p.worker == worker]
        self.on_problem(
            f"worker {worker} died ({why}); {len(lost)} of its sessions are recorded as unfinished"
        )
        now = self.clock()
        for index in lost:
            p = self._pending[index]
            self.recorder.record(
                SessionRecord(
                    session_id=f"s{index}",
                    conversation_id=p.conversation_id,
                    worker=worker,
                    stage="main",
                    t_intended_ns=p.t_intended_ns,
                    t_start_ns=p.t_intended_ns,
                    t_end_ns=now,
                    gate_wait_ns=p.gate_wait_ns,
                    turns_planned=p.turns,
                    turns_ok=0,
                    turns_failed=0,
                    attempts=0,
                    dropped_messages=0,
                    outcome="unfinished",
                    task_id=f"s{index}",
                )
            )
            self._settle(index, now)

    def _refresh_active(self) -> None:
        self._stats.sessions_active = len(self._pending)

    def _refresh_stats(self) -> None:
        s = self._stats
        for name in COUNTERS:
            setattr(s, name, sum(w.stats.get(name, 0) for w in self.workers))
        errors: dict[str, int] = {}
        for w in self.workers:
            for kind, n in w.errors.items():
                errors[kind] = errors.get(kind, 0) + n
        s.errors = errors

    def stop(self) -> None:
        now = self.clock()
        for w in self.workers:
            if w.alive:
                w.channel.stop(now)

    def cancel(self) -> None:
        for w in self.workers:
            if w.alive:
                w.channel.cancel()
