"""Vectorised quantities of a selective SSM layer on one input: the channel-mean implied
attention of Mamba-1, memory factors, the discretised spectral radius and its bound.

Glossary (code -> symbol; every matrix is indexed [t, s], row = output position):
    delta    Δ_t[c]     step size of channel c at token t, after bias and softplus   (L, C)
    A        A[c, n]    continuous-time diagonal state matrix, A = -exp(A_log) < 0     (C, N)
    cum      c_t[c]     Σ_{k≤t} Δ_k[c]; segment sums Σ_{k=s+1..t} Δ_k = c_t - c_s
    B, C     B_s, C_t   input / output projections (Mamba-1: shared by the channels)   (L, N)
    alpha    α_{t,s}    implied attention of channel c:
                        α^c_{t,s} = Σ_n C_t[n] exp(A[c,n] (c_t - c_s)) B_s[n] Δ_s[c]   (s ≤ t)
    f        f_t[c, n]  memory factor exp(Δ_t[c] A[c, n]) ∈ (0, 1): the fraction of state
                        (c, n) kept at step t (1 remembers, 0 forgets: the selectivity paper)
    R_s      retention  mean_{c,n} Π_{k=s+1..L} f_k[c, n]: how much of token s is still in the
                        state after the last token
    tau_c    horizon    1 / (|s_{A,c}| · mean_t Δ_t[c]): tokens until channel c's slowest state
                        (A = s_{A,c} = max_n A[c, n]) decays by a factor e at its mean step
    s_A      s_A        spectral abscissa: max_{c,n} A[c, n] (the eigenvalues of the diagonal A
                        are its entries; all < 0 for A = -exp(A_log))
    rho      ρ_A        max_{t,c,n} |exp(Δ_t[c] A[c,n])| over the input: the largest modulus of an
                        eigenvalue of the discretised transition exp(Δ_t A) (spectral radius)

The channel-mean matrix (1/C) Σ_c α^c costs C·N·L² exponentials if each channel's matrix is
built (6·10⁹ for the 130M model at L = 512). `blocked_implied_attention` instead splits the causal
triangle recursively: for a block whose rows t lie right of a pivot r and columns s left of it,
exp(A (c_t - c_s)) = exp(A (c_t - c_r)) · exp(A (c_r - c_s)) with both factors in (0, 1], so the
block is one matrix product over (c, n) of a left factor C_t ⊙ exp(A(c_t - c_r)) and a right
factor B_s Δ_s ⊙ exp(A(c_r - c_s)) (no overflow; underflow only where the true value
underflows). Exponentials: O(L log L · C N); multiply-adds: L²/2 · C N (BLAS). Tested equal to
ssmlab.ops.attention_lens.implied_attention (each channel, and the mean over all) in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _pad_to(x: Tensor, P: int, dim: int) -> Tensor:
    pad = P - x.shape[dim]
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def blocked_implied_attention(delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              channel_mean: bool = False, channel_chunk: int = 64) -> Tensor:
    """Mamba-1's implied attention α^c_{t,s} (module glossary) of every channel given, (C_ch, L, L),
    or with channel_mean=True their mean (1/C_ch) Σ_c α^c, (L, L) — by the recursive
    factorisation of the module docstring, without building the channels' matrices for the mean.

    delta (L, C_ch) after bias and softplus; A (C_ch, N); B, C (L, N). Causal (zero above the
    diagonal). The diagonal is α^c_{t,t} = Δ_t[c] (C_t · B_t); level h (= 1, 2, 4, ...) fills,
    in every aligned block of 2h positions, the rows of its right half × the columns of its left
    half with one batched matrix product. Equal to ssmlab.ops.attention_lens.implied_attention
    (its channels, or their mean) to rounding (tested in float64); exponentials
    O(L log L · C_ch N) instead of O(L² · C_ch N). The mean runs over chunks of
    `channel_chunk` channels so that each chain of elementwise passes stays in cache (on this
    2-core machine that, not the arithmetic, is what the cost is made of)."""
    L, E = delta.shape
    N = A.shape[1]
    dtype = delta.dtype
    delta, B, C = delta.contiguous(), B.contiguous(), C.contiguous()  # the views below need it
    P = 1 << max(0, math.ceil(math.log2(max(L, 1))))  # padded length: Δ = B = C = 0 past L
    cum = _pad_to(torch.cumsum(delta.double(), 0), P, 0)  # (P, E), float64 segment sums
    dlt = _pad_to(delta, P, 0)  # (P, E)
    Bp, Cp = _pad_to(B, P, 0), _pad_to(C, P, 0)  # (P, N)
    cb = (Cp * Bp).sum(-1)  # (P,): C_t · B_t
    if channel_mean:
        return _channel_mean(cum, dlt, A.to(dtype), Bp, Cp, cb, channel_chunk)[:L, :L]
    Ad = A.to(dtype)  # (E, N)
    out = torch.diag_embed(dlt.T * cb)  # (E, P, P): the diagonal
    h = 1
    while h < P:
        nb = P // (2 * h)
        cum4 = cum.view(nb, 2, h, E)
        cr = cum4[:, 0, h - 1:, :]  # (nb, 1, E): c at the pivot r = last column of the left half
        x_left = (cum4[:, 1] - cr).to(dtype)  # (nb, h, E): Σ_{k=r+1..t} Δ_k ≥ 0
        x_right = (cr - cum4[:, 0]).to(dtype)  # (nb, h, E): Σ_{k=s+1..r} Δ_k ≥ 0
        left = torch.exp_(x_left[..., None] * Ad)  # (nb, h, E, N), entries in (0, 1]
        left.mul_(Cp.view(nb, 2, h, 1, N)[:, 1])
        right = torch.exp_(x_right[..., None] * Ad)  # (nb, h, E, N), entries in (0, 1]
        right.mul_(Bp.view(nb, 2, h, 1, N)[:, 0]).mul_(dlt.view(nb, 2, h, E, 1)[:, 0])
        lt = left.permute(0, 2, 1, 3).reshape(nb * E, h, N)
        rt = right.permute(0, 2, 3, 1).reshape(nb * E, N, h)
        blocks = torch.bmm(lt, rt).view(nb, E, h, h)
        idx = torch.arange(nb)
        out.view(E, nb, 2, h, nb, 2, h)[:, idx, 1, :, idx, 0, :] = blocks
        h *= 2
    return out[:, :L, :L]


def _channel_mean(cum: Tensor, dlt: Tensor, A: Tensor, Bp: Tensor, Cp: Tensor, cb: Tensor,
                  chunk: int) -> Tensor:
    """(1/E) Σ_e α^e (P, P) for padded inputs (blocked_implied_attention). Per level the
    contraction over (e, n) is split: G_n[t, s] = Σ_e exp(A_en x_te) Δ_s[e] exp(A_en x'_se)
    by batched matrix products over channel chunks (a (block, n) batch), then
    Σ_n C_t[n] B_s[n] G_n[t, s] on the small (h × h) blocks, so B and C never multiply the
    big (positions × channels × states) factors."""
    P, E = cum.shape
    N = A.shape[1]
    dtype = dlt.dtype
    out = torch.diag(cb * dlt.sum(-1))  # (P, P): α_{t,t} summed over channels
    levels = []
    h = 1
    while h < P:
        levels.append((h, P // (2 * h), dlt.new_zeros(P // (2 * h) * N, h, h)))
        h *= 2
    log_dlt = torch.log(dlt)  # Δ_s folded into the right factor's exponent (log 0 = -inf → 0)
    for e0 in range(0, E, chunk):
        e1 = min(E, e0 + chunk)
        cm = cum[:, e0:e1].contiguous()  # (P, Ec)
        ld = log_dlt[:, e0:e1].contiguous()
        At = A[e0:e1].T.contiguous()[None, :, None, :]  # (1, N, 1, Ec)
        for h, nb, G in levels:
            cum4 = cm.view(nb, 2, h, -1)
            cr = cum4[:, 0, h - 1:, :]  # (nb, 1, Ec): the pivots
            x_left = (cum4[:, 1] - cr).to(dtype)[:, None]  # (nb, 1, h, Ec) ≥ 0
            x_right = (cr - cum4[:, 0]).to(dtype)[:, None]
            left = torch.exp_(x_left * At)  # (nb, N, h, Ec), entries in (0, 1]
            right = torch.exp_(torch.addcmul(ld.view(nb, 2, 1, h, -1)[:, 0], x_right, At))
            G.baddbmm_(left.view(nb * N, h, -1), right.view(nb * N, h, -1).transpose(1, 2))
    for h, nb, G in levels:
        Cr = Cp.view(nb, 2, h, N)[:, 1]  # (nb, h, N) rows
        Bc = Bp.view(nb, 2, h, N)[:, 0]  # (nb, h, N) columns
        blocks = torch.einsum("bnts,btn,bsn->bts", G.view(nb, N, h, h), Cr, Bc)
        idx = torch.arange(nb)
        out.view(nb, 2, h, nb, 2, h)[idx, 1, :, idx, 0, :] = blocks
    return out / E


def spectral_abscissa(A: Tensor) -> float:
    """s_A = max_{c,n} A[c, n] (diagonal A: its eigenvalues are its entries)."""
    return float(A.max())


def rho_measured(delta: Tensor, A: Tensor) -> float:
    """ρ_A = max_{t,c,n} |exp(Δ_t[c] A[c,n])| over the input, without forming (L, C, N):
    for each channel the extreme is at its largest A (= s_{A,c}) and its smallest (s_{A,c} < 0)
    or largest (s_{A,c} ≥ 0) step."""
    sA = A.max(1).values.double()  # (C,)
    dmin, dmax = delta.double().min(0).values, delta.double().max(0).values  # (C,)
    return float(torch.exp(torch.maximum(sA * dmin, sA * dmax)).max())


def softplus_np(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def rho_bound(A: Tensor, p: Tensor, q_norm: Tensor, B_u: float) -> float:
    """The generalization paper's ρ_A for this layer, worst case over every input with
    ‖u_t‖ ≤ B_u: channel c's step is Δ = softplus(p_c + q_c·u_t) ∈ [softplus(p_c - ‖q_c‖B_u),
    softplus(p_c + ‖q_c‖B_u)], so max_{t} exp(Δ s_{A,c}) ≤ exp(s_{A,c} softplus(p_c ∓ ‖q_c‖B_u))
    (the smaller step when s_{A,c} < 0). Always ≥ `rho_measured` on an input with max ‖u_t‖ ≤ B_u
    (tested)."""
    sA = A.detach().max(1).values.double().numpy()  # (C,)
    p_, qn = p.detach().double().numpy(), q_norm.detach().double().numpy()
    step = np.where(sA < 0, softplus_np(p_ - qn * B_u), softplus_np(p_ + qn * B_u))
    return float(np.exp(sA * step).max())


def step_bound(p: Tensor, q_norm: Tensor, B_u: float) -> float:
    """M_Δ = max_c softplus(|p_c| + ‖q_c‖ B_u): the largest step any admissible input gives."""
    p_, qn = p.detach().double().numpy(), q_norm.detach().double().numpy()
    return float(softplus_np(np.abs(p_) + qn * B_u).max())


def memory_summary(delta: Tensor, A: Tensor, bins: int = 40, lo: float = -8.0,
                   chunk: int = 64) -> dict[str, np.ndarray | float]:
    """The memory factors f_t[c, n] = exp(Δ_t[c] A[c, n]) of one layer (module glossary):
        keep      (L,)  mean_{c,n} f_t: how much of the memory token t lets through
        retention (L,)  R_s = mean_{c,n} exp(A (c_L - c_s)): how much of token s survives to the end
        hist      (bins,) counts of log10 f in [lo, 0] (values below lo in the first bin)
        edges     (bins + 1,)
        tau       (C,)  horizon 1 / (|s_{A,c}| mean_t Δ_t[c]) in tokens (inf when s_{A,c} = 0)
        mean, median of f over all (t, c, n) (the median of an even subsample, ~8000 per chunk)
    Computed in float32 (the inputs' precision here) in chunks of tokens, so the (L, C, N)
    factors never exist at once."""
    L, _ = delta.shape
    d32, A32 = delta.float().contiguous(), A.float().contiguous()
    cum = torch.cumsum(delta.double(), 0)  # (L, C)
    tail = (cum[-1] - cum).float()  # (L, C): Σ_{k=s+1..L} Δ_k
    keep = torch.empty(L)
    ret = torch.empty(L)
    hist = torch.zeros(bins, dtype=torch.float64)
    width = -lo / bins
    total, n_all = 0.0, 0
    samples = []
    for t0 in range(0, L, chunk):
        t1 = min(L, t0 + chunk)
        logf = d32[t0:t1, :, None] * A32  # (l, C, N) = Δ_t A ≤ 0
        b = (logf * (1.0 / (math.log(10) * width)) - lo / width).floor_().clamp_(0, bins - 1)
        hist += torch.bincount(b.reshape(-1).long(), minlength=bins).double()
        f = torch.exp_(logf)
        keep[t0:t1] = f.mean((1, 2))
        total += float(f.sum(dtype=torch.float64))
        n_all += f.numel()
        samples.append(f.reshape(-1)[:: max(1, f.numel() // 8000)])
        ret[t0:t1] = torch.exp_(tail[t0:t1, :, None] * A32).mean((1, 2))
    edges = np.linspace(lo, 0.0, bins + 1)
    sA = A.max(1).values.double()  # (C,)
    rate = sA.abs() * delta.double().mean(0)  # (C,)
    tau = torch.where(rate > 0, 1.0 / rate, torch.full_like(rate, math.inf))
    return {"keep": keep.double().numpy(), "retention": ret.double().numpy(),
            "hist": hist.numpy(), "edges": edges, "tau": tau.numpy(),
            "mean": total / max(n_all, 1), "median": float(torch.cat(samples).median())}


def lookback(alpha: Tensor) -> Tensor:
    """Attention-weighted mean distance Σ_s |α_{t,s}| (t - s) / Σ_s |α_{t,s}|, averaged over the
    rows t: how far back a channel reads, in tokens. alpha (..., L, L) -> (...,)."""
    L = alpha.shape[-1]
    t = torch.arange(L, dtype=alpha.dtype)
    dist = (t[:, None] - t[None, :]).clamp(min=0)  # (L, L)
    w = alpha.abs()
    num, den = (w * dist).sum(-1), w.sum(-1)  # (..., L)
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(alpha.dtype).tiny),
                       torch.zeros_like(num)).mean(-1)


def block_max_abs(alpha: Tensor, size: int = 512) -> Tensor:
    """|α| shrunk to at most size × size by max-pooling blocks, for display (L ≤ size: as is)."""
    L = alpha.shape[-1]
    if L <= size:
        return alpha.abs()
    k = math.ceil(L / size)
    x = alpha.abs().reshape(-1, 1, L, L)
    return F.max_pool2d(x, kernel_size=k, stride=k, ceil_mode=True).reshape(*alpha.shape[:-2], -1,
                                                                            math.ceil(L / k))
