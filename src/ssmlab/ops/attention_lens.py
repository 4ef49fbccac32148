"""The attention lens: the causal L×L matrix that a selective SSM applies to its inputs.

Glossary (code -> symbol; the identity y_t = Σ_s G_{s,t} (c_t · b_s) x_s below is derived in
docs/ops.md, "Attention lens"):
    z      z_t     gate pre-activation, Δ_t = softplus(z_t)            (…, L)
    G      G_{s,t} gate: σ(z_s) Π_{j=s+1..t} (1 - σ(z_j))                 returned as [..., t, s]
    delta  Δ       step sizes (before bias / softplus, as selective_scan) (B, D, L)
    A      A       diagonal decays                                       (D, N)
    B, C   B_s, C_t input / output projections                           (B, N, L) | (B, G, N, L)
    M      M_{t,s} implied attention, y_t = Σ_s M_{t,s} x_s               (B, D, L, L)

Convention: every matrix here is indexed [..., t, s] (row = output position t, column = input
position s), lower-triangular, so `y = M @ x` along the last axis.

With A = -1 and Δ = softplus(z) (zero-order hold): Ā = exp(-Δ) = 1 - σ(z) and the ZOH input weight
1 - exp(-Δ) = σ(z), hence y_t = Σ_s G_{s,t} (c_t · b_s) x_s. NB: mamba_ssm's selective scan uses
the Euler input weight Δ_s, not σ(z_s); to reproduce G with `selective_scan`, feed B_s scaled by
σ(z_s) / Δ_s (tests/ops/test_attention_lens.py does exactly this).

All functions are vectorised over positions (segment sums of log-decays, see segsum.py; masked
before exp, so the upper half never produces inf/NaN, not even in gradients). Memory is
O(… · L²); implied_attention loops over the N states (not over positions) to keep the
intermediate at (B, D, L, L).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.segsum import causal_mask, segsum
from ssmlab.ops.selective_scan.reference import expand_groups, prepare_delta

__all__ = ["gate_matrix", "implied_attention", "ssd_implied_attention"]


def gate_matrix(z: Tensor) -> Tensor:
    """G[..., t, s] = σ(z_s) Π_{j=s+1..t} (1 - σ(z_j)) for s <= t, else 0.  (…, L) -> (…, L, L).

    In logs: log σ(z_s) = -softplus(-z_s) and log(1 - σ(z_j)) = -softplus(z_j), both finite for
    any z, so G is exact even when σ saturates in float arithmetic.
    """
    L = z.shape[-1]
    log_keep = -segsum(F.softplus(z))  # (…, L_t, L_s): Σ_{j=s+1..t} log(1 - σ(z_j))
    log_write = -F.softplus(-z).unsqueeze(-2)  # (…, 1, L_s): log σ(z_s)
    mask = causal_mask(L, z.device)
    return torch.exp(log_keep + log_write) * mask  # (…, L, L)


def implied_attention(
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """M (B, D, L, L) with selective_scan(u, delta, A, B, C, D, z, ...)[b, d, t] = Σ_s M[b, d, t, s] u[b, d, s].

    M[b,d,t,s] = Σ_n C[b,n,t] exp(Σ_{j=s+1..t} Δ[b,d,j] A[d,n]) Δ[b,d,s] B[b,n,s]   (s <= t),
    plus D[d] on the diagonal, each row t scaled by silu(z[b,d,t]) when z is given. The
    arguments mean what they mean in selective_scan (same Δ preprocessing, grouped B/C).
    """
    if delta.dim() != 3 or A.dim() != 2 or A.shape[0] != delta.shape[1]:
        raise OpsInputError(
            f"implied_attention: need delta (B, D, L) and A (D, N), got {tuple(delta.shape)} "
            f"and {tuple(A.shape)}"
        )
    Bsz, Dch, L = delta.shape
    dt = prepare_delta(delta, delta_bias, delta_softplus)  # (B, D, L)
    Bx = expand_groups(B, Dch)  # (B, D, N, L)
    Cx = expand_groups(C, Dch)  # (B, D, N, L)
    S = segsum(dt)  # (B, D, L_t, L_s): Σ_{j=s+1..t} Δ_j, >= 0 when Δ >= 0
    mask = causal_mask(L, delta.device)  # (L, L)
    M = delta.new_zeros(Bsz, Dch, L, L)  # (B, D, L, L)
    for n in range(A.shape[1]):
        decay = torch.exp(A[None, :, n, None, None] * S)  # (B, D, L, L); S = 0 above diagonal
        M = M + decay * (Cx[:, :, n, :, None] * (dt * Bx[:, :, n, :])[:, :, None, :])
    M = M * mask
    if D is not None:
        M = M + torch.diag_embed(D[None, :, None].expand(Bsz, Dch, L))
    if z is not None:
        M = M * F.silu(z).unsqueeze(-1)
    return M


def ssd_implied_attention(
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    """M (B, H, L, L) of the scalar-decay (Mamba-2 / SSD) scan of ssmlab.ops.ssd:
    y[b, t, h, p] = Σ_s M[b, h, t, s] x[b, s, h, p], with

    M[b,h,t,s] = (C[b,t,g(h)] · B[b,s,g(h)]) exp(Σ_{j=s+1..t} dt[b,j,h] A[h]) dt[b,s,h]  (s <= t),
    plus D[h] on the diagonal. dt (B, L, H); A (H,); B, C (B, L, G, N), head h reads group
    h // (H / G). This is the 1-semiseparable matrix of the Mamba-2 paper.
    """
    if dt.dim() != 3 or A.dim() != 1 or A.shape[0] != dt.shape[2]:
        raise OpsInputError(
            f"ssd_implied_attention: need dt (B, L, H) and A (H,), got {tuple(dt.shape)} "
            f"and {tuple(A.shape)}"
        )
    Bsz, L, H = dt.shape
    G = B.shape[2]
    if H % G:
        raise OpsInputError(f"ssd_implied_attention: heads H={H} not divisible by groups G={G}")
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    dtA = (dt * A).transpose(1, 2)  # (B, H, L)
    mask = causal_mask(L, dt.device)
    decay = torch.exp(segsum(dtA)) * mask  # (B, H, L_t, L_s)
    Bh = B.repeat_interleave(H // G, dim=2)  # (B, L, H, N)
    Ch = C.repeat_interleave(H // G, dim=2)  # (B, L, H, N)
    CB = torch.einsum("bthn,bshn->bhts", Ch, Bh)  # (B, H, L_t, L_s)
    M = CB * decay * dt.transpose(1, 2)[:, :, None, :]  # (B, H, L, L)
    if D is not None:
        M = M + torch.diag_embed(D[None, :, None].expand(Bsz, H, L))
    return M
