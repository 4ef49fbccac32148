"""What every mixer shares: the `Mixer` interface, the `MixerCore` it exposes, and the vectorised
helpers that build implied causal matrices.

The attention lens (docs/ops.md, "Attention lens"): a causal linear mixer's *core* is a map
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

from ssmlab.errors import UserError
from ssmlab.ops.segsum import causal_mask, segsum

__all__ = ["Mixer", "MixerCore", "apply_matrix", "causal_mask", "check_backend",
           "segment_sum", "toeplitz_causal"]


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

    Subclasses implement `forward`, `core`, `attention_matrix` and `readout`, with
    `forward(x) == readout(x, core(x).output)` and
    `core(x).output == apply_matrix(attention_matrix(x), core(x).values)` (both tested).
    """

    d_model: int
    backend: str

    def core(self, x: Tensor) -> MixerCore:  # pragma: no cover - interface
        """Values (B, H, L, P) and core output (B, H, L, P), by the forward path."""
        raise NotImplementedError

    def attention_matrix(self, x: Tensor) -> Tensor:  # pragma: no cover - interface
        """The implied causal matrix (B, H, L, L), in closed form."""
        raise NotImplementedError

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:  # pragma: no cover - interface
        """The mixer's output (B, L, d_model) from its core output: skips, gates, projections."""
        raise NotImplementedError


def apply_matrix(M: Tensor, values: Tensor) -> Tensor:
    """y[b, h, t] = Σ_s M[b, h, t, s] v[b, h, s]: (B, H, L, L) × (B, H, L, P) -> (B, H, L, P)."""
    return torch.einsum("bhts,bhsp->bhtp", M, values)


def segment_sum(log_a: Tensor) -> Tensor:
    """(..., L) -> (..., L, L): Σ_{j=s+1..t} log_a_j for s ≤ t and -inf for s > t, so that
    exp() is the causal decay matrix Π_{j=s+1..t} a_j directly (ssmlab.ops.segsum, masked)."""
    L = log_a.shape[-1]
    return segsum(log_a).masked_fill(~causal_mask(L, log_a.device), float("-inf"))


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
        raise UserError(f"backend must be a non-empty string, got {backend!r}")
    return backend
