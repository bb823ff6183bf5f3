"""The one timing helper the benchmarks share."""
from __future__ import annotations

import time
from collections.abc import Callable


def interleaved_best(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall-clock seconds of each function, timed in turn round after round (after one warm-up each).

    Taking turns puts a busy moment of the machine on every function alike, so ratios of the
    results hold better than those of functions timed one after the other.
    """
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best
