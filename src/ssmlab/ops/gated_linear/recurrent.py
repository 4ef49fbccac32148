"""Gated linear attention on the fused diagonal recurrence (ssmlab.ops.linear_recurrence).

Every (key channel, value channel) pair of the K × V state is a scalar recurrence with the decay
of its key channel:
    S_t[k, v] = exp(log_decay_t[k]) S_{t-1}[k, v] + k_t[k] v_t[v],      o_t = scale · q_t S_t,
so all states come from one linear_recurrence call on (B, H, K, V, L) tensors (a Numba kernel,
one pass over L per row, exact gradients by its reverse-time recurrence) and the read-out is one
einsum. Work and memory O(B·H·K·V·L): no (Q, Q) in-chunk decays. For short sequences and small
heads (the ICL paper's prompts: L ≈ 20, K·V ≤ 64) this is several times faster than the chunked
algorithm, whose per-key-channel decays cost O(B·H·K·L·Q); benchmarks/gated_linear.py measures
the switch that gated_linear_attention's "auto" uses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssmlab.ops.linear_recurrence import linear_recurrence


def gated_linear_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    scale: float = 1.0,
    h0: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """o (B, H, L, V) [and S_L (B, H, K, V)]; same semantics as gated_linear_ref."""
    Bsz, H, L, K = q.shape
    if L == 0:
        o = v.new_zeros(Bsz, H, 0, v.shape[-1])
        return (o, h0 if h0 is not None else q.new_zeros(Bsz, H, K, v.shape[-1])) \
            if return_last_state else o
    decay = torch.exp(log_decay)  # (B, H, L) or (B, H, L, K)
    if decay.dim() == 3:
        decay = decay.unsqueeze(-1)  # one factor for every key channel
    a = decay.permute(0, 1, 3, 2).unsqueeze(3)  # (B, H, K|1, 1, L)
    b = torch.einsum("bhlk,bhlv->bhkvl", k, v)  # (B, H, K, V, L): k_t[k] v_t[v]
    S = linear_recurrence(a, b, h0=h0)  # (B, H, K, V, L)
    o = torch.einsum("bhlk,bhkvl->bhlv", q * scale, S)  # (B, H, L, V)
    return (o, S[..., -1]) if return_last_state else o
