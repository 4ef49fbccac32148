"""Causal per-position model for token tasks (copying, KEEP n-TH, MQAR, induction heads):
the backbone of models/classifier.py and a linear head at every position.

    logits[:, t] = head(h_t),   h = SequenceBackbone(x)       (B, L, n_outputs)

Causal because every mixer is: logits at t depend on x_{≤t} only (tested).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.models.classifier import (
    BackboneConfig,
    InitKind,
    MixerSpec,
    NormKind,
    PosEncoding,
    SequenceBackbone,
    _seeded,
    mamba_init_,
)


class CausalLM(nn.Module):
    """Backbone + per-position linear head: (B, L[, d_input]) -> (B, L, n_outputs).

    Args as SequenceClassifier's backbone (mixer, d_model, depth, vocab_size | d_input,
    pos_encoding, max_len, norm, norm_eps, final_norm, mixer_kwargs, init,
    rescale_prenorm_residual, input_proj, residual); n_outputs: head width, default vocab_size
    (next-token logits); head_bias=True.
    """

    def __init__(self, mixer: MixerSpec, d_model: int, depth: int, vocab_size: int | None = None,
                 d_input: int | None = None, n_outputs: int | None = None,
                 pos_encoding: PosEncoding = "none", max_len: int | None = None,
                 norm: NormKind = "rms", norm_eps: float = 1e-5, final_norm: bool = True,
                 mixer_kwargs: dict[str, Any] | None = None, init: InitKind = "mamba",
                 rescale_prenorm_residual: bool = True, input_proj: bool = True,
                 residual: bool = True, head_bias: bool = True):
        super().__init__()
        n_outputs = vocab_size if n_outputs is None else n_outputs
        if n_outputs is None or isinstance(n_outputs, bool) or n_outputs < 1:
            raise UserError("CausalLM needs n_outputs >= 1 (or vocab_size to default to)")
        if init not in ("mamba", "none"):
            raise UserError(f"init must be 'mamba' or 'none', got {init!r}")
        self.backbone = SequenceBackbone(mixer, d_model, depth, vocab_size=vocab_size,
                                         d_input=d_input, pos_encoding=pos_encoding,
                                         max_len=max_len, norm=norm, norm_eps=norm_eps,
                                         final_norm=final_norm, mixer_kwargs=mixer_kwargs,
                                         input_proj=input_proj, residual=residual)
        self.head = nn.Linear(d_model, n_outputs, bias=head_bias)
        if init == "mamba":
            mamba_init_(self, depth, rescale_prenorm_residual)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))  # (B, L, n_outputs)


class CausalLMConfig(BackboneConfig):
    n_outputs: int | None = Field(None, ge=1)
    head_bias: bool = True

    def build(self, seed: int | None = None) -> CausalLM:
        return _seeded(lambda: CausalLM(**self.model_dump()), seed)
