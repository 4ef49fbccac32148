"""Numba kernel of the diagonal linear recurrence on rows: h[m, t] = a[m, t] h[m, t-1] + b[m, t].

One pass over L per row, prange over rows. The same kernel runs the backward (a reverse-time
recurrence, see __init__.py), so there is only one kernel to trust.
"""

from __future__ import annotations

from numba import njit, prange

from ssmlab.ops._numba import FASTMATH, zero_of


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def recurrence_rows(a, b, h):  # pragma: no cover - jitted
    """a, b, h (M, L) contiguous; writes h in place; h_{-1} = 0 (fold h0 into b[:, 0])."""
    M, L = b.shape
    if L == 0:
        return
    for m in prange(M):
        acc = zero_of(b[m, 0])
        for t in range(L):
            acc = a[m, t] * acc + b[m, t]
            h[m, t] = acc
