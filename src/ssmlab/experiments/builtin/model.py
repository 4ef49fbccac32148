"""A small token model around any registered mixer (stepping stone until a shared
models/classifier lands): embedding -> n_layers x [pre-norm mixer + residual, pre-norm MLP +
residual] -> norm -> linear readout at the last `n_out` positions.

Shape legend: B batch, L length, d d_model, V vocab of outputs, K = n_out.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ssmlab.layers.norms import RMSNorm
from ssmlab.layers.registry import build_mixer


class MixerStack(nn.Module):
    def __init__(self, mixer: str, n_in: int, n_out_classes: int, d_model: int, n_layers: int,
                 n_out: int, mixer_kwargs: dict[str, Any] | None = None, mlp_ratio: int = 2):
        super().__init__()
        self.n_out = n_out
        self.embed = nn.Embedding(n_in, d_model)
        kw = dict(mixer_kwargs or {})
        self.mixers = nn.ModuleList(build_mixer(mixer, d_model, **kw) for _ in range(n_layers))
        self.norm1 = nn.ModuleList(RMSNorm(d_model) for _ in range(n_layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                          nn.Linear(mlp_ratio * d_model, d_model))
            for _ in range(n_layers)
        )
        self.norm2 = nn.ModuleList(RMSNorm(d_model) for _ in range(n_layers))
        self.norm_f = RMSNorm(d_model)
        self.head = nn.Linear(d_model, n_out_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)  # (B, L, d)
        for mix, n1, mlp, n2 in zip(self.mixers, self.norm1, self.mlps, self.norm2, strict=True):
            h = h + mix(n1(h))  # (B, L, d)
            h = h + mlp(n2(h))  # (B, L, d)
        return self.head(self.norm_f(h[:, -self.n_out:]))  # (B, K, V)
