"""Tiny models and data for the trainer / ensemble tests (shapes kept small: 2-core budget)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.seeding import generator

DT = torch.float64


class TinyFiltering(nn.Module):
    """The filtering paper's model at toy size: gate σ(w_Δ·x), A = -1, frozen W_B, W_C (by the
    caller's `frozen`), head (1/L) Σ_l Σ_i v_i ReLU(W_O[i]·y_l) with v a buffer."""

    def __init__(self, seed: int, d: int = 4, m: int = 4, dtype: torch.dtype = DT):
        super().__init__()
        g = generator(seed, "init")
        self.w_delta = nn.Parameter(torch.zeros(d, dtype=dtype))
        self.W_B = nn.Parameter(torch.randn(d, m, generator=g, dtype=dtype) / math.sqrt(d))
        self.W_C = nn.Parameter(torch.randn(d, m, generator=g, dtype=dtype) / math.sqrt(d))
        self.W_O = nn.Parameter(torch.randn(m, d, generator=g, dtype=dtype) * 0.5)
        v = (torch.randint(0, 2, (m,), generator=g) * 2 - 1).to(dtype) / math.sqrt(m)
        self.register_buffer("v", v)

    def forward(self, X: Tensor) -> Tensor:  # X (B, L, d) -> (B,)
        L = X.shape[1]
        z = X @ self.w_delta  # (B, L)
        log_in, log_keep = -F.softplus(-z), -F.softplus(z)  # log σ(z), log(1 - σ(z))
        P = torch.cumsum(log_keep, -1)  # (B, L)
        logG = P[:, None, :] - P[:, :, None] + log_in[:, :, None]  # (B, s, t)
        causal = torch.ones(L, L, dtype=torch.bool, device=X.device).triu()
        G = torch.where(causal, logG, -math.inf).exp()  # (B, s, t)
        bc = (X @ self.W_B) @ (X @ self.W_C).transpose(-1, -2)  # (B, s, t)
        y = (G * bc).transpose(-1, -2) @ X  # (B, t, d)
        return (torch.relu(y @ self.W_O.T) @ self.v).mean(-1)


def majority_data(seed: int, split: str, n: int = 24, d: int = 4, L: int = 5,
                  alpha_r: float = 0.6, tau: float = 0.05) -> tuple[Tensor, Tensor]:
    """Majority-voting tokens: a fraction alpha_r of o_z, the rest o_-z or irrelevant."""
    g = generator(seed, split)
    z = torch.randint(0, 2, (n,), generator=g) * 2 - 1  # (n,)
    eye = torch.eye(d, dtype=DT)
    u = torch.rand(n, L, generator=g)
    irr = torch.randint(2, d, (n, L), generator=g)
    rel = torch.where(z[:, None] > 0, 0, 1).expand(n, L)
    idx = torch.where(u < alpha_r, rel, torch.where(u < alpha_r + 0.2, 1 - rel, irr))
    X = eye[idx] + tau * torch.randn(n, L, d, generator=g, dtype=DT)  # (n, L, d)
    return X, z.to(DT)


def linear_data(seed: int, split: str, n: int = 32, d: int = 5, k: int = 0,
                margin: float = 0.2) -> tuple[Tensor, Tensor]:
    """Linearly separable ±1 data (k = 0), or k-class labels of a random linear map (k > 0)."""
    g = generator(seed, split)
    X = torch.randn(n, d, generator=g, dtype=DT)
    w = torch.randn(d, max(k, 1), generator=g, dtype=DT)
    s = X @ w  # (n, k)
    if k:
        return X, s.argmax(-1)
    X = X + margin * torch.sign(s) * w.T / w.norm()  # push away from the boundary
    return X, torch.sign(X @ w).squeeze(-1)


class Linear(nn.Module):
    def __init__(self, seed: int, d: int = 5, k: int = 0, hidden: int = 0):
        super().__init__()
        g = generator(seed, "init")
        out = max(k, 1)
        self.hidden = hidden
        if hidden:
            self.W1 = nn.Parameter(torch.randn(hidden, d, generator=g, dtype=DT) / math.sqrt(d))
            d = hidden
        self.w = nn.Parameter(torch.randn(out, d, generator=g, dtype=DT) * 0.1)
        self.b = nn.Parameter(torch.zeros(out, dtype=DT))
        self.squeeze = k == 0

    def forward(self, X: Tensor) -> Tensor:
        if self.hidden:
            X = torch.tanh(X @ self.W1.T)
        out = X @ self.w.T + self.b
        return out.squeeze(-1) if self.squeeze else out
