"""Losses and 0-1 error, one convention for every task.

Binary tasks: the model returns one real score per sample, shape (B,), and labels are ±1 floats
(hinge max(0, 1 - z F) as in the filtering and ICL papers; BCE maps ±1 to {0, 1}).
Multi-class tasks: logits (B, K) and int64 labels; token tasks may pass (B, L, K) / (B, L).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LossName = Literal["hinge", "bce", "ce", "mse"]


def loss_fn(name: LossName, out: Tensor, y: Tensor) -> Tensor:
    if name == "hinge":
        return torch.clamp(1 - y * out, min=0).mean()
    if name == "bce":
        return F.binary_cross_entropy_with_logits(out, (y > 0).to(out.dtype))
    if name == "ce":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), ignore_index=-100)
    if name == "mse":
        return F.mse_loss(out, y.to(out.dtype))
    raise ValueError(f"unknown loss {name!r}")


def error_rate(name: LossName, out: Tensor, y: Tensor) -> Tensor:
    """0-1 error (fraction wrong); for MSE, the mean squared error itself."""
    if name in ("hinge", "bce"):
        return ((out > 0) != (y > 0)).float().mean()
    if name == "ce":
        keep = y != -100
        return (out.argmax(-1)[keep] != y[keep]).float().mean()
    return F.mse_loss(out, y.to(out.dtype))
