"""Normalisations used by the mixers and the backbones (plain PyTorch, any dtype)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) · weight over the last dim (Zhang & Sennrich 2019)."""

    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class GatedRMSNorm(RMSNorm):
    """Mamba-2's gated norm with norm_before_gate=False: y = RMSNorm(x ⊙ SiLU(z)) · weight."""

    def forward(self, x: Tensor, z: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x * F.silu(z))
