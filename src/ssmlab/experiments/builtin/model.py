"""The builtin experiment's model: models.lm.CausalLM over any registered mixer, read out at the
last `n_out` positions (where selective copying asks for the copied tokens).

Shape legend: B batch, L length, V vocab of outputs, K = n_out.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ssmlab.models.lm import CausalLM


class LastPositions(nn.Module):
    def __init__(self, mixer: str, n_in: int, n_out_classes: int, d_model: int, n_layers: int,
                 n_out: int, mixer_kwargs: dict[str, Any] | None = None):
        super().__init__()
        self.n_out = n_out
        self.lm = CausalLM(mixer, d_model, n_layers, vocab_size=n_in, n_outputs=n_out_classes,
                           mixer_kwargs=mixer_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        return self.lm(x)[:, -self.n_out:]  # (B, K, V)
