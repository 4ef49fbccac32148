"""Chunked gated linear attention: parallel inside chunks of Q steps, recurrent across chunks
(RetNet's "chunkwise recurrent representation", Sun et al. 2023 Sec. 2.2; GLA's chunkwise form,
Yang et al. 2024 Sec. 4.2, without the factorised q ⊙ exp(Λ), k ⊙ exp(-Λ) trick).

Per chunk, with in-chunk log-decays g_j (scalar or per key channel) and
    Λ_t   = Σ_{j ≤ t} g_j          (prefix inside the chunk, inclusive; ≤ 0)
    Γ_s   = Σ_{j > s} g_j          (suffix to the chunk's end, exclusive; ≤ 0)
    T     = Σ_j g_j                (the chunk's total)
  1. inside the chunk (the quadratic "attention" form):
       o_t ← Σ_{s ≤ t} (Σ_k q_t[k] k_s[k] exp(Σ_{j=s+1..t} g_j[k])) v_s
     the decay exp(segsum(g)) is built per pair (t, s) (and per key channel for GLA) from segment
     sums (ssmlab.ops.segsum), never as exp(Λ_t) · exp(-Λ_s): that product overflows as soon as a
     chunk's cumulative log-decay passes ~ -88 (float32) / -709 (float64), which GLA's gates reach
     (GLA's paper avoids it with a secondary chunking in log space; here every exponent is ≤ 0).
  2. the chunk's own contribution to the state at its end:  U_c = Σ_s diag(exp(Γ_s)) k_sᵀ v_s
  3. across chunks (a loop over the L/Q chunks):  S_c = diag(exp(T_c)) S_{c-1} + U_c,  S_0 = h0
  4. the entering state inside the chunk:  o_t ← (q_t ⊙ exp(Λ_t)) S_{c-1}
Any L: the last chunk is padded with q = k = v = 0 and g = 0 (decay 1, no input), which changes
neither the outputs kept nor the final state. Plain PyTorch ops, so autograd gives exact gradients.
Memory: O(B·H·L·Q) for a scalar decay, O(B·H·L·Q·K) for a per-channel one (stage 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmlab.ops.segsum import causal_mask, segsum

DEFAULT_CHUNK_SIZE = 64


def _pad_time(t: Tensor, pad: int, time_dim: int = 2) -> Tensor:
    """Zero-pad dimension `time_dim` (of a (B, H, L, ...) tensor) at its end by `pad` steps."""
    if not pad:
        return t
    widths = [0, 0] * (t.dim() - 1 - time_dim) + [0, pad]
    return F.pad(t, widths)


def _suffix_exclusive(g: Tensor, dim: int) -> Tensor:
    """Γ_s = Σ_{j > s} g_j along `dim`, as a reversed cumulative sum of the shifted g (no
    subtraction of two large prefix sums)."""
    shifted = torch.cat([g.narrow(dim, 1, g.shape[dim] - 1), torch.zeros_like(g.narrow(dim, 0, 1))],
                        dim=dim)
    return shifted.flip(dim).cumsum(dim).flip(dim)


def gated_linear_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    scale: float = 1.0,
    h0: Tensor | None = None,
    return_last_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked recurrence -> o (B, H, L, V) [and S_L (B, H, K, V)]; same semantics as
    gated_linear_ref."""
    Bsz, H, L, K = q.shape
    V = v.shape[-1]
    # a chunk longer than the sequence would only add padding (its in-chunk work grows as Q²):
    # one chunk of L steps computes the same outputs
    Q = max(1, min(int(chunk_size), L))
    nc = max(1, -(-L // Q))
    pad = nc * Q - L
    scalar = log_decay.dim() == 3
    q = _pad_time(q * scale, pad).view(Bsz, H, nc, Q, K)  # (B, H, c, Q, K)
    k = _pad_time(k, pad).view(Bsz, H, nc, Q, K)  # (B, H, c, Q, K)
    v = _pad_time(v, pad).view(Bsz, H, nc, Q, V)  # (B, H, c, Q, V)
    g = _pad_time(log_decay, pad)
    g = g.view(Bsz, H, nc, Q) if scalar else g.view(Bsz, H, nc, Q, K)  # (B, H, c, Q[, K])
    mask = causal_mask(Q, q.device)  # (Q_t, Q_s)

    # 1. inside each chunk
    if scalar:
        decay_in = torch.exp(segsum(g).masked_fill(~mask, float("-inf")))  # (B, H, c, Q_t, Q_s)
        scores = (q @ k.transpose(-1, -2)) * decay_in  # (B, H, c, Q_t, Q_s)
    else:
        seg = segsum(g.transpose(-1, -2)).masked_fill(~mask, float("-inf"))  # (B, H, c, K, Qt, Qs)
        decay_in = torch.exp(seg)
        scores = torch.einsum("bhctk,bhcsk,bhckts->bhcts", q, k, decay_in)  # (B, H, c, Q_t, Q_s)
    o = scores @ v  # (B, H, c, Q, V)

    # 2. each chunk's contribution to the state at its end
    gd = 3  # the in-chunk time dimension of g
    to_end = torch.exp(_suffix_exclusive(g, gd))  # (B, H, c, Q[, K])
    k_end = k * (to_end.unsqueeze(-1) if scalar else to_end)  # (B, H, c, Q, K)
    local = k_end.transpose(-1, -2) @ v  # (B, H, c, K, V)

    # 3. states entering each chunk, and the final state
    lam = g.cumsum(gd)  # (B, H, c, Q[, K]) inclusive prefix
    total = torch.exp(g.sum(gd))  # (B, H, c[, K])
    S = q.new_zeros(Bsz, H, K, V) if h0 is None else h0  # (B, H, K, V)
    entering = []
    for c in range(nc):
        entering.append(S)
        a = total[:, :, c]  # (B, H) or (B, H, K)
        a = a[..., None, None] if scalar else a[..., None]  # broadcast over (K, V) / V
        S = a * S + local[:, :, c]  # (B, H, K, V)
    entering_t = torch.stack(entering, dim=2)  # (B, H, c, K, V)

    # 4. the entering state inside each chunk
    q_in = q * (torch.exp(lam).unsqueeze(-1) if scalar else torch.exp(lam))  # (B, H, c, Q, K)
    o = o + q_in @ entering_t  # (B, H, c, Q, V)

    o = o.reshape(Bsz, H, nc * Q, V)[:, :, :L]  # (B, H, L, V)
    return (o, S) if return_last_state else o
