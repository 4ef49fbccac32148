"""The timer the op benchmarks share: median wall time of a call after warm-up calls.

Imported by the scripts beside it (`python benchmarks/<name>.py` puts this folder on sys.path)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_ms(call: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median over `repeats` timed calls of `call()`, in ms, after `warmup` untimed ones (kernel
    loading, JIT, allocator warm-up)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)
