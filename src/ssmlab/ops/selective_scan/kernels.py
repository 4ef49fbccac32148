"""Numba kernels of the fused selective scan: forward pass and checkpointed reverse pass.

Glossary (kernel name -> paper symbol, Mamba Alg. 2; "k" = kernel batch, see fused.py):
    u      x_t        inputs                                   (Bk, D, L)
    delta  Δ_t        step sizes, already biased / softplus-ed  (Bk, D, L)
    A      A          decays, one row per A-batch               (Ba, D, N), Bk % Ba == 0,
                      kernel batch b reads A[b // (Bk / Ba)]    (Ba = 1: shared A)
    Bt, Ct B_t, C_t   input / output projections, time-major    (Bk, G, L, N)
    h0     h_{-1}     initial state                             (Bk, D, N)
    ckpt   -          state before step j*K, j = 0..ceil(L/K)-1 (Bk, D, ceil(L/K), N)

Recurrence (ZOH for A, Euler for B, as mamba_ssm):
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,     y_t = C_t · h_t.

Backward (reverse pass; g_t = dLoss/dh_t accumulated from the future, ā_t = exp(Δ_t A)):
    g_t   = ā_{t+1} ⊙ g_{t+1} + dy_t C_t          (g_{L-1} also receives dh_last)
    dC_t += dy_t h_t,     dB_t += g_t Δ_t x_t,     du_t = Δ_t (g_t · B_t)
    dΔ_t  = x_t (g_t · B_t) + Σ_n g_t[n] h_{t-1}[n] ā_t[n] A[n]
    dA   += Σ_t g_t ⊙ h_{t-1} ⊙ ā_t Δ_t,          dh0 = ā_0 ⊙ g_0
The reverse pass walks blocks of K steps from the end; each block's states (and decays ā) are
recomputed from the checkpoint written by the forward pass into a (K+1, N) scratch buffer, so
the backward needs O(Bk·D·N·L/K) extra memory instead of O(Bk·D·N·L) and one exp per element.

Threads: the forward runs prange over (batch, channel). The backward writes dB/dC, which are
shared by the channels of a group, so it runs prange over (batch, group, part): the channels of
a group are split into P parts, each part accumulates into its own dB/dC slice (Bk, G, P, L, N)
and the caller sums over P (P = 1 unless Bk·G is too small to keep the threads busy).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ssmlab.ops._numba import FASTMATH, fast_exp, zero_of


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_forward(u, delta, A, Bt, Ct, h0, K, y, h_last, ckpt):  # pragma: no cover - jitted
    """Fills y (Bk, D, L), h_last (Bk, D, N) and ckpt (Bk, D, nblk, N) in place."""
    Bk, Dc, L = u.shape
    Ba = A.shape[0]
    N = A.shape[2]
    G = Bt.shape[1]
    per_group = Dc // G
    per_a = Bk // Ba
    for idx in prange(Bk * Dc):
        b = idx // Dc
        d = idx - b * Dc
        g = d // per_group
        ab = b // per_a
        h = np.empty(N, dtype=u.dtype)
        e = np.empty(N, dtype=u.dtype)
        a = np.empty(N, dtype=u.dtype)
        for n in range(N):
            h[n] = h0[b, d, n]
            a[n] = A[ab, d, n]
        for t in range(L):
            if t % K == 0:
                j = t // K
                for n in range(N):
                    ckpt[b, d, j, n] = h[n]
            dt = delta[b, d, t]
            dtx = dt * u[b, d, t]
            for n in range(N):
                e[n] = fast_exp(dt * a[n])
            acc = zero_of(dt)
            for n in range(N):
                hn = e[n] * h[n] + dtx * Bt[b, g, t, n]
                h[n] = hn
                acc += hn * Ct[b, g, t, n]
            y[b, d, t] = acc
        for n in range(N):
            h_last[b, d, n] = h[n]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def scan_backward(
    dy, dh_last, u, delta, A, Bt, Ct, ckpt, K, P, du, ddelta, dA_k, dh0, dB_p, dC_p
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
    nblk = ckpt.shape[2]
    for it in prange(Bk * G * P):
        b = it // (G * P)
        rem = it - b * (G * P)
        g = rem // P
        p = rem - g * P
        ab = b // per_a
        d_start = g * per_group + (p * per_group) // P
        d_stop = g * per_group + ((p + 1) * per_group) // P
        hbuf = np.empty((K + 1, N), dtype=u.dtype)  # hbuf[k + 1] = h at step t0 + k
        abuf = np.empty((K, N), dtype=u.dtype)  # abuf[k] = exp(Δ A) at step t0 + k
        gh = np.empty(N, dtype=u.dtype)
        a = np.empty(N, dtype=u.dtype)
        dAacc = np.empty(N, dtype=u.dtype)
        for d in range(d_start, d_stop):
            for n in range(N):
                a[n] = A[ab, d, n]
                gh[n] = dh_last[b, d, n]
                dAacc[n] = 0.0
            for j in range(nblk - 1, -1, -1):
                t0 = j * K
                t1 = min(L, t0 + K)
                for n in range(N):
                    hbuf[0, n] = ckpt[b, d, j, n]
                for t in range(t0, t1):
                    k = t - t0
                    dt = delta[b, d, t]
                    dtx = dt * u[b, d, t]
                    for n in range(N):
                        abuf[k, n] = fast_exp(dt * a[n])
                    for n in range(N):
                        hbuf[k + 1, n] = abuf[k, n] * hbuf[k, n] + dtx * Bt[b, g, t, n]
                for t in range(t1 - 1, t0 - 1, -1):
                    k = t - t0
                    dt = delta[b, d, t]
                    x = u[b, d, t]
                    dyt = dy[b, d, t]
                    dtx = dt * x
                    s_gb = zero_of(dt)
                    s_da = zero_of(dt)
                    for n in range(N):
                        gn = gh[n] + dyt * Ct[b, g, t, n]
                        dC_p[b, g, p, t, n] += dyt * hbuf[k + 1, n]
                        dB_p[b, g, p, t, n] += gn * dtx
                        s_gb += gn * Bt[b, g, t, n]
                        da = gn * hbuf[k, n] * abuf[k, n]  # dLoss / d(Δ_t A[n])
                        s_da += da * a[n]
                        dAacc[n] += da * dt
                        gh[n] = gn * abuf[k, n]
                    du[b, d, t] = s_gb * dt
                    ddelta[b, d, t] = s_gb * x + s_da
            for n in range(N):
                dA_k[b, d, n] = dAacc[n]
                dh0[b, d, n] = gh[n]
