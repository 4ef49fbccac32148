"""Memory estimates, checked before a sweep runs or stores anything.

An experiment's `memory_bytes(cfg)` adds up what one run holds at its peak with `nbytes`:
data tensors, parameters, the activations the backward pass keeps, optimiser state. The
runner multiplies by the workers that run at once and compares with `machine_memory()`;
a config over it is refused with a one-line error carrying the estimate. SSMLAB_MEMORY_LIMIT
(bytes, or with a K / M / G suffix) lowers the limit, e.g. for a shared machine or a test.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ssmlab.errors import UserError

LIMIT_ENV = "SSMLAB_MEMORY_LIMIT"
_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def nbytes(*shape: int, itemsize: int = 4) -> int:
    """Bytes of one dense tensor of `shape` (float32 by default: itemsize 4)."""
    return int(math.prod(int(s) for s in shape)) * itemsize


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _cgroup_limit() -> int | None:
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def parse_size(text: str) -> int:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    num, suf = (t[:-1], t[-1]) if t and t[-1] in _SUFFIX else (t, "")
    try:
        value = float(num) * _SUFFIX[suf]
    except ValueError:
        raise UserError(f"{LIMIT_ENV}={text!r} is not a size (e.g. 8G, 512M, 1000000)") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{LIMIT_ENV}={text!r} must be a positive size")
    return int(value)


def machine_memory() -> int:
    """Physical memory (or the cgroup's limit, or SSMLAB_MEMORY_LIMIT, whichever is least)."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    cg = _cgroup_limit()
    if cg:
        limits.append(cg)
    if os.environ.get(LIMIT_ENV):
        limits.append(parse_size(os.environ[LIMIT_ENV]))
    return min(limits)


def check_memory(what: str, per_run: int | None, concurrent: int) -> None:
    """Raise UserError when `concurrent` runs of `per_run` bytes exceed the machine's memory."""
    if per_run is None:
        return
    limit = machine_memory()
    total = per_run * max(1, concurrent)
    if total > limit:
        each = f" ({human(per_run)} per run × {concurrent} workers)" if concurrent > 1 else ""
        raise UserError(f"{what}: estimated peak memory {human(total)}{each} exceeds this "
                        f"machine's {human(limit)}; lower the sizes or --workers")
