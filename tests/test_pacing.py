"""Arrival processes as pure functions: tested exactly, with no clock and no sleeping."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from turnbench.pacing.arrivals import AllAtOnce, Constant, Gamma, Poisson, Recorded


def _times(pacer, n: int) -> list[float]:
    return [pacer.due(k) for k in range(n)]


def test_all_at_once_and_constant() -> None:
    assert _times(AllAtOnce(3), 3) == [0.0, 0.0, 0.0] and AllAtOnce(3).due(3) is None
    assert _times(Constant(4.0), 5) == [0.0, 0.25, 0.5, 0.75, 1.0]


def _ks_exponential(gaps: list[float], rate: float) -> float:
    gaps = sorted(gaps)
    n = len(gaps)
    return max(
        max((i + 1) / n - (1 - math.exp(-rate * g)), (1 - math.exp(-rate * g)) - i / n)
        for i, g in enumerate(gaps)
    )


def test_poisson_gaps_are_exponential_with_the_rate() -> None:
    rate = 50.0
    t = _times(Poisson(rate, random.Random(7)), 20_001)
    gaps = [b - a for a, b in itertools.pairwise(t)]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    assert _ks_exponential(gaps, rate) < 1.63 / math.sqrt(len(gaps))
    assert _times(Poisson(rate, random.Random(7)), 100) == t[:100]  # seeded


def test_gamma_keeps_the_rate_and_changes_burstiness() -> None:
    rate = 10.0
    for shape in (0.25, 1.0, 4.0):
        t = _times(Gamma(rate, shape, random.Random(1)), 20_001)
        gaps = [b - a for a, b in itertools.pairwise(t)]
        assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
        cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
        assert cv == pytest.approx(1 / math.sqrt(shape), rel=0.1)


def test_recorded_times_scale_and_end() -> None:
    pacer = Recorded([0.0, 1.5, 4.0], scale=0.5)
    assert _times(pacer, 3) == [0.0, 0.75, 2.0] and pacer.due(3) is None


def test_renewal_pacers_are_drawn_in_order() -> None:
    pacer = Poisson(1.0, random.Random(0))
    pacer.due(5)
    with pytest.raises(ValueError):
        pacer.due(2)
