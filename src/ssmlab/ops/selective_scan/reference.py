"""Reference selective scan: the plain sequential loop, the executable specification.

Glossary (code name -> Mamba paper symbol, Gu & Dao 2023, Alg. 2):
    u       x        input sequence                          (B, D, L)
    delta   Δ        step size, before bias / softplus       (B, D, L)
    A       A        continuous-time diagonal state matrix   (D, N)
    B       B        input projection, per step              (B, N, L) or (B, G, N, L)
    C       C        output projection, per step             (B, N, L) or (B, G, N, L)
    D       D        skip connection                         (D,)
    z       z        gate branch: y <- y * silu(z)           (B, D, L)
    h       h        state                                   (B, D, N)

Discretisation (as in mamba_ssm): zero-order hold for A, Euler for B:
    Ā_t = exp(Δ_t A),   B̄_t x_t = Δ_t B_t x_t,
    h_t = Ā_t ⊙ h_{t-1} + Δ_t B_t x_t,    y_t = C_t · h_t + D x_t.

Grouped B/C (B, G, N, L): channel d reads group d // (D / G), as in mamba_ssm.

The loop unbinds the time axis once (never indexes a full tensor per step), so its backward
stays linear in L; it is still slow and exists to be compared against, not to be used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def expand_groups(M: Tensor, D: int) -> Tensor:
    """(B, N, L) or (B, G, N, L) -> (B, D, N, L) view/copy so channel d sees its group."""
    if M.dim() == 3:
        return M.unsqueeze(1).expand(-1, D, -1, -1)
    G = M.shape[1]
    if D % G:
        raise ValueError(f"channels D={D} not divisible by groups G={G}")
    return M.repeat_interleave(D // G, dim=1)


def prepare_delta(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """Δ = softplus(delta + bias) when requested (mamba_ssm's delta_bias / delta_softplus)."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]  # (B, D, L)
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def selective_scan_ref(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
    D: Tensor | None = None, z: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False,
    return_last_state: bool = False, h0: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential selective scan (Mamba Alg. 2). Returns y (B, D, L) [and h_L (B, D, N)].

    h0: optional initial state (B, D, N), zero by default (an extension over mamba_ssm's ref,
    used for chunked / streaming evaluation).
    """
    Bsz, Dch, L = u.shape
    delta = prepare_delta(delta, delta_bias, delta_softplus)
    Bx = expand_groups(B, Dch)  # (B, D, N, L)
    Cx = expand_groups(C, Dch)  # (B, D, N, L)
    dA = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (B, D, N, L)
    dBu = (delta * u).unsqueeze(2) * Bx  # (B, D, N, L)
    h = u.new_zeros(Bsz, Dch, A.shape[1]) if h0 is None else h0  # (B, D, N)
    ys = []
    for dA_t, dBu_t, C_t in zip(dA.unbind(-1), dBu.unbind(-1), Cx.unbind(-1), strict=True):
        h = dA_t * h + dBu_t  # (B, D, N)
        ys.append((h * C_t).sum(-1))  # (B, D)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(Bsz, Dch, 0)  # (B, D, L)
    if D is not None:
        y = y + D[None, :, None] * u
    if z is not None:
        y = y * F.silu(z)
    return (y, h) if return_last_state else y
