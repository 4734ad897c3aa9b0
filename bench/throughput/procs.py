"""CPU and memory of a process tree, read from Linux `/proc` (no psutil needed).

Why a sampler thread: `turnbench run` with workers is a tree of processes that come and go;
sampling the whole tree a few times a second gives its CPU over any window of the run (by
difference) and its resident memory over time (peak, start vs end).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, user + system CPU seconds) of a live process, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(parts[1]), (int(parts[11]) + int(parts[12])) / _TICK


def _status_kb(pid: int, key: str) -> int:
    """A `VmRSS:`-style field of /proc/PID/status in KiB (0 when gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def tree(root: int) -> dict[int, float]:
    """CPU seconds of `root` and each of its live descendants, by pid."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                parents[int(name)], cpu[int(name)] = st
    members = {root} if root in cpu else set()
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid: cpu[pid] for pid in members}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (0 when gone)."""
    st = _stat(pid)
    return st[1] if st else 0.0


@dataclass
class Sample:
    """One reading of a process tree."""

    t: float
    """Wall-clock seconds (time.time())."""
    cpu_s: float
    """CPU seconds of the processes alive now, since each started."""
    processes: int
    rss_by_pid: dict[int, int]
    """Each process's RSS in KiB: one that grows is visible even while another shrinks."""

    @property
    def rss_kb(self) -> int:
        """The tree's RSS in KiB."""
        return sum(self.rss_by_pid.values())


@dataclass
class TreeSampler:
    """Samples a process tree every `interval_s` in a thread, until `stop()`."""

    root: int
    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    hwm_kb: dict[int, int] = field(default_factory=dict)
    """Each process's own peak RSS (VmHWM), as last seen."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _cpu_seen: dict[int, float] = field(default_factory=dict)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval_s)

    def take(self) -> None:
        """Read the tree once; CPU of processes that ended since counts with its last value."""
        procs = tree(self.root)
        by_pid: dict[int, int] = {}
        for pid, cpu in procs.items():
            self._cpu_seen[pid] = cpu
            by_pid[pid] = _status_kb(pid, "VmRSS:")
            hwm = _status_kb(pid, "VmHWM:")
            if hwm:
                self.hwm_kb[pid] = hwm
        if procs:
            total = sum(self._cpu_seen.values())
            self.samples.append(Sample(time.time(), total, len(procs), by_pid))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def between(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]

    def cpu_percent(self, t0: float, t1: float) -> float | None:
        """Mean CPU of the tree over [t0, t1], in % of one core."""
        inside = self.between(t0, t1)
        if len(inside) < 2 or inside[-1].t <= inside[0].t:
            return None
        return 100 * (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].t - inside[0].t)

    def peak_rss_mb(self, t0: float = 0.0, t1: float = float("inf")) -> float | None:
        inside = self.between(t0, t1)
        return max(s.rss_kb for s in inside) / 1024 if inside else None
