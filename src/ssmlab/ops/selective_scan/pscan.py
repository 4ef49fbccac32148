"""Blelloch parallel scan in pure PyTorch: the baseline fast path (in the style of mamba.py).

Glossary: Ā_t = exp(Δ_t A) ("decay", (B, D, L, N)), X_t = Δ_t x_t B_t ("drive", (B, D, L, N)),
H_t the state. The op computes all states of the first-order recurrence

    H_t = Ā_t ⊙ H_{t-1} + X_t,     H_{-1} = 0,

over the time axis (dim -2) with the associative operator (a1, x1) ∘ (a2, x2) = (a1 a2, a2 x1 + x2)
in O(log L) sequential levels of whole-tensor PyTorch ops: an up-sweep that combines pairs of
blocks level by level, then a down-sweep that finishes the elements left partial. Lengths that
are not a power of two are padded at the end with the identity (Ā = 1, X = 0), which leaves the
first L states unchanged.

Backward (custom, so autograd does not store every level): with g_t = dLoss/dH_t summed over the
future, g_t = dH_t + Ā_{t+1} ⊙ g_{t+1}, which is the same scan run backwards in time with the
decays shifted by one; then dX_t = g_t and dĀ_t = g_t ⊙ H_{t-1}.

This path materialises (B, D, L, N) tensors (several of them), which is exactly why it is the
baseline and not the default: see benchmarks/scan.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _blelloch_inplace(a: Tensor, x: Tensor) -> None:
    """In-place inclusive scan over dim -2 (length a power of two); a is clobbered, x -> H."""
    levels: list[tuple[Tensor, Tensor]] = []
    aa, xx = a, x
    while xx.shape[-2] > 1:
        T = xx.shape[-2]
        aa = aa.unflatten(-2, (T // 2, 2))  # (..., T/2, 2, N)
        xx = xx.unflatten(-2, (T // 2, 2))  # (..., T/2, 2, N)
        # up-sweep: the right block of each pair absorbs the left one
        xx[..., 1, :].addcmul_(aa[..., 1, :], xx[..., 0, :])
        aa[..., 1, :].mul_(aa[..., 0, :])
        levels.append((aa, xx))
        aa, xx = aa[..., 1, :], xx[..., 1, :]  # (..., T/2, N) strided views
    # down-sweep: at each level, odd elements are complete prefixes; even element m >= 1
    # (block ending at (2m+1)s - 1) still lacks the prefix ending at 2ms - 1 = odd element m-1.
    for aa, xx in reversed(levels):
        if xx.shape[-3] > 1:
            xx[..., 1:, 0, :].addcmul_(aa[..., 1:, 0, :], xx[..., :-1, 1, :])


def pscan(a: Tensor, x: Tensor) -> Tensor:
    """All states H (…, L, N) of H_t = a_t ⊙ H_{t-1} + x_t (H_{-1} = 0), scanned over dim -2."""
    L = x.shape[-2]
    T = _next_pow2(L)
    aw = F.pad(a, (0, 0, 0, T - L), value=1.0).contiguous()  # (..., T, N) working copies
    xw = F.pad(x, (0, 0, 0, T - L), value=0.0).contiguous()
    _blelloch_inplace(aw, xw)
    return xw[..., :L, :]


class PScanFn(Function):
    """H = pscan(a, x) with the reverse-scan backward of the module doc."""

    generate_vmap_rule = True

    @staticmethod
    def forward(a: Tensor, x: Tensor) -> Tensor:
        return pscan(a, x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _ = inputs
        ctx.save_for_backward(a, output)

    @staticmethod
    def backward(ctx, dH: Tensor):
        a, H = ctx.saved_tensors
        # g_t = dH_t + a_{t+1} g_{t+1}: scan the flipped sequence with decays shifted by one.
        a_next = F.pad(a[..., 1:, :], (0, 0, 0, 1), value=1.0)  # a_{t+1}, (..., L, N)
        g = pscan(a_next.flip(-2), dH.flip(-2)).flip(-2)  # (..., L, N)
        H_prev = F.pad(H[..., :-1, :], (0, 0, 1, 0))  # H_{t-1}, H_{-1} = 0
        return g * H_prev, g


def pscan_scan_core(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Bare recurrence (y, h_L) with u, delta (B, D, L); A (D, N); B, C (B, D, N, L) per channel."""
    dA = torch.exp(delta.unsqueeze(-1) * A[:, None, :])  # (B, D, L, N)
    dBu = (delta * u).unsqueeze(-1) * B.transpose(-1, -2)  # (B, D, L, N)
    if h0 is not None and dBu.shape[-2] > 0:
        # fold the initial state into the first drive: H_0 = Ā_0 h0 + X_0
        first = dBu[..., :1, :] + dA[..., :1, :] * h0.unsqueeze(-2)
        dBu = torch.cat([first, dBu[..., 1:, :]], dim=-2)
    H = PScanFn.apply(dA, dBu)  # (B, D, L, N)
    y = (H * C.transpose(-1, -2)).sum(-1)  # (B, D, L)
    if H.shape[-2] == 0:
        h_last = u.new_zeros(*u.shape[:2], A.shape[-1]) if h0 is None else h0
    else:
        h_last = H[..., -1, :]
    return y, h_last
