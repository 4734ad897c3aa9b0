"""Runs sessions in this process: open-loop arrivals or a fixed number of users.

Why two loops: `parallel` and `session-rate` start sessions when a pacer says they are due,
whatever the server does (open loop); `users` and `sequential` hold a number of users
constant, each starting its next conversation when the last one ends (closed loop).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

from turnbench.config import LoadConfig
from turnbench.engine.player import NS, RunContext, play_session, sleep_until
from turnbench.pacing.arrivals import AllAtOnce, Constant, Gamma, Pacer, Poisson, Recorded
from turnbench.pacing.gates import Gate
from turnbench.session import Session
from turnbench.workload.conversation import Conversation


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


class LocalEngine:
    """Starts sessions from a conversation stream and waits for them, in one event loop."""

    def __init__(
        self,
        ctx: RunContext,
        conversations: Iterator[Conversation],
        *,
        max_context_tokens: int | None,
        start_times: list[float] | None = None,
    ) -> None:
        self.ctx = ctx
        self.conversations = conversations
        self.max_context_tokens = max_context_tokens
        self.start_times = start_times
        self.rng = random.Random(ctx.cfg.seed)
        self.session_gate = Gate(ctx.cfg.load.max_sessions, ctx.clock)
        self.tasks: set[asyncio.Task[object]] = set()
        self._started = 0

    def _next_session(self) -> Session | None:
        load = self.ctx.cfg.load
        if load.sessions is not None and self._started >= load.sessions:
            return None
        conversation = next(self.conversations, None)
        if conversation is None:
            return None
        k = self._started
        self._started += 1
        return Session(
            f"w{self.ctx.worker}-s{k}",
            conversation,
            self.ctx.cfg.session,
            max_context_tokens=self.max_context_tokens,
            rng=random.Random(f"{self.ctx.cfg.seed}:{self.ctx.worker}:{k}"),
        )

    async def _run_one(self, session: Session, t_intended: int, gate_wait: int) -> None:
        try:
            await play_session(self.ctx, session, t_intended, gate_wait)
        finally:
            self.session_gate.release()

    async def arrivals(self) -> None:
        """Open loop: start each session when the pacer says it is due."""
        ctx = self.ctx
        load = ctx.cfg.load
        pacer = make_pacer(load, self.rng, self.start_times)
        k = 0
        while not ctx.stopping:
            due = pacer.due(k)
            if due is None or (load.duration_s is not None and due >= load.duration_s):
                break
            t_due = int(due * NS)
            await sleep_until(ctx.clock, t_due)
            if ctx.stopping:
                break
            wait = await self.session_gate.acquire()
            session = self._next_session()
            if session is None:
                self.session_gate.release()
                break
            task = asyncio.create_task(self._run_one(session, t_due, wait))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            k += 1
        if self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def _user(self) -> None:
        ctx = self.ctx
        t_free = ctx.clock()
        while not ctx.stopping:
            wait = await self.session_gate.acquire()
            session = self._next_session()
            if session is None:
                self.session_gate.release()
                return
            try:
                await play_session(ctx, session, t_free, wait)
            finally:
                self.session_gate.release()
            t_free = ctx.clock()

    async def users(self, count: int) -> None:
        """Closed loop: `count` users, each playing one conversation after another."""
        tasks = [asyncio.create_task(self._user()) for _ in range(count)]
        self.tasks.update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        """Run the configured mode until the workload, a limit or a stop ends it."""
        load = self.ctx.cfg.load
        if load.mode in ("parallel", "session-rate"):
            await self.arrivals()
        else:
            await self.users(1 if load.mode == "sequential" else load.users)

    def cancel(self) -> None:
        """Cut every session in flight; their attempts are recorded as cancelled."""
        for task in list(self.tasks):
            task.cancel()
