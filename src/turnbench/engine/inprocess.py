"""Plays sessions in this process's event loop (`workers: 1`): no IPC on the hot path."""

from __future__ import annotations

import asyncio
import random

from turnbench.engine.player import LiveStats, RunContext, play_session
from turnbench.session import Session
from turnbench.workload.conversation import Conversation


def new_session(
    ctx: RunContext, index: int, conversation: Conversation, max_context_tokens: int | None
) -> Session:
    """Session number `index`; its id and random stream do not depend on where it runs."""
    return Session(
        f"s{index}",
        conversation,
        ctx.cfg.session,
        max_context_tokens=max_context_tokens,
        rng=random.Random(f"{ctx.cfg.seed}:{index}"),
        sizer=ctx.sizer,
    )


class InProcessLauncher:
    """Runs each session as a task of the current event loop."""

    def __init__(self, ctx: RunContext, max_context_tokens: int | None) -> None:
        self.ctx = ctx
        self.max_context_tokens = max_context_tokens
        self._tasks: set[asyncio.Task[object]] = set()

    @property
    def stats(self) -> LiveStats:
        return self.ctx.stats

    @property
    def exhausted(self) -> bool:
        return self.ctx.drained

    async def play(
        self, index: int, conversation: Conversation, t_intended_ns: int, gate_wait_ns: int
    ) -> None:
        """Play the session here; a cut cancels its task, which records it as unfinished."""
        session = new_session(self.ctx, index, conversation, self.max_context_tokens)
        task = asyncio.create_task(play_session(self.ctx, session, t_intended_ns, gate_wait_ns))
        self._tasks.add(task)
        try:
            await asyncio.wait({task})
        finally:
            self._tasks.discard(task)

    def stop(self) -> None:
        self.ctx.stopping = True

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
