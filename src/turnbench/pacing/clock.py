"""The run's clock, and sleeping until a time on it to a quarter of a millisecond.

Why not the event loop's timers: libuv (uvloop) counts timers in whole milliseconds from a
truncated "now", and asyncio rounds its poll timeout up to whole milliseconds, so a sleep to
a due time ends 0.5-1 ms late on average, and up to 2 ms late when a timer fires early and
must sleep again. That lateness is schedule lag the client adds to every open-loop session.

On Linux, one `timerfd` per event loop is armed at an absolute `CLOCK_MONOTONIC` time (the
clock `time.monotonic_ns` reads), and its readiness wakes the loop's poll like any socket.
Measured on a 2-core VM, 2,500 sleeping sessions a second handed over 20 ms ahead (the
workers' pattern), uvloop: lag p50 0.18 ms and p99 0.36-0.42 ms, against 0.74-0.79 ms and
1.8 ms with uvloop's own timers. Where there is no timerfd (other systems), or the loop
cannot watch a file descriptor, sleeps fall back to the loop's timers, rounded up to whole
milliseconds so that nothing starts early.
"""

from __future__ import annotations

import asyncio
import ctypes
import heapq
import itertools
import os
import time

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1
WAKE_GRID_NS = 250_000
"""Sleepers due in the same quarter millisecond share one wake-up (armed at its end): a
wake-up per sleeper cost a worker ~15 us of CPU per session at 2,500 sessions/s, the grid
~6 us, for a lag of at most 0.25 ms."""


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


class _TimerFd:
    """A non-blocking timerfd on CLOCK_MONOTONIC that can be armed at an absolute time.

    `os.timerfd_*` where Python has it (3.13+), else libc through ctypes.
    """

    def __init__(self) -> None:
        flags = _TFD_NONBLOCK | _TFD_CLOEXEC
        if hasattr(os, "timerfd_create"):
            self.fd: int = os.timerfd_create(_CLOCK_MONOTONIC, flags=flags)
            self.arm = self._arm_os
            return
        libc = ctypes.CDLL(None, use_errno=True)
        create, self._settime = libc.timerfd_create, libc.timerfd_settime  # AttributeError: none
        create.argtypes, create.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._settime.restype = ctypes.c_int
        self.fd = create(_CLOCK_MONOTONIC, flags)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._spec = _ITimerSpec()
        self._spec_ref = ctypes.addressof(self._spec)
        self.arm = self._arm_libc

    def _arm_os(self, mono_ns: int) -> None:
        """Expire at `mono_ns` (0: disarm). Setting the timer clears a pending expiry."""
        os.timerfd_settime_ns(self.fd, flags=_TFD_TIMER_ABSTIME, initial=mono_ns)  # type: ignore[attr-defined]

    def _arm_libc(self, mono_ns: int) -> None:
        """As `_arm_os`."""
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(mono_ns, 1_000_000_000)
        self._settime(self.fd, _TFD_TIMER_ABSTIME, self._spec_ref, None)

    def close(self) -> None:
        os.close(self.fd)


class _Alarm:
    """Wakes the sleepers of one event loop at their due times through one timerfd."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timer = _TimerFd()
        try:
            loop.add_reader(self.timer.fd, self._ring)
        except Exception:
            self.timer.close()
            raise
        self._due: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._armed: int | None = None

    def wait(self, mono_ns: int) -> asyncio.Future[None]:
        """A future that completes once `time.monotonic_ns()` reaches `mono_ns`."""
        fut = self.loop.create_future()
        heapq.heappush(self._due, (mono_ns, next(self._order), fut))
        wake = -(-mono_ns // WAKE_GRID_NS) * WAKE_GRID_NS
        if self._armed is None or wake < self._armed:
            self._armed = wake
            self.timer.arm(wake)
        return fut

    def _ring(self) -> None:
        due = self._due
        now = time.monotonic_ns()
        while due and due[0][0] <= now:
            fut = heapq.heappop(due)[2]
            if not fut.done():  # a cancelled sleeper leaves a cancelled future behind
                fut.set_result(None)
        # Setting the timer also clears its expiry, so the fd needs no read.
        self._armed = -(-due[0][0] // WAKE_GRID_NS) * WAKE_GRID_NS if due else None
        self.timer.arm(self._armed or 0)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self.timer.fd)
        self.timer.close()


class RunClock:
    """Nanoseconds since the run's start on this process's monotonic clock (`clock()`), and
    `sleep_until(t)` on it.

    Callable, so everything that only reads the time takes a plain `Callable[[], int]`.
    """

    def __init__(self, origin_ns: int | None = None, *, timerfd: bool = True) -> None:
        """`timerfd=False`: sleep on the event loop's timers even where a timerfd exists."""
        self.origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        """`time.monotonic_ns()` at the run's start."""
        self._alarm: _Alarm | None = None
        self._no_alarm = not timerfd

    def __call__(self) -> int:
        return time.monotonic_ns() - self.origin_ns

    async def sleep_until(self, t_ns: int) -> None:
        """Return once the clock reads `t_ns` or later: nothing may go out before it is due."""
        if t_ns <= time.monotonic_ns() - self.origin_ns:
            return
        alarm = self._alarm_here()
        if alarm is not None:
            await alarm.wait(self.origin_ns + t_ns)
            return
        # The loop's timers count whole milliseconds: round up, and sleep again if one fired
        # early (uvloop measures a delay from the start of the current loop iteration).
        while (delay := t_ns - (time.monotonic_ns() - self.origin_ns)) > 0:
            await asyncio.sleep(-(-delay // 1_000_000) / 1000)

    def _alarm_here(self) -> _Alarm | None:
        if self._no_alarm:
            return None
        loop = asyncio.get_running_loop()
        alarm = self._alarm
        if alarm is not None and alarm.loop is loop:
            return alarm
        if alarm is not None:
            alarm.close()
        try:
            self._alarm = _Alarm(loop)
        except (AttributeError, OSError, NotImplementedError, ValueError):
            self._alarm, self._no_alarm = None, True  # no timerfd here: the loop's timers
        return self._alarm

    def close(self) -> None:
        """Release the timerfd (at the end of the run)."""
        if self._alarm is not None:
            self._alarm.close()
            self._alarm = None
