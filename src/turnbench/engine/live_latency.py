"""The TTFT of the requests that succeeded lately, for the live progress line.

Why an HdrHistogram: the live line shows percentiles, and percentiles of several workers
cannot be averaged; histograms can be added (as wrk2 and HdrHistogram do). Each worker
records into an interval histogram and hands it over (`take`, `take_encoded`) with every
batch; the coordinator adds what the workers sent, and the progress line adds the intervals
of its last few seconds. events.db holds the exact figures; this is only the live view.
"""

from __future__ import annotations

from hdrh.histogram import HdrHistogram

_LOWEST_US = 1
_HIGHEST_US = 3_600_000_000
"""One hour: a TTFT beyond it is counted as one hour."""
_DIGITS = 2
"""Two significant digits: a percentile within 1 % of the exact one."""


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds, 1 µs to 1 h."""
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


class LiveLatency:
    """TTFTs recorded since the last `take`, in microseconds."""

    __slots__ = ("_hist",)

    def __init__(self) -> None:
        self._hist = new_histogram()

    def record(self, ttft_ns: int) -> None:
        """Count one request's TTFT (from its send)."""
        self._hist.record_value(min(max(ttft_ns // 1000, _LOWEST_US), _HIGHEST_US))

    def add_encoded(self, blob: bytes) -> None:
        """Add a worker's interval (what its `take_encoded` gave)."""
        self._hist.decode_and_add(blob)

    def take(self) -> HdrHistogram:
        """What was recorded since the last take; recording starts again from nothing."""
        hist = self._hist
        self._hist = new_histogram()
        return hist

    def take_encoded(self) -> bytes | None:
        """`take`, compressed for a batch (None when nothing was recorded)."""
        if self._hist.get_total_count() == 0:
            return None
        blob: bytes = self._hist.encode()
        self._hist.reset()
        return blob
