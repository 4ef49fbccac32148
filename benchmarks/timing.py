"""The timer the op benchmarks share: median wall time of a call after warm-up calls.

Imported by the scripts beside it (`python benchmarks/<name>.py` puts this folder on sys.path)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


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


def start_table(doc: str, columns: list[str]) -> int:
    """The op benchmarks' common start: parse `--repeats` (default 10), one torch thread, seed 0,
    print the Markdown table's header; returns the repeats."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    repeats = ap.parse_args().repeats
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    return repeats
