"""Admission: at most `max_num_seqs` running sequences, the rest wait in a FIFO queue.

Why a hand-made queue rather than `asyncio.Semaphore`: the simulator must report how many
requests wait (`vllm:num_requests_waiting`), refuse new ones when a bounded queue is full
(429), and hand a freed slot to the oldest waiter, in order.
"""

from __future__ import annotations

import asyncio
from collections import deque


class QueueFull(Exception):
    """The waiting queue is at `max_waiting`: the request is refused with 429."""


class Scheduler:
    """Counts running sequences and queues the rest, first come first served."""

    def __init__(self, max_num_seqs: int, max_waiting: int | None) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_waiting = max_waiting
        self.running = 0
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiting)

    def admit(self) -> asyncio.Future[None] | None:
        """Take a slot now (returns None) or join the queue (returns a future to await).

        Why synchronous: the queue-full decision must happen before any response byte is
        sent, so the caller can still answer 429. Raises `QueueFull`.
        """
        if self.running < self.max_num_seqs and not self._waiting:
            self.running += 1
            return None
        if self.max_waiting is not None and len(self._waiting) >= self.max_waiting:
            raise QueueFull
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        return fut

    async def wait(self, fut: asyncio.Future[None] | None) -> None:
        """Wait for the slot promised by `admit`; a cancelled waiter leaves the queue."""
        if fut is None:
            return
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot arrived just as we were cancelled: give it back
            elif fut in self._waiting:
                self._waiting.remove(fut)
            raise

    def release(self) -> None:
        """Free a slot: hand it to the oldest live waiter, or lower the running count."""
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1
