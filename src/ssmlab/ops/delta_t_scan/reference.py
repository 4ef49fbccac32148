"""Reference Mamba-ΔT scan: the plain loop over time (the executable specification).

Glossary (code name -> paper symbol; Mamba-ΔT, Huang et al. 2025, arXiv 2506.11891):
    u      x_t      channel inputs                               (B, L, d)
    delta  Δ_t      per-state step sizes (already softplus-ed)   (B, L, N)
    A      Λ        decays (negative reals)                      (d, N)
    Bin    B_t      input vectors (or Δ_t ⊙ B_t)                 (B, L, N)
    C      C_t      output vectors                               (B, L, N)

    h_t[e, n] = exp(Λ[e, n] Δ_t[n]) h_{t-1}[e, n] + u_t[e] B_t[n],   h_{-1} = 0,
    y_t[e]    = Σ_n C_t[n] h_t[e, n]                                  -> y (B, L, d).

The input dependence of the decay runs along the state axis N (shared by all d channels),
unlike Mamba's S6 (along the channels). Gradients come from autograd through the loop.
"""

from __future__ import annotations

import torch
from torch import Tensor


def delta_t_scan_ref(u: Tensor, delta: Tensor, A: Tensor, Bin: Tensor, C: Tensor) -> Tensor:
    """y (B, L, d) of the Mamba-ΔT recurrence (module doc), one step at a time."""
    Bsz, L, d = u.shape
    N = A.shape[-1]
    h = u.new_zeros(Bsz, d, N)  # (B, d, N)
    ys = []
    for t in range(L):
        decay = torch.exp(A[None] * delta[:, t, None, :])  # (B, d, N)
        h = decay * h + u[:, t, :, None] * Bin[:, t, None, :]  # (B, d, N)
        ys.append((h * C[:, t, None, :]).sum(-1))  # (B, d)
    return torch.stack(ys, dim=1) if ys else u.new_zeros(Bsz, 0, d)
