"""Chunked SSD (Mamba-2 paper, Sec. 6 "minimal SSD"): the scalar-decay scan as four matmul stages.

With chunks of Q steps, log-decays ℓ_t = Δ_t a and their in-chunk cumulative sums Λ:
  1. diagonal blocks (inside a chunk, quadratic "attention" form):
       Y_diag[t] = Σ_{s<=t in chunk} (C_t · B_s) exp(segsum(ℓ)[t, s]) Δ_s x_s
  2. each chunk's own contribution to the state at its end:
       S_c = Σ_s exp(Λ_end - Λ_s) Δ_s x_s B_s^T
  3. inter-chunk recurrence (the states entering each chunk, h0 included):
       H_c = Σ_{c' <= c} exp(segsum over chunk totals) S_{c'}
  4. off-diagonal blocks: Y_off[t] = exp(Λ_t) H_c C_t
y = Y_diag + Y_off (+ D x). Any L: the last chunk is padded with Δ = 0 (decay 1, no input), which
changes neither the outputs kept nor the final state. Plain PyTorch ops, so autograd (and vmap)
give exact gradients; memory O(B·H·L·Q) for stage 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmlab.ops.segsum import causal_mask, segsum
from ssmlab.ops.ssd.reference import prepare_dt

DEFAULT_CHUNK_SIZE = 64


def ssd_chunked(
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
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD -> y (B, L, H, P) [and h_L (B, H, P, N)]; same semantics as ssd_ref."""
    Bsz, L, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    # a chunk longer than the sequence would only add padding (its in-chunk work grows as Q²):
    # one chunk of L steps computes the same outputs
    Q = max(1, min(int(chunk_size), L))
    nc = max(1, -(-L // Q))
    pad = nc * Q - L
    dt = prepare_dt(dt, dt_bias, dt_softplus)  # (B, L, H)
    xdt = x * dt.unsqueeze(-1)  # (B, L, H, P)
    ell = dt * A  # (B, L, H) log-decays
    if pad:
        xdt = F.pad(xdt, (0, 0, 0, 0, 0, pad))
        ell = F.pad(ell, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    Bh = B.repeat_interleave(H // G, dim=2).view(Bsz, nc, Q, H, N)  # (B, c, Q, H, N)
    Ch = C.repeat_interleave(H // G, dim=2).view(Bsz, nc, Q, H, N)  # (B, c, Q, H, N)
    xdt = xdt.view(Bsz, nc, Q, H, P)  # (B, c, Q, H, P)
    ell = ell.view(Bsz, nc, Q, H).permute(0, 3, 1, 2)  # (B, H, c, Q)
    lam = ell.cumsum(-1)  # (B, H, c, Q)

    # 1. inside each chunk
    decay_in = torch.exp(segsum(ell)) * causal_mask(Q, x.device)  # (B, H, c, Q_t, Q_s)
    y_diag = torch.einsum("bcthn,bcshn,bhcts,bcshp->bcthp", Ch, Bh, decay_in, xdt)

    # 2. state at each chunk's end from its own inputs
    decay_to_end = torch.exp(lam[..., -1:] - lam)  # (B, H, c, Q)
    chunk_states = torch.einsum("bcshn,bhcs,bcshp->bchpn", Bh, decay_to_end, xdt)

    # 3. states entering each chunk (index 0: h0), and the final state
    start = x.new_zeros(Bsz, 1, H, P, N) if h0 is None else h0.unsqueeze(1)  # (B, 1, H, P, N)
    states = torch.cat([start, chunk_states], dim=1)  # (B, c+1, H, P, N)
    totals = F.pad(lam[..., -1], (1, 0))  # (B, H, c+1)
    decay_across = torch.exp(segsum(totals)) * causal_mask(nc + 1, x.device)  # (B, H, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", decay_across, states)  # (B, c+1, H, P, N)
    entering, final = states[:, :-1], states[:, -1]

    # 4. contribution of the entering state inside each chunk
    y_off = torch.einsum("bcthn,bchpn,bhct->bcthp", Ch, entering, torch.exp(lam))

    y = (y_diag + y_off).reshape(Bsz, nc * Q, H, P)[:, :L]  # (B, L, H, P)
    if D is not None:
        y = y + D[:, None] * x
    return (y, final) if return_last_state else y
