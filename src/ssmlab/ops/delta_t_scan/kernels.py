"""Numba kernels of the fused Mamba-ΔT scan: forward pass and checkpointed reverse pass.

Glossary (kernel name -> paper symbol; k = kernel batch, see __init__.py):
    u      x_t        channel inputs, time-major                     (Bk, L, d)
    delta  Δ_t        per-state step sizes (already softplus-ed)     (Bk, L, N)
    A      Λ          decays, one (d, N) block per A-batch           (Ba, d, N), Bk % Ba == 0,
                      kernel batch b reads A[b // (Bk / Ba)]         (Ba = 1: shared Λ)
    Bin, C B_t, C_t   input / output vectors                         (Bk, L, N)
    ckpt   -          state before step j*K, j = 0..ceil(L/K)-1      (Bk, ceil(L/K), d, N)

Recurrence (ā_t[e, n] = exp(Λ[e, n] Δ_t[n])):
    h_t = ā_t ⊙ h_{t-1} + u_t ⊗ B_t,     y_t[e] = Σ_n C_t[n] h_t[e, n].

Backward (reverse pass; g_t = dLoss/dh_t accumulated from the future):
    g_t       = dy_t ⊗ C_t + ā_{t+1} ⊙ g_{t+1}
    dC_t[n]   = Σ_e dy_t[e] h_t[e, n],   du_t[e] = Σ_n g_t[e, n] B_t[n],
    dB_t[n]   = Σ_e g_t[e, n] u_t[e],    dΔ_t[n] = Σ_e g_t[e, n] h_{t-1}[e, n] ā_t[e, n] Λ[e, n],
    dΛ[e, n] += Σ_t g_t[e, n] h_{t-1}[e, n] ā_t[e, n] Δ_t[n]   (per kernel batch: dA_k).
The reverse pass walks blocks of K steps from the end; each block's states and decays are
recomputed from the checkpoint written by the forward pass into (K+1, N, d) / (K, N, d)
scratch buffers: extra memory O(Bk·d·N·L/K), never (Bk, d, N, L).

Threads: prange over the kernel batch. Δ_t, B_t, C_t and their gradients are shared by the d
channels of one batch element, so the thread that owns batch b owns rows b of dΔ, dB, dC (no
races); dΛ is written per batch (dA_k) and summed by the caller.

Vectorisation: the innermost loop runs over the d channels, with the state kept as a small
local (N, d) array (channels contiguous) and Δ_t[n], B_t[n], C_t[n] broadcast scalars: u_t and
y_t are contiguous rows of the time-major (B, L, d) layout, y_t accumulates lane-wise over n
(no horizontal sum in the forward), and the backward's sums over channels (dC, dB, dΔ) are one
reduction per (t, n). Measured at the induction sizes (B 64, L 64, d 64, N 8, float32, one
thread) against the inner loop over the N = 8 states of one channel ((d, N) state): forward
12.2 -> 7.3 ms, forward+backward 31.8 -> 22.5 ms. `fast_exp` keeps the exp in-vector (but see
docs/ops.md: on this AVX2 machine its `math.floor` still limits it).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ssmlab.ops._numba import FASTMATH, fast_exp, zero_of


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dts_forward(u, delta, A, Bin, C, K, y, ckpt):  # pragma: no cover - jitted
    """Fills y (Bk, L, d) and ckpt (Bk, ceil(L/K), d, N) in place; h_{-1} = 0."""
    Bk, L, D = u.shape
    Ba = A.shape[0]
    N = A.shape[2]
    per_a = Bk // Ba
    for b in prange(Bk):
        ab = b // per_a
        h = np.empty((N, D), dtype=u.dtype)
        a = np.empty((N, D), dtype=u.dtype)
        x = np.empty(D, dtype=u.dtype)
        yv = np.empty(D, dtype=u.dtype)
        for n in range(N):
            for e in range(D):
                h[n, e] = 0.0
                a[n, e] = A[ab, e, n]
        for t in range(L):
            if t % K == 0:
                j = t // K
                for e in range(D):
                    for n in range(N):
                        ckpt[b, j, e, n] = h[n, e]
            for e in range(D):
                x[e] = u[b, t, e]
                yv[e] = 0.0
            for n in range(N):
                dtn = delta[b, t, n]
                bn = Bin[b, t, n]
                cn = C[b, t, n]
                for e in range(D):
                    hn = fast_exp(a[n, e] * dtn) * h[n, e] + x[e] * bn
                    h[n, e] = hn
                    yv[e] += hn * cn
            for e in range(D):
                y[b, t, e] = yv[e]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def dts_backward(dy, u, delta, A, Bin, C, ckpt, K, du, ddelta, dA_k, dBin, dC):  # pragma: no cover
    """Reverse pass. Writes du (Bk, L, d), ddelta, dBin, dC (Bk, L, N) and dA_k (Bk, d, N)
    (per kernel batch; the caller sums it over the batches that share an A block)."""
    Bk, L, D = u.shape
    Ba = A.shape[0]
    N = A.shape[2]
    per_a = Bk // Ba
    nblk = ckpt.shape[1]
    for b in prange(Bk):
        ab = b // per_a
        hbuf = np.empty((K + 1, N, D), dtype=u.dtype)  # hbuf[k + 1] = h after step t0 + k
        ebuf = np.empty((K, N, D), dtype=u.dtype)  # ebuf[k] = exp(Λ Δ) at step t0 + k
        gh = np.empty((N, D), dtype=u.dtype)  # ā_{t+1} ⊙ g_{t+1}
        a = np.empty((N, D), dtype=u.dtype)
        dAacc = np.empty((N, D), dtype=u.dtype)
        x = np.empty(D, dtype=u.dtype)
        gy = np.empty(D, dtype=u.dtype)
        sdu = np.empty(D, dtype=u.dtype)
        for n in range(N):
            for e in range(D):
                a[n, e] = A[ab, e, n]
                gh[n, e] = 0.0
                dAacc[n, e] = 0.0
        for j in range(nblk - 1, -1, -1):
            t0 = j * K
            t1 = min(L, t0 + K)
            # recompute this block's states and decays from its checkpoint
            for e in range(D):
                for n in range(N):
                    hbuf[0, n, e] = ckpt[b, j, e, n]
            for t in range(t0, t1):
                k = t - t0
                for e in range(D):
                    x[e] = u[b, t, e]
                for n in range(N):
                    dtn = delta[b, t, n]
                    bn = Bin[b, t, n]
                    for e in range(D):
                        ev = fast_exp(a[n, e] * dtn)
                        ebuf[k, n, e] = ev
                        hbuf[k + 1, n, e] = ev * hbuf[k, n, e] + x[e] * bn
            # reverse through the block
            for t in range(t1 - 1, t0 - 1, -1):
                k = t - t0
                for e in range(D):
                    x[e] = u[b, t, e]
                    gy[e] = dy[b, t, e]
                    sdu[e] = 0.0
                for n in range(N):
                    dtn = delta[b, t, n]
                    bn = Bin[b, t, n]
                    cn = C[b, t, n]
                    sC = zero_of(dtn)
                    sB = zero_of(dtn)
                    sD = zero_of(dtn)
                    for e in range(D):
                        gn = gh[n, e] + gy[e] * cn
                        sC += gy[e] * hbuf[k + 1, n, e]
                        sdu[e] += gn * bn
                        sB += gn * x[e]
                        da = gn * hbuf[k, n, e] * ebuf[k, n, e]  # dLoss / d(Λ[e, n] Δ_t[n])
                        sD += da * a[n, e]
                        dAacc[n, e] += da * dtn
                        gh[n, e] = gn * ebuf[k, n, e]
                    dC[b, t, n] = sC
                    dBin[b, t, n] = sB
                    ddelta[b, t, n] = sD
                for e in range(D):
                    du[b, t, e] = sdu[e]
        for e in range(D):
            for n in range(N):
                dA_k[b, e, n] = dAacc[n, e]
