"""Waiting out an unreachable target: a backoff per session and one circuit breaker per worker.

Why: a refused connection fails in a millisecond, so a session that treated it as a failed
turn went through its conversation, and the closed loop through the whole workload, in a
tight loop while a server restarted, and then measured nothing once it was back. Here an
attempt that never reached a server does not use up the turn: the session backs off
(jittered, capped) and tries again; once `breaker_after` such attempts in a row fail, the
breaker opens and every session of the worker waits behind one probe instead of each failing
its turns. When the probe is answered the sessions resume spread over `resume_spread_s`; when
the wait passes `max_wait_s` the worker gives up and the run ends, saying so.

The breaker's changes are recorded as `outages` rows (down, back, gave_up); `metrics/` pairs
them into windows and merges the workers' windows into the run's outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from turnbench.client import attempt as ak
from turnbench.client.attempt import Attempt
from turnbench.config import OutageConfig
from turnbench.record.schema import OutageEvent

NS = 1_000_000_000


class _Recorder(Protocol):
    def record(self, row: Any) -> None: ...


def unreachable(att: Attempt) -> bool:
    """Whether the attempt never reached a server: refused, not resolved, no connection in
    time, or reset before any byte of a response."""
    kind = att.error_kind
    return kind == ak.CONNECT_ERROR or (kind == ak.RESET and att.http_status is None)


class OutageGuard:
    """The target's reachability as one worker's sessions see it."""

    def __init__(
        self,
        cfg: OutageConfig,
        clock: Callable[[], int],
        probe: Callable[[], Awaitable[bool]],
        recorder: Callable[[], _Recorder],
        worker: int,
        on_give_up: Callable[[], None],
    ) -> None:
        """`probe`: True when the target answers at all; `recorder`: where rows go now (a
        worker's outbox changes with every batch)."""
        self.cfg = cfg
        self._clock = clock
        self._probe = probe
        self._recorder = recorder
        self._worker = worker
        self._on_give_up = on_give_up
        self.open = False
        """The breaker: while open, sessions send nothing and wait for the probe."""
        self.gave_up = False
        self._streak = 0
        self._streak_start_ns = 0
        self._failed = 0
        self._down_ns = 0
        self._waiting = 0
        self._back: asyncio.Future[bool] | None = None
        self._prober: asyncio.Task[None] | None = None

    def succeeded(self) -> None:
        """An attempt was answered: the streak ends (and an open breaker closes)."""
        self._streak = 0
        if self.open:
            self._close(self._clock())

    def failed(self, att: Attempt) -> None:
        """An attempt did not reach the target; enough in a row open the breaker."""
        if self._streak == 0:
            self._streak_start_ns = att.t_sent_ns
        self._streak += 1
        if self.open:
            self._failed += 1
        elif self._streak >= self.cfg.breaker_after and not self.gave_up:
            self._open()

    async def wait(self, tries: int, since_ns: int, rng: random.Random) -> bool:
        """Wait before a session tries again after its `tries`-th unreachable attempt of a
        turn (0: it is about to send while the breaker is open); False when it should not:
        the worker gave up, or this turn has waited since `since_ns` longer than the limit."""
        if self.gave_up:
            return False
        if not self.open:
            step = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** max(tries - 1, 0))
            await asyncio.sleep(step * rng.uniform(0.5, 1.0))
        if self.open and self._back is not None:
            self._waiting += 1
            try:
                back = await asyncio.shield(self._back)
            finally:
                self._waiting -= 1
            if not back:
                return False
            await asyncio.sleep(rng.uniform(0.0, self.cfg.resume_spread_s))
        within = self._clock() - since_ns <= self.cfg.max_wait_s * NS
        return within and not self.gave_up

    def close(self) -> None:
        """Stop probing (the worker closes)."""
        if self._prober is not None:
            self._prober.cancel()

    def _open(self) -> None:
        self.open = True
        self._down_ns = self._streak_start_ns
        self._failed = self._streak
        self._back = asyncio.get_running_loop().create_future()
        self._recorder().record(OutageEvent(self._worker, "down", self._down_ns, 0, 0))
        self._prober = asyncio.create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """One probe at a time, jittered and capped, until the target answers or the wait
        passes its limit."""
        delay = self.cfg.backoff_s
        rng = random.Random(self._worker)
        limit_ns = int(self.cfg.max_wait_s * NS)
        while self.open:
            if self._clock() - self._down_ns > limit_ns:
                self._give_up()
                return
            with contextlib.suppress(Exception):
                if await self._probe():
                    if self.open:
                        self._close(self._clock())
                    return
            await asyncio.sleep(delay * rng.uniform(0.5, 1.0))
            delay = min(delay * 2, self.cfg.probe_max_interval_s)

    def _close(self, t_ns: int) -> None:
        self._end("back", t_ns, True)
        if self._prober is not None and self._prober is not asyncio.current_task():
            self._prober.cancel()

    def _give_up(self) -> None:
        self.gave_up = True
        self._end("gave_up", self._clock(), False)
        self._on_give_up()

    def _end(self, kind: str, t_ns: int, back: bool) -> None:
        self.open = False
        self._streak = 0
        row = OutageEvent(self._worker, kind, t_ns, self._failed, self._waiting)
        self._recorder().record(row)
        if self._back is not None and not self._back.done():
            self._back.set_result(back)
