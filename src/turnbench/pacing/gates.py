"""Concurrency caps (`max_sessions`, `max_in_flight`) that measure how long work waited.

Why a gate and not a bare semaphore: a request held back by a cap is still late against its
schedule, and the report must say so; the gate hands back the wait in nanoseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Gate:
    """A FIFO cap on concurrent holders; unlimited when `limit` is None."""

    def __init__(self, limit: int | None, clock: Callable[[], int]) -> None:
        self.limit = limit
        self._sem = asyncio.Semaphore(limit) if limit else None
        self._clock = clock
        self.holders = 0

    async def acquire(self) -> int:
        """Wait for a place; return the nanoseconds waited."""
        if self._sem is None:
            self.holders += 1
            return 0
        if not self._sem.locked():
            await self._sem.acquire()
            self.holders += 1
            return 0
        t0 = self._clock()
        await self._sem.acquire()
        self.holders += 1
        return self._clock() - t0

    def release(self) -> None:
        """Give the place back."""
        self.holders -= 1
        if self._sem is not None:
            self._sem.release()
