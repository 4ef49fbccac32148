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
recomputed from the checkpoint written by the forward pass into (K+1, d, N) / (K, d, N)
scratch buffers: extra memory O(Bk·d·N·L/K), never (Bk, d, N, L).

Threads: prange over the kernel batch. Δ_t, B_t, C_t and their gradients are shared by the d
channels of one batch element, so the thread that owns batch b owns rows b of dΔ, dB, dC (no
races); dΛ is written per batch (dA_k) and summed by the caller. Vectorisation: the innermost
loop runs over the N states of one channel (contiguous in the (d, N) state and in the rows of
Δ_t, B_t, C_t, copied into small local arrays per step); `fast_exp` keeps the exp in-vector.
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
        h = np.empty((D, N), dtype=u.dtype)
        a = np.empty((D, N), dtype=u.dtype)
        dt = np.empty(N, dtype=u.dtype)
        bv = np.empty(N, dtype=u.dtype)
        cv = np.empty(N, dtype=u.dtype)
        for e in range(D):
            for n in range(N):
                h[e, n] = 0.0
                a[e, n] = A[ab, e, n]
        for t in range(L):
            if t % K == 0:
                j = t // K
                for e in range(D):
                    for n in range(N):
                        ckpt[b, j, e, n] = h[e, n]
            for n in range(N):
                dt[n] = delta[b, t, n]
                bv[n] = Bin[b, t, n]
                cv[n] = C[b, t, n]
            for e in range(D):
                x = u[b, t, e]
                acc = zero_of(x)
                for n in range(N):
                    hn = fast_exp(a[e, n] * dt[n]) * h[e, n] + x * bv[n]
                    h[e, n] = hn
                    acc += hn * cv[n]
                y[b, t, e] = acc


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
        hbuf = np.empty((K + 1, D, N), dtype=u.dtype)  # hbuf[k + 1] = h after step t0 + k
        ebuf = np.empty((K, D, N), dtype=u.dtype)  # ebuf[k] = exp(Λ Δ) at step t0 + k
        gh = np.empty((D, N), dtype=u.dtype)  # ā_{t+1} ⊙ g_{t+1}
        a = np.empty((D, N), dtype=u.dtype)
        dAacc = np.empty((D, N), dtype=u.dtype)
        dt = np.empty(N, dtype=u.dtype)
        bv = np.empty(N, dtype=u.dtype)
        cv = np.empty(N, dtype=u.dtype)
        sC = np.empty(N, dtype=u.dtype)
        sB = np.empty(N, dtype=u.dtype)
        sD = np.empty(N, dtype=u.dtype)
        for e in range(D):
            for n in range(N):
                a[e, n] = A[ab, e, n]
                gh[e, n] = 0.0
                dAacc[e, n] = 0.0
        for j in range(nblk - 1, -1, -1):
            t0 = j * K
            t1 = min(L, t0 + K)
            # recompute this block's states and decays from its checkpoint
            for e in range(D):
                for n in range(N):
                    hbuf[0, e, n] = ckpt[b, j, e, n]
            for t in range(t0, t1):
                k = t - t0
                for n in range(N):
                    dt[n] = delta[b, t, n]
                    bv[n] = Bin[b, t, n]
                for e in range(D):
                    x = u[b, t, e]
                    for n in range(N):
                        ev = fast_exp(a[e, n] * dt[n])
                        ebuf[k, e, n] = ev
                        hbuf[k + 1, e, n] = ev * hbuf[k, e, n] + x * bv[n]
            # reverse through the block
            for t in range(t1 - 1, t0 - 1, -1):
                k = t - t0
                for n in range(N):
                    dt[n] = delta[b, t, n]
                    bv[n] = Bin[b, t, n]
                    cv[n] = C[b, t, n]
                    sC[n] = 0.0
                    sB[n] = 0.0
                    sD[n] = 0.0
                for e in range(D):
                    x = u[b, t, e]
                    gy = dy[b, t, e]
                    s = zero_of(x)
                    for n in range(N):
                        gn = gh[e, n] + gy * cv[n]
                        sC[n] += gy * hbuf[k + 1, e, n]
                        s += gn * bv[n]
                        sB[n] += gn * x
                        da = gn * hbuf[k, e, n] * ebuf[k, e, n]  # dLoss / d(Λ[e, n] Δ_t[n])
                        sD[n] += da * a[e, n]
                        dAacc[e, n] += da * dt[n]
                        gh[e, n] = gn * ebuf[k, e, n]
                    du[b, t, e] = s
                for n in range(N):
                    dC[b, t, n] = sC[n]
                    dBin[b, t, n] = sB[n]
                    ddelta[b, t, n] = sD[n]
        for e in range(D):
            for n in range(N):
                dA_k[b, e, n] = dAacc[e, n]
