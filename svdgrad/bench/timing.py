"""Interleaved timing: ratios that survive a shared, contended machine.

Every case runs once per round, in a fresh shuffled order each round, so
slow spells hit the method and its floor alike.  A ratio is then taken two
ways: the median over rounds of the ratio of that round's times, and the
ratio of each case's fastest time (least disturbed by other load).
"""

from __future__ import annotations

import os
import random
import statistics
import time


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def interleaved(cases: dict, *, min_rounds: int, max_rounds: int, budget_s: float,
                warmup: int = 1, seed: int = 0, progress=None) -> dict[str, list[float]]:
    """Seconds per call of each case, one entry per round.

    Runs ``warmup`` untimed rounds, then at least ``min_rounds`` and at most
    ``max_rounds`` timed rounds, stopping after ``budget_s`` seconds once
    ``min_rounds`` are done.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    start = time.perf_counter()
    for r in range(max_rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
        if progress is not None:
            progress(r + 1)
        if r + 1 >= min_rounds and time.perf_counter() - start > budget_s:
            break
    return times


def per_round(times: dict[str, list[float]], f) -> list[float]:
    """f(round's times as a dict) for every round (``studies/allocator_effect.py`` takes its ratios so)."""
    rounds = len(next(iter(times.values())))
    return [f({k: v[i] for k, v in times.items()}) for i in range(rounds)]


def median(xs) -> float:
    return statistics.median(xs)
