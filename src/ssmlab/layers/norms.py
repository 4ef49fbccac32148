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
    """Mamba-2's gated norm with norm_before_gate=False: y = RMSNorm(x ⊙ SiLU(z)) · weight.

    group_size=None normalises over the whole last dim (mamba_ssm's Mamba2Simple); a group_size
    that divides d normalises each consecutive group of that many channels by its own RMS
    (mamba_ssm's Mamba2 and transformers' Mamba2Mixer use d_inner / ngroups), which differs from
    the whole-dim norm as soon as there is more than one group."""

    def __init__(self, d: int, eps: float = 1e-5, group_size: int | None = None):
        super().__init__(d, eps=eps)
        if group_size is not None and (group_size < 1 or d % group_size):
            raise ValueError(f"group_size={group_size} must divide d={d}")
        self.group_size = group_size

    def forward(self, x: Tensor, z: Tensor) -> Tensor:  # type: ignore[override]
        g = x * F.silu(z)  # (..., d)
        if self.group_size is None or self.group_size == g.shape[-1]:
            return super().forward(g)
        grouped = g.unflatten(-1, (-1, self.group_size))  # (..., d / group_size, group_size)
        normed = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.flatten(-2) * self.weight
