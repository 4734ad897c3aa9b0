"""Decides WHEN sessions start: open-loop arrivals or a fixed number of users, stage after
stage.

Why two loops: `parallel` and `session-rate` start sessions when a pacer says they are due,
whatever the server does (open loop); `users` and `sequential` hold a number of users
constant, each starting its next conversation when the last one ends (closed loop). The mode
models build their pacers (`pacing/modes.py`); a run's stages come from `pacing/stages.py`.
WHERE a session plays is the launcher's business (this process, worker processes, or Ray
actors).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Protocol

from turnbench.config import RunConfig
from turnbench.engine.player import NS, LiveStats
from turnbench.engine.worker import SessionStart
from turnbench.pacing.clock import RunClock
from turnbench.pacing.gates import Gate
from turnbench.pacing.stages import Step, steps
from turnbench.workload.conversation import Conversation


class Launcher(Protocol):
    """Plays sessions somewhere; every turn of a session runs where the session started."""

    @property
    def stats(self) -> LiveStats:
        """Live counters for the progress line."""
        ...

    def launch(self, order: SessionStart) -> asyncio.Future[int]:
        """Start the ordered session (it plays when due); the future gives, once its
        sessions row is recorded, the time it ended (run ns, on the clock of whoever played
        it). A plain future, not a task: an open loop starts thousands a second.

        `order.after` (only where `chains`): start it where that session plays, the moment
        it ends, due at its end; if it can never start, the future gives that end too."""
        ...

    @property
    def chains(self) -> bool:
        """Whether `launch` takes `after`."""
        ...

    @property
    def exhausted(self) -> bool:
        """True once the request limit is reached: no more sessions should start."""
        ...

    @property
    def lead_ns(self) -> int:
        """How long before its due time a session may be handed over: the hop to where it
        plays (0 in this process). The player sleeps until the session is due."""
        ...

    def stop(self) -> None:
        """The run is ending: sessions start no new turn unless the end policy is drain."""
        ...

    def cancel(self) -> None:
        """Cut every session in flight; their attempts are recorded as cancelled."""
        ...


class Scheduler:
    """Starts sessions from a conversation stream through a launcher, stage after stage,
    and waits for them."""

    def __init__(
        self,
        cfg: RunConfig,
        launcher: Launcher,
        conversations: Iterator[Conversation],
        clock: RunClock,
        *,
        start_times: list[float] | None = None,
    ) -> None:
        self.cfg = cfg
        self.steps = steps(cfg)
        self.launcher = launcher
        self.conversations = conversations
        self.clock = clock
        self.start_times = start_times
        self.rng = random.Random(cfg.seed)
        self.session_gate = Gate(cfg.load.max_sessions, clock)
        self.stopping = False
        self._running: set[asyncio.Future[int]] = set()
        self._started = 0
        self._step = self.steps[0]
        self._step_started = 0
        """Sessions the current stage started."""
        self._changed = asyncio.Event()
        """Set when the stage changes or the run stops; replaced at every change."""
        self._over = False
        """Set once the run is past its last stage: no user waits for another."""
        self.ran_out_ns: int | None = None
        """When the workload had no conversation left to start (run ns), if it ran out."""

    @property
    def staged(self) -> bool:
        """Whether the run has `stages:` (else one stage, ended by `load:`'s limits)."""
        return self.cfg.stages is not None

    def _next(self, step: Step) -> tuple[int, Conversation] | None:
        if self.stopping or self.launcher.exhausted or step is not self._step:
            return None
        if step.end.sessions_reached(self._step_started):
            return None
        end_ns = step.end_ns
        if self.staged and end_ns is not None and self.clock() >= end_ns:
            return None
        conversation = next(self.conversations, None)
        if conversation is None:
            if self.ran_out_ns is None:
                self.ran_out_ns = self.clock()
            return None
        self._started += 1
        self._step_started += 1
        return self._started - 1, conversation

    @property
    def started(self) -> int:
        """Sessions started so far."""
        return self._started

    def _ended(self, session: asyncio.Future[int]) -> None:
        self._running.discard(session)
        self.session_gate.release()

    async def arrivals(self, step: Step) -> None:
        """Open loop: start each session of the stage when its pacer says it is due.

        Sessions are handed to a worker up to the launcher's lead before they are due, a
        window of them at each wake-up, so neither this loop's timer nor the hop to the
        worker delays them: the worker's own timer starts each one on time. With a session
        cap (`max_sessions`), a session takes its place only when due (no lead), so a place
        is never held by a session that has not started.
        """
        pacer = step.mode.pacer(self.rng, self.start_times)
        lead = 0 if self.session_gate.limit else self.launcher.lead_ns
        window = lead // 4
        k = 0
        while not self.stopping:
            due = pacer.due(k)
            if due is None or step.end.due_too_late(due):
                break
            t_due = step.start_ns + int(due * NS)
            if t_due - lead > self.clock():
                await self.clock.sleep_until(t_due - lead + window)
                if self.stopping:
                    break
            wait = await self.session_gate.acquire()
            nxt = self._next(step)
            if nxt is None:
                self.session_gate.release()
                break
            session = self.launcher.launch(SessionStart(*nxt, t_due, wait))
            self._running.add(session)
            session.add_done_callback(self._ended)
            k += 1

    async def _user(self, slot: int) -> None:
        """One user, kept from stage to stage while a closed-loop stage has at least
        `slot + 1` users. Its next conversation is due the moment the last one ended (as the
        worker recorded it; at the earliest its stage's start), so the time the news takes
        to reach this loop, and any wait for a session slot, count as schedule lag rather
        than vanishing."""
        t_free = self.clock()
        if self.launcher.chains and self.cfg.chains_sessions:
            await self._chained_user(t_free)
            return
        while True:
            step = self._step
            if self.stopping or not step.mode.closed_loop or slot >= step.mode.user_count():
                return
            wait = await self.session_gate.acquire()
            nxt = self._next(step)
            if nxt is None:
                self.session_gate.release()
                ended = self._over or self.stopping or self.launcher.exhausted
                if ended or step is self.steps[-1]:
                    return
                if step is self._step:
                    await self._changed.wait()  # this stage is over: wait for the next
                continue
            try:
                due = max(t_free, step.start_ns)
                t_free = await self.launcher.launch(SessionStart(*nxt, due, wait))
            finally:
                self.session_gate.release()

    async def _chained_user(self, t_free: int) -> None:
        """One user whose next conversation waits on the worker playing its current one,
        and starts there when that ends (no round trip through this loop in between). A
        conversation of a shared-prefix group goes to its group's worker instead, once the
        current one ended. Only in a run of one stage (`RunConfig.chains_sessions`)."""
        step = self._step
        nxt = self._next(step)
        if nxt is None:
            return
        index, conversation = nxt
        ended = self.launcher.launch(SessionStart(index, conversation, t_free, 0))
        while (nxt := self._next(step)) is not None:
            if nxt[1].group is None:
                following = self.launcher.launch(SessionStart(*nxt, self.clock(), 0, index))
                await ended
            else:  # it belongs on its shared-prefix group's worker: handed over at the end
                following = self.launcher.launch(SessionStart(*nxt, await ended, 0))
            index, ended = nxt[0], following
        await ended

    async def run(self) -> None:
        """Play every stage in turn until the workload, a limit or a stop ends the run.

        A stage lasts its duration whatever its sessions do: its open-loop arrivals or its
        users stop starting sessions at its end, the next stage begins, and the sessions in
        flight continue (or are cut, `at_end: cut`). A run of one stage with no duration
        ends when its arrivals or its users are done, as `load:` says.
        """
        users: dict[int, asyncio.Task[None]] = {}
        work: list[asyncio.Task[None]] = []
        for step in self.steps:
            if self.stopping or self.launcher.exhausted:
                break
            self._enter(step)
            if step.mode.closed_loop:
                count = step.mode.user_count()
                for slot in range(count):  # a user of an earlier stage plays on
                    if slot not in users or users[slot].done():
                        users[slot] = asyncio.create_task(self._user(slot))
                stage_work = [users[slot] for slot in range(count)]
            else:
                stage_work = [asyncio.create_task(self.arrivals(step))]
                work.extend(stage_work)
            if step.end_ns is None or not self.staged:
                await asyncio.gather(*stage_work)
            else:
                await self._until(step.end_ns)
            if step.cut and step is not self.steps[-1] and not self.stopping:
                self.launcher.cancel()
        self._enter(None)
        await asyncio.gather(*users.values(), *work)
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    def _enter(self, step: Step | None) -> None:
        """Make `step` the current stage (None: the run is past its last) and wake the
        users waiting for it."""
        if step is not None:
            self._step, self._step_started = step, 0
        else:
            self._over = True
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, t_ns: int) -> None:
        """Sleep until `t_ns` (run ns), or until the run stops or reached its request limit
        (looked at every quarter second: no stage can start anything after it)."""
        while not self.stopping and not self.launcher.exhausted and self.clock() < t_ns:
            waiter = asyncio.ensure_future(self._changed.wait())
            sleeper = asyncio.ensure_future(
                self.clock.sleep_until(min(t_ns, self.clock() + NS // 4))
            )
            await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            sleeper.cancel()

    def stop(self) -> None:
        """Start no more sessions; sessions in flight follow the end policy."""
        self.stopping = True
        self._changed.set()
        self.launcher.stop()
