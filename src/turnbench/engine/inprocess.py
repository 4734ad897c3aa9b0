"""Plays sessions in this process's event loop (`workers: 1`): no IPC on the hot path.

The run's own worker is an ordinary `WorkerCore` whose rows go straight to the recorder.
"""

from __future__ import annotations

import asyncio

from turnbench.engine.player import LiveStats
from turnbench.engine.worker import SessionStart, WorkerCore
from turnbench.record.schema import SessionRecord


class InProcessLauncher:
    """Runs each session as a task of the current event loop, on one worker core."""

    def __init__(self, core: WorkerCore) -> None:
        assert core.ctx is not None, "open the core first"
        self.core = core
        self.ctx = core.ctx

    @property
    def stats(self) -> LiveStats:
        return self.ctx.stats

    @property
    def exhausted(self) -> bool:
        return self.ctx.drained

    lead_ns = 0
    """Sessions start in this loop: nothing to hand over ahead of time."""

    def launch(self, order: SessionStart) -> asyncio.Future[int]:
        """Play the session here; the future gives when it ended. A cut cancels its task,
        which records it as unfinished."""
        ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def settle(task: asyncio.Task[SessionRecord | None]) -> None:
            if not ended.done():  # a user cut while waiting cancels it
                ended.set_result(self.core.ended_at(task))

        assert order.after is None, "sessions are not chained in this process"
        task = self.core.start(order)
        assert task is not None  # only a successor (`after`) waits
        task.add_done_callback(settle)
        return ended

    chains = False
    """A user's next conversation starts from this loop anyway: nothing to chain."""

    def stop(self) -> None:
        self.core.stop()

    def cancel(self) -> None:
        self.core.cancel()
