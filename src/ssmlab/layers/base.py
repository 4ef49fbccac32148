"""What every mixer shares: the `Mixer` interface, the `MixerCore` it exposes, and the vectorised
helpers that build implied causal matrices.

The attention lens (papers/README.md): a causal linear mixer's *core* is a map
    y_t = Σ_{s ≤ t} M_{t,s} v_s          (per head / channel h)
from a value sequence v (B, H, L, P) to a core output y (B, H, L, P). `attention_matrix(x)` returns
M (B, H, L, L) in closed form (vectorised, no loop over positions) and `core(x)` returns (v, y)
computed by the same path as `forward` (the scan / FFT / attention kernel). The two must agree to
floating-point precision; the tests check this for every mixer. What "core" excludes (the D skip,
the z gate, norms, projections) is stated in each mixer's docstring.

Shape legend: B batch, L length, H heads (or channels for per-channel mixers), P value width
per head, N state size, D channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MixerCore:
    """A mixer's core: `output[b, h, t] = Σ_s M[b, h, t, s] · values[b, h, s]`.

    values: (B, H, L, P) the sequence the implied matrix acts on.
    output: (B, H, L, P) the core output, computed by the mixer's own forward path.
    """

    values: Tensor
    output: Tensor


class Mixer(nn.Module):
    """Base class: a causal sequence mixer (B, L, d_model) -> (B, L, d_model).

    Subclasses implement `forward`, `core` and `attention_matrix` (see module docstring).
    """

    d_model: int

    def core(self, x: Tensor) -> MixerCore:  # pragma: no cover - interface
        raise NotImplementedError

    def attention_matrix(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def apply_matrix(M: Tensor, values: Tensor) -> Tensor:
    """y[b, h, t] = Σ_s M[b, h, t, s] v[b, h, s]: (B, H, L, L) × (B, H, L, P) -> (B, H, L, P)."""
    return torch.einsum("bhts,bhsp->bhtp", M, values)


def causal_mask(L: int, device: torch.device | None = None) -> Tensor:
    """(L, L) bool, True where s ≤ t (row t = query position, column s = key position)."""
    return torch.ones(L, L, dtype=torch.bool, device=device).tril()


def segment_sum(log_a: Tensor) -> Tensor:
    """Segment sums of a log-decay sequence: (..., L) -> (..., L, L).

        out[..., t, s] = Σ_{j = s+1..t} log_a[..., j]   for s ≤ t   (0 on the diagonal),
        out[..., t, s] = -inf                           for s > t,

    so `exp(out)` is the causal decay matrix Π_{j=s+1..t} a_j. Computed as a masked cumulative
    sum over the rows instead of a difference of prefix sums: a difference S_t - S_s cancels
    catastrophically when the prefix sums are large, the masked cumsum adds only the terms it
    needs. Memory (..., L, L).
    """
    L = log_a.shape[-1]
    rows = log_a.unsqueeze(-1).expand(*log_a.shape, L)  # (..., L, L): rows[..., j, s] = log_a_j
    strictly_below = torch.ones(L, L, dtype=torch.bool, device=log_a.device).tril(-1)  # j > s
    sums = rows.masked_fill(~strictly_below, 0.0).cumsum(dim=-2)  # (..., L, L)
    return sums.masked_fill(~causal_mask(L, log_a.device), float("-inf"))


def toeplitz_causal(kernel: Tensor, L: int) -> Tensor:
    """Lower-triangular Toeplitz matrix from a causal kernel: (..., L) -> (..., L, L),
    M[..., t, s] = kernel[..., t - s] for s ≤ t, 0 otherwise (an LTI mixer's implied matrix)."""
    t = torch.arange(L, device=kernel.device)
    lag = t[:, None] - t[None, :]  # (L, L)
    M = kernel[..., lag.clamp(min=0)]  # (..., L, L)
    return M * causal_mask(L, kernel.device).to(kernel.dtype)


def check_backend(backend: str) -> str:
    """Backends are names; the op that receives one validates it (no silent fallback)."""
    if not isinstance(backend, str) or not backend:
        from ssmlab.errors import UserError

        raise UserError(f"backend must be a non-empty string, got {backend!r}")
    return backend
