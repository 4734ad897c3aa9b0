"""The run clock's sleeps: never before the due time, in every loop, with or without timerfd."""

from __future__ import annotations

import asyncio
import os
import random
import select
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from turnbench.pacing.clock import RunClock

MS = 1_000_000


def _run(loop_kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_kind == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


async def _sleepers(clock: RunClock, dues: list[int]) -> list[tuple[int, int]]:
    """(due, woke) on the run clock for one sleeper per due time, all sleeping at once."""

    async def sleeper(due: int) -> tuple[int, int]:
        await clock.sleep_until(due)
        return due, clock()

    return list(await asyncio.gather(*(sleeper(d) for d in dues)))


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
@pytest.mark.parametrize("timerfd", [True, False], ids=["timerfd", "loop-timers"])
def test_sleepers_never_wake_before_they_are_due(loop_kind: str, timerfd: bool) -> None:
    rng = random.Random(7)
    woke: list[tuple[int, int]] = []

    async def main() -> None:
        clock = RunClock(timerfd=timerfd)
        now = clock()
        # Sub-millisecond spacing, duplicates, and some already due.
        dues = [now + rng.randrange(-2 * MS, 30 * MS) for _ in range(400)]
        dues += [now + 5 * MS] * 20
        woke.extend(await _sleepers(clock, dues))
        # Which way this loop sleeps (asked directly: on a machine that stalled for 30 ms
        # every sleeper above was already due and none needed a timer).
        assert (clock._alarm_here() is not None) == (timerfd and sys.platform == "linux")
        clock.close()

    _run(loop_kind, main)
    assert len(woke) == 420
    early = [(due, at) for due, at in woke if at < due]
    assert not early, f"{len(early)} sleepers woke early, e.g. {early[:3]}"


@pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux-only")
def test_a_cancelled_sleeper_leaves_the_others_on_time_and_the_timer_disarmed() -> None:
    async def main() -> None:
        clock = RunClock()
        # Due well ahead: this VM has paused a process for 16 ms.
        first = asyncio.ensure_future(clock.sleep_until(clock() + 60 * MS))
        t_second = clock() + 120 * MS
        second = asyncio.ensure_future(clock.sleep_until(t_second))
        await asyncio.sleep(0)
        first.cancel()
        await second
        assert clock() >= t_second
        alarm = clock._alarm
        assert alarm is not None
        # Nothing left to wake: the timerfd is disarmed, so it never turns readable again.
        time.sleep(0.01)
        readable, _, _ = select.select([alarm.timer.fd], [], [], 0)
        assert readable == []
        fd = alarm.timer.fd
        clock.close()
        with pytest.raises(OSError):
            os.fstat(fd)

    uvloop.run(main())


@pytest.mark.skipif(sys.platform != "linux", reason="timerfd is Linux-only")
def test_a_clock_used_in_a_new_loop_gets_a_new_timer() -> None:
    clock = RunClock()
    alarms: list[object] = []

    async def main() -> None:
        due = clock() + 60 * MS
        await clock.sleep_until(due)
        assert clock() >= due
        assert clock._alarm is not None and clock._alarm.loop is asyncio.get_running_loop()
        alarms.append(clock._alarm)

    uvloop.run(main())
    asyncio.run(main())
    clock.close()
    assert len(alarms) == 2 and alarms[0] is not alarms[1]
