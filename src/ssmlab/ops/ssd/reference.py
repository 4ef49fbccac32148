"""Reference scalar-decay scan (Mamba-2 / SSD): the plain loop over time, the executable spec.

Glossary (code -> Mamba-2 paper symbol, Dao & Gu 2024):
    x      x_t     inputs, P channels per head            (B, L, H, P)
    dt     Δ_t     step size per head (before bias/softplus) (B, L, H)
    A      a       one negative scalar per head            (H,)
    B, C   B_t, C_t input / output projections, G groups   (B, L, G, N); head h reads group
                   h // (H / G)
    D      D       skip per head                           (H,)
    h      h_t     state                                   (B, H, P, N)

    h_t = exp(Δ_t a) h_{t-1} + Δ_t x_t B_t^T,     y_t = h_t C_t  (+ D x_t).

With A broadcast to every state this is selective_scan with channel d = h·P + p (tests check it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def prepare_dt(dt: Tensor, dt_bias: Tensor | None, dt_softplus: bool) -> Tensor:
    """Δ = softplus(dt + dt_bias) when requested (as Mamba-2's dt_bias / dt_softplus)."""
    if dt_bias is not None:
        dt = dt + dt_bias  # (B, L, H)
    if dt_softplus:
        dt = F.softplus(dt)
    return dt


def ssd_ref(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    h0: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential SSD scan -> y (B, L, H, P) [and h_L (B, H, P, N)]."""
    Bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    dt = prepare_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    Bh = B.repeat_interleave(H // G, dim=2)  # (B, L, H, N)
    Ch = C.repeat_interleave(H // G, dim=2)  # (B, L, H, N)
    decay = torch.exp(dt * A)  # (B, L, H)
    drive = (dt.unsqueeze(-1) * x).unsqueeze(-1) * Bh.unsqueeze(-2)  # (B, L, H, P, N)
    h = x.new_zeros(Bsz, H, P, N) if h0 is None else h0  # (B, H, P, N)
    ys = []
    for a_t, X_t, C_t in zip(decay.unbind(1), drive.unbind(1), Ch.unbind(1), strict=True):
        h = a_t[..., None, None] * h + X_t  # (B, H, P, N)
        ys.append((h * C_t.unsqueeze(-2)).sum(-1))  # (B, H, P)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(Bsz, 0, H, P)  # (B, L, H, P)
    if D is not None:
        y = y + D[:, None] * x
    return (y, h) if return_last_state else y
