"""The timing loop every benchmark uses: warm-up calls, then wall time per call in milliseconds."""

import time
from collections.abc import Callable


def call_ms(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Milliseconds of each of `runs` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return samples
