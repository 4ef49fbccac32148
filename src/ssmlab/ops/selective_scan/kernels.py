"""Numba kernels of the fused selective scan: forward pass and checkpointed reverse pass.

Glossary (kernel name -> paper symbol, Mamba Alg. 2; "k" = kernel batch, see fused.py):
    u      x_t        inputs                                      (Bk, D, L)
    delta  Δ_t        step sizes, already biased / softplus-ed    (Bk, D, L)
    A      A          decays, one (D, N) block per A-batch        (Ba, D, N), Bk % Ba == 0,
                      kernel batch b reads A[b // (Bk / Ba)]       (Ba = 1: shared A)
    Bt, Ct B_t, C_t   input / output projections, time-major      (Bk, G, L, N)
    h0     h_{-1}     initial state                               (Bk, D, N)
    ckpt   -          state before step j*K, j = 0..ceil(L/K)-1   (Bk, ceil(L/K), N, D)

Recurrence (ZOH for A, Euler for B, as mamba_ssm):
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,     y_t = C_t · h_t.

Backward (reverse pass; g_t = dLoss/dh_t accumulated from the future, ā_t = exp(Δ_t A)):
    g_t   = ā_{t+1} ⊙ g_{t+1} + dy_t C_t          (g_{L-1} also receives dh_last)
    dC_t += dy_t h_t,     dB_t += g_t Δ_t x_t,     du_t = Δ_t (g_t · B_t)
    dΔ_t  = x_t (g_t · B_t) + Σ_n g_t[n] h_{t-1}[n] ā_t[n] A[n]
    dA   += Σ_t g_t ⊙ h_{t-1} ⊙ ā_t Δ_t,          dh0 = ā_0 ⊙ g_0
The reverse pass walks blocks of K steps from the end; each block's states and decays ā are
recomputed from the checkpoint written by the forward pass into (K+1, N, W) scratch buffers, so
the backward needs O(Bk·D·N·L/K) extra memory instead of O(Bk·D·N·L), and one exp per element.

Vectorisation: the innermost loop runs over a chunk of W <= CH channels of one group, the
states n are the next loop out, and every per-step quantity lives in small contiguous local
arrays (state (N, W), Δ_t, Δ_t x_t, y_t (W,)). So the SIMD lanes hold channels: no horizontal
reduction in the forward (y accumulates lane-wise over n), trip counts of 16-64 that LLVM
vectorises fully, and B_t[n], C_t[n] are broadcast scalars. u, Δ, y keep mamba_ssm's (B, D, L)
layout: each step gathers W values with stride L, whose cache lines serve the next 16 steps
(no transposes in PyTorch around the kernel). (Vectorising over N instead was 1.5x slower forward and 1.6x slower backward
at N = 16: a 16-trip loop with a horizontal sum per step.) `fast_exp` keeps the exp in-vector.

Threads: the forward runs prange over (batch, group, channel chunk). The backward writes
dB_t/dC_t, which all channels of a group share, so it runs prange over (batch, group, part):
each of the P parts of a group walks its chunks in turn and accumulates into its own slice
dB_p[b, g, p] (Bk, G, P, L, N); the caller sums over P (P = 1 unless Bk·G is too small to keep
the threads busy).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ssmlab.ops._numba import FASTMATH, fast_exp, zero_of


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_forward(u, delta, A, Bt, Ct, h0, K, CH, y, h_last, ckpt):  # pragma: no cover - jitted
    """Fills y (Bk, D, L), h_last (Bk, D, N) and ckpt (Bk, nblk, N, D) in place."""
    Bk, Dc, L = u.shape
    Ba = A.shape[0]
    N = A.shape[2]
    G = Bt.shape[1]
    per_group = Dc // G
    per_a = Bk // Ba
    nch = -(-per_group // CH)
    for it in prange(Bk * G * nch):
        b = it // (G * nch)
        rem = it - b * (G * nch)
        g = rem // nch
        c = rem - g * nch
        ab = b // per_a
        d0 = g * per_group + c * CH
        W = min(CH, (g + 1) * per_group - d0)
        h = np.empty((N, W), dtype=u.dtype)
        a = np.empty((N, W), dtype=u.dtype)
        dt = np.empty(W, dtype=u.dtype)
        dtx = np.empty(W, dtype=u.dtype)
        yv = np.empty(W, dtype=u.dtype)
        for n in range(N):
            for w in range(W):
                h[n, w] = h0[b, d0 + w, n]
                a[n, w] = A[ab, d0 + w, n]
        for t in range(L):
            if t % K == 0:
                j = t // K
                for n in range(N):
                    for w in range(W):
                        ckpt[b, j, n, d0 + w] = h[n, w]
            for w in range(W):
                dt[w] = delta[b, d0 + w, t]
                dtx[w] = dt[w] * u[b, d0 + w, t]
                yv[w] = zero_of(dt[w])
            for n in range(N):
                bn = Bt[b, g, t, n]
                cn = Ct[b, g, t, n]
                for w in range(W):
                    hn = fast_exp(dt[w] * a[n, w]) * h[n, w] + dtx[w] * bn
                    h[n, w] = hn
                    yv[w] += hn * cn
            for w in range(W):
                y[b, d0 + w, t] = yv[w]
        for n in range(N):
            for w in range(W):
                h_last[b, d0 + w, n] = h[n, w]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_backward(
    dy, dh_last, u, delta, A, Bt, Ct, ckpt, K, CH, P, du, ddelta, dA_k, dh0, dB_p, dC_p
):  # pragma: no cover - jitted
    """Reverse pass. Writes du, ddelta (Bk, D, L), dA_k (Bk, D, N) (per kernel batch; the caller
    sums it over batch), dh0 (Bk, D, N); accumulates into zero-initialised dB_p, dC_p
    (Bk, G, P, L, N) (the caller sums over P)."""
    Bk, Dc, L = u.shape
    Ba = A.shape[0]
    N = A.shape[2]
    G = Bt.shape[1]
    per_group = Dc // G
    per_a = Bk // Ba
    nch = -(-per_group // CH)
    nblk = ckpt.shape[1]
    for it in prange(Bk * G * P):
        b = it // (G * P)
        rem = it - b * (G * P)
        g = rem // P
        p = rem - g * P
        ab = b // per_a
        hbuf = np.empty((K + 1, N, CH), dtype=u.dtype)  # hbuf[k + 1] = h after step t0 + k
        ebuf = np.empty((K, N, CH), dtype=u.dtype)  # ebuf[k] = exp(Δ A) at step t0 + k
        gh = np.empty((N, CH), dtype=u.dtype)
        a = np.empty((N, CH), dtype=u.dtype)
        dAacc = np.empty((N, CH), dtype=u.dtype)
        dt = np.empty(CH, dtype=u.dtype)
        dtx = np.empty(CH, dtype=u.dtype)
        x = np.empty(CH, dtype=u.dtype)
        dyv = np.empty(CH, dtype=u.dtype)
        sgb = np.empty(CH, dtype=u.dtype)
        sda = np.empty(CH, dtype=u.dtype)
        for c in range((p * nch) // P, ((p + 1) * nch) // P):
            d0 = g * per_group + c * CH
            W = min(CH, (g + 1) * per_group - d0)
            for n in range(N):
                for w in range(W):
                    a[n, w] = A[ab, d0 + w, n]
                    gh[n, w] = dh_last[b, d0 + w, n]
                    dAacc[n, w] = 0.0
            for j in range(nblk - 1, -1, -1):
                t0 = j * K
                t1 = min(L, t0 + K)
                # recompute this block's states and decays from its checkpoint
                for n in range(N):
                    for w in range(W):
                        hbuf[0, n, w] = ckpt[b, j, n, d0 + w]
                for t in range(t0, t1):
                    k = t - t0
                    for w in range(W):
                        dt[w] = delta[b, d0 + w, t]
                        dtx[w] = dt[w] * u[b, d0 + w, t]
                    for n in range(N):
                        bn = Bt[b, g, t, n]
                        for w in range(W):
                            e = fast_exp(dt[w] * a[n, w])
                            ebuf[k, n, w] = e
                            hbuf[k + 1, n, w] = e * hbuf[k, n, w] + dtx[w] * bn
                # reverse through the block
                for t in range(t1 - 1, t0 - 1, -1):
                    k = t - t0
                    for w in range(W):
                        dt[w] = delta[b, d0 + w, t]
                        x[w] = u[b, d0 + w, t]
                        dtx[w] = dt[w] * x[w]
                        dyv[w] = dy[b, d0 + w, t]
                        sgb[w] = zero_of(dt[w])
                        sda[w] = zero_of(dt[w])
                    for n in range(N):
                        bn = Bt[b, g, t, n]
                        cn = Ct[b, g, t, n]
                        sB = zero_of(bn)
                        sC = zero_of(bn)
                        for w in range(W):
                            gn = gh[n, w] + dyv[w] * cn
                            sC += dyv[w] * hbuf[k + 1, n, w]
                            sB += gn * dtx[w]
                            sgb[w] += gn * bn
                            da = gn * hbuf[k, n, w] * ebuf[k, n, w]  # dLoss / d(Δ_t A[n])
                            sda[w] += da * a[n, w]
                            dAacc[n, w] += da * dt[w]
                            gh[n, w] = gn * ebuf[k, n, w]
                        dB_p[b, g, p, t, n] += sB
                        dC_p[b, g, p, t, n] += sC
                    for w in range(W):
                        du[b, d0 + w, t] = sgb[w] * dt[w]
                        ddelta[b, d0 + w, t] = sgb[w] * x[w] + sda[w]
            for n in range(N):
                for w in range(W):
                    dA_k[b, d0 + w, n] = dAacc[n, w]
                    dh0[b, d0 + w, n] = gh[n, w]
