"""The one timing helper the benchmarks share."""
from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 3, warmup: bool = False) -> float:
    """The shortest of ``repeats`` wall-clock runs of ``fn`` in seconds, after one untimed run if ``warmup``."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
