"""Shared machinery for the Numba CPU kernels of ssmlab.ops.

Why this module exists:
- one fastmath policy for every kernel (reassociation and contraction, so that the inner loop
  over the N states vectorises, but no `nnan` / `ninf`: NaN and inf inputs must propagate);
- `fast_exp`, an exp that LLVM can vectorise (libm's expf/exp is a scalar call that blocks
  vectorisation of the state loop and was the bottleneck of the forward kernel: 71 ms -> 27 ms
  at (8, 64, 16, 4096) float32). float32 uses a Cody-Waite range reduction + degree-6
  polynomial (max relative error ~1e-7 over [-87, 88], i.e. about expf's accuracy); float64
  keeps math.exp, so float64 (the dtype of the tests) is as exact as the reference;
- the threading layer: Numba's default picks `omp` when an OpenMP runtime is present, and its
  pool then spin-waits after each kernel and competes with PyTorch's own OpenMP pool; measured
  here, the PyTorch ops around a fused scan (softplus, transposes) ran 6x slower. So ssmlab
  selects the `workqueue` layer (threads sleep between kernels) unless NUMBA_THREADING_LAYER is
  set in the environment; the choice only takes effect if no parallel Numba code ran before;
- `kernel_threads()`, the thread rule: a kernel uses min(torch.get_num_threads(),
  NUMBA_NUM_THREADS) threads, so `torch.set_num_threads(1)` (as used by sweep workers) also
  makes the fused scans single-threaded, and a lock serialises kernels launched from several
  Python threads at once (Numba's default `workqueue` threading layer is not re-entrant).

Numba caches compiled kernels next to their source files (`cache=True`). Its cache is keyed on
the source file of the jitted function only: after editing this file, delete the
`__pycache__/*.nbi|*.nbc` files of the kernel modules (they do not notice the change).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic, overload

FASTMATH = {"nsz", "arcp", "contract", "reassoc", "afn"}

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

_LOCK = threading.RLock()


def n_kernel_threads() -> int:
    """Threads a kernel launched now will use: min(torch threads, Numba's pool size)."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextmanager
def kernel_threads() -> Iterator[int]:
    """Run Numba kernels with n_kernel_threads() threads (see module doc)."""
    n = n_kernel_threads()
    with _LOCK:
        previous = numba.get_num_threads()
        numba.set_num_threads(n)
        try:
            yield n
        finally:
            numba.set_num_threads(previous)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Contiguous, detached CPU tensor -> numpy view (no copy when already contiguous)."""
    return t.detach().resolve_conj().contiguous().numpy()


@intrinsic
def _int32_bits_as_float32(typingctx, x):
    """Reinterpret the bits of an int32 as a float32 (2**k is built from its exponent bits)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def fast_exp(x):  # pragma: no cover - replaced by the overload inside jitted code
    """exp(x) for use inside Numba kernels (vectorisable for float32, exact libm for float64)."""
    return math.exp(x)


@overload(fast_exp, inline="always", fastmath=FASTMATH)
def _fast_exp_impl(x):
    if x == types.float32:

        def impl(x):
            # Cody-Waite: x = k ln2 + f, |f| <= ln2 / 2; exp(f) by a minimax polynomial.
            xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
            # np.floor keeps float32 (math.floor returns an int64 in Numba, and that int round
            # trip kept LLVM from vectorising the loop: 3.4x slower exp loops on AVX2)
            k = np.floor(xc * np.float32(1.4426950408889634) + np.float32(0.5))
            f = xc - k * np.float32(0.693145751953125)
            f = f - k * np.float32(1.428606765330187e-06)
            p = np.float32(1.9875691500e-4)
            p = p * f + np.float32(1.3981999507e-3)
            p = p * f + np.float32(8.3334519073e-3)
            p = p * f + np.float32(4.1665795894e-2)
            p = p * f + np.float32(1.6666665459e-1)
            p = p * f + np.float32(5.0000001201e-1)
            p = p * f * f + f + np.float32(1.0)
            r = p * _int32_bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
            # Beyond the clamp: underflow to exactly 0, overflow to inf, NaN stays NaN.
            r = np.float32(0.0) if x < np.float32(-87.33) else r
            r = np.float32(np.inf) if x > np.float32(88.72) else r
            return x if x != x else r

        return impl
    if x == types.float64:

        def impl(x):
            return math.exp(x)

        return impl
    return None


def zero_of(x):  # pragma: no cover - replaced by the overload inside jitted code
    """A zero of x's float type (keeps float32 accumulators float32 inside kernels)."""
    return 0.0


@overload(zero_of, inline="always")
def _zero_of_impl(x):
    if x == types.float32:
        return lambda x: np.float32(0.0)
    if x == types.complex64:
        return lambda x: np.complex64(0.0)
    if x == types.complex128:
        return lambda x: np.complex128(0.0)
    return lambda x: np.float64(0.0)
