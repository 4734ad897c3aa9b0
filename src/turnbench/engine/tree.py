"""The children of one playing session: sub-agents and forks started after the turn each
follows and awaited by the turn that joins them.

Why apart from the player: the player plays one session's turns; this holds the tree around
it (each child played by the same `play_session`, on the same worker, so every branch of an
agent runs on its owner and shares its ideal-cache registry).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from turnbench.record.schema import SessionRecord
from turnbench.session import Session
from turnbench.workload.conversation import Child

if TYPE_CHECKING:
    from turnbench.engine.player import RunContext

NS = 1_000_000_000


PlaySession = Callable[..., Coroutine[Any, Any, SessionRecord | None]]
"""The player's `play_session` (ctx, session, due time, child=, cut_ns=)."""


def _child_session(ctx: RunContext, parent: Session, number: int, child: Child) -> Session:
    """Session `number` (1-based) of the children of `parent`: its id extends the parent's,
    and its random stream depends on that id only."""
    sid = f"{parent.session_id}.{number}"
    rng = random.Random(f"{ctx.cfg.seed}:{sid}")
    if child.fork:
        session = parent.fork(sid, child.plan, rng)
    else:
        session = Session(
            sid,
            child.plan,
            parent.cfg,
            max_context_tokens=parent.max_context_tokens,
            rng=rng,
            sizer=ctx.sizer,
            salt=ctx.salt,
            registry=ctx.registry,
        )
    session.task_id = parent.task_id
    session.parent_id = parent.session_id
    session.depth = parent.depth + 1
    session.branch = number
    session.kind = "fork" if child.fork else "subagent"
    return session


class Children:
    """The sub-agents and forks of one playing session: started after the turn each follows,
    awaited by the turn that joins it, and all awaited before the session's row is written
    (an agent task ends when its whole tree has)."""

    def __init__(
        self,
        ctx: RunContext,
        session: Session,
        t_start_ns: int,
        cut_ns: int | None,
        play: PlaySession,
    ) -> None:
        """`play`: the player's `play_session`, which plays each child (and its children)."""
        self.ctx = ctx
        self.play = play
        self.session = session
        self.t_start_ns = t_start_ns
        self.cut_ns = cut_ns
        self.tasks: dict[int, asyncio.Task[SessionRecord | None]] = {}
        """Child number (1-based) -> its task."""
        self._after: dict[int, list[tuple[int, Child]]] = {}
        """Parent turn -> the children (number, plan) that start after it."""
        self._joins: dict[int, list[int]] = {}
        """Parent turn -> the children (numbers) it waits for."""
        for number, child in enumerate(session.conversation.children, 1):
            self._after.setdefault(child.after_turn, []).append((number, child))
            if child.join_turn is not None:
                self._joins.setdefault(child.join_turn, []).append(number)

    def start_after(self, turn_index: int, t_end_ns: int) -> None:
        """Start the children that follow turn `turn_index` (-1: the session's start), which
        ended (or started) at `t_end_ns`."""
        for number, child in self._after.get(turn_index, ()):
            due = t_end_ns + int(child.delay_s * NS)
            if child.at_s is not None:
                due = max(due, self.t_start_ns + int(child.at_s * NS))
            session = _child_session(self.ctx, self.session, number, child)
            self.tasks[number] = asyncio.create_task(
                self.play(self.ctx, session, due, child=child, cut_ns=self.cut_ns)
            )

    def joins(self, turn_index: int) -> bool:
        """Whether turn `turn_index` waits for children (a plain turn skips the await)."""
        return turn_index in self._joins

    async def join(self, turn_index: int) -> int:
        """Wait for the children turn `turn_index` waits for; when the last of them ended
        (run ns; 0 when none of them started)."""
        ended = 0
        for number in self._joins.get(turn_index, ()):
            task = self.tasks.get(number)
            if task is not None:
                ended = max(ended, await self._end_of(task))
        return ended

    async def finish(self) -> None:
        """Wait for every child started (background ones too)."""
        for task in self.tasks.values():
            await self._end_of(task)

    async def _end_of(self, task: asyncio.Task[SessionRecord | None]) -> int:
        rec = await asyncio.shield(task)
        return self.ctx.clock() if rec is None else rec.t_end_ns

    async def cancel(self) -> None:
        """Cut every child still playing (each records itself as unfinished)."""
        for task in self.tasks.values():
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
