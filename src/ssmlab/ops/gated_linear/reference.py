"""Reference gated linear attention: the plain loop over time, the executable spec.

Glossary (code -> symbol; RetNet, Sun et al. 2023; GLA, Yang et al. 2024):
    q          q_t     queries (already rotated / feature-mapped by the caller)  (B, H, L, K)
    k          k_t     keys                                                        (B, H, L, K)
    v          v_t     values                                                      (B, H, L, V)
    log_decay  log γ_t (scalar per head and step, RetNet / Mamba-2 style)          (B, H, L)
               log α_t (one per key channel, GLA's diag(α_t))                      (B, H, L, K)
    scale      τ_qk    multiplies every q_t (e.g. K^-1/2)
    S          S_t     the state, K × V per head                                   (B, H, K, V)

    S_t = diag(exp(log_decay_t)) S_{t-1} + k_tᵀ v_t,      o_t = scale · q_t S_t.

(Row-vector convention of both papers: k_tᵀ v_t is the K × V outer product, q_t S_t a V-vector.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def gated_linear_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    scale: float = 1.0,
    h0: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential recurrence -> o (B, H, L, V) [and S_L (B, H, K, V)]."""
    Bsz, H, L, K = q.shape
    V = v.shape[-1]
    decay = torch.exp(log_decay)  # (B, H, L) or (B, H, L, K)
    if decay.dim() == 3:
        decay = decay.unsqueeze(-1)  # (B, H, L, 1): the same factor for every key channel
    S = q.new_zeros(Bsz, H, K, V) if h0 is None else h0  # (B, H, K, V)
    outs = []
    for t in range(L):
        S = decay[:, :, t, :, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, K, V)
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t] * scale, S))  # (B, H, V)
    o = torch.stack(outs, dim=2) if outs else v.new_zeros(Bsz, H, 0, V)  # (B, H, L, V)
    return (o, S) if return_last_state else o
