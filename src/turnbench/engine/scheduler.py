"""Decides WHEN sessions start: open-loop arrivals or a fixed number of users.

Why two loops: `parallel` and `session-rate` start sessions when a pacer says they are due,
whatever the server does (open loop); `users` and `sequential` hold a number of users
constant, each starting its next conversation when the last one ends (closed loop). WHERE a
session plays is the launcher's business (this process, worker processes, or Ray actors).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Protocol

from turnbench.config import LoadConfig
from turnbench.engine.player import NS, LiveStats
from turnbench.engine.worker import SessionStart
from turnbench.pacing.arrivals import AllAtOnce, Constant, Gamma, Pacer, Poisson, Recorded
from turnbench.pacing.clock import RunClock
from turnbench.pacing.gates import Gate
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


def make_pacer(load: LoadConfig, rng: random.Random, start_times: list[float] | None) -> Pacer:
    """The arrival process of an open-loop mode."""
    if load.mode == "parallel":
        return AllAtOnce(load.sessions if load.sessions is not None else 1 << 62)
    if load.arrival == "trace":
        return Recorded(start_times or [], load.time_scale)
    assert load.rate is not None
    if load.arrival == "constant":
        return Constant(load.rate)
    if load.arrival == "gamma":
        return Gamma(load.rate, load.burstiness, rng)
    return Poisson(load.rate, rng)


class Scheduler:
    """Starts sessions from a conversation stream through a launcher, and waits for them."""

    def __init__(
        self,
        load: LoadConfig,
        seed: int,
        launcher: Launcher,
        conversations: Iterator[Conversation],
        clock: RunClock,
        *,
        start_times: list[float] | None = None,
    ) -> None:
        self.load = load
        self.launcher = launcher
        self.conversations = conversations
        self.clock = clock
        self.start_times = start_times
        self.rng = random.Random(seed)
        self.session_gate = Gate(load.max_sessions, clock)
        self.stopping = False
        self._running: set[asyncio.Future[int]] = set()
        self._started = 0
        self.ran_out_ns: int | None = None
        """When the workload had no conversation left to start (run ns), if it ran out."""

    def _next(self) -> tuple[int, Conversation] | None:
        if self.stopping or self.launcher.exhausted:
            return None
        if self.load.sessions is not None and self._started >= self.load.sessions:
            return None
        conversation = next(self.conversations, None)
        if conversation is None:
            if self.ran_out_ns is None:
                self.ran_out_ns = self.clock()
            return None
        self._started += 1
        return self._started - 1, conversation

    @property
    def started(self) -> int:
        """Sessions started so far."""
        return self._started

    def _ended(self, session: asyncio.Future[int]) -> None:
        self._running.discard(session)
        self.session_gate.release()

    async def arrivals(self) -> None:
        """Open loop: start each session when the pacer says it is due.

        Sessions are handed to a worker up to the launcher's lead before they are due, a
        window of them at each wake-up, so neither this loop's timer nor the hop to the
        worker delays them: the worker's own timer starts each one on time. With a session
        cap (`max_sessions`), a session takes its place only when due (no lead), so a place
        is never held by a session that has not started.
        """
        load = self.load
        pacer = make_pacer(load, self.rng, self.start_times)
        lead = 0 if self.session_gate.limit else self.launcher.lead_ns
        window = lead // 4
        k = 0
        while not self.stopping:
            due = pacer.due(k)
            if due is None or (load.duration_s is not None and due >= load.duration_s):
                break
            t_due = int(due * NS)
            if t_due - lead > self.clock():
                await self.clock.sleep_until(t_due - lead + window)
                if self.stopping:
                    break
            wait = await self.session_gate.acquire()
            nxt = self._next()
            if nxt is None:
                self.session_gate.release()
                break
            session = self.launcher.launch(SessionStart(*nxt, t_due, wait))
            self._running.add(session)
            session.add_done_callback(self._ended)
            k += 1
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _user(self) -> None:
        """One user. Its next conversation is due the moment the last one ended (as the
        worker recorded it), so the time the news takes to reach this loop, and any wait
        for a session slot, count as schedule lag rather than vanishing."""
        t_free = self.clock()
        if self.launcher.chains and self.load.chains_sessions:
            await self._chained_user(t_free)
            return
        while True:
            wait = await self.session_gate.acquire()
            nxt = self._next()
            if nxt is None:
                self.session_gate.release()
                return
            try:
                t_free = await self.launcher.launch(SessionStart(*nxt, t_free, wait))
            finally:
                self.session_gate.release()

    async def _chained_user(self, t_free: int) -> None:
        """One user whose next conversation waits on the worker playing its current one,
        and starts there when that ends (no round trip through this loop in between). A
        conversation of a shared-prefix group goes to its group's worker instead, once the
        current one ended."""
        nxt = self._next()
        if nxt is None:
            return
        index, conversation = nxt
        ended = self.launcher.launch(SessionStart(index, conversation, t_free, 0))
        while (nxt := self._next()) is not None:
            if nxt[1].group is None:
                following = self.launcher.launch(SessionStart(*nxt, self.clock(), 0, index))
                await ended
            else:  # it belongs on its shared-prefix group's worker: handed over at the end
                following = self.launcher.launch(SessionStart(*nxt, await ended, 0))
            index, ended = nxt[0], following
        await ended

    async def users(self, count: int) -> None:
        """Closed loop: `count` users, each playing one conversation after another."""
        await asyncio.gather(*(self._user() for _ in range(count)))

    async def run(self) -> None:
        """Run the configured mode until the workload, a limit or a stop ends it."""
        if self.load.mode in ("parallel", "session-rate"):
            await self.arrivals()
        else:
            await self.users(1 if self.load.mode == "sequential" else self.load.users)

    def stop(self) -> None:
        """Start no more sessions; sessions in flight follow the end policy."""
        self.stopping = True
        self.launcher.stop()
