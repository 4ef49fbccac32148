"""Test support for the interop equivalence checks (used by tests/interop and docs/interop.md's
measurements; not needed at run time).

    TINY                       tiny MambaSpecs of both architectures for fast tests
    backbone_states(lm, ids)   ssmlab's hidden states in transformers' order
    perturb_(model, seed)      add noise to every parameter, so that no mapping hides behind an
                               init value (norm weights of 1, D of 1, zero biases)
    rel_err(a, b)              max |a - b| / max |b|
    keep_float64()             run transformers' slow path in true float64 (below)

Why keep_float64: transformers' pure-PyTorch Mamba / Mamba-2 paths hard-code float32 casts
(A = -exp(A_log.float()), B.float(), hidden_states.float(), D.float(), dt_bias.float(), the RMS
norms' .to(torch.float32), residual_in_fp32). A float64 model therefore computes its scan and
norms in float32 and agrees with any float64 implementation only to ~1e-7. Inside this context
those casts leave float64 tensors alone (Tensor.float and Tensor.to(float32) return the float64
tensor), so the reference's float64 arithmetic can be compared at 1e-10; nothing else about the
transformers code changes. The raw (cast) float64 agreement is measured as well
(docs/interop.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ssmlab.interop.spec import MambaSpec
from ssmlab.models.lm import CausalLM

# Mamba-1 with its own dt_rank and a width-3 conv, tied head; Mamba-2 with 2 groups of 2 heads
# (so the per-group norm matters), in/out projection biases, untied head, chunks of 8 tokens.
TINY = {
    "mamba": MambaSpec(arch="mamba", d_model=16, n_layer=3, vocab_size=64, d_state=5, d_conv=3,
                       expand=2, dt_rank=3, tie_embeddings=True),
    "mamba2": MambaSpec(arch="mamba2", d_model=16, n_layer=3, vocab_size=64, d_state=5,
                        d_conv=3, expand=2, headdim=8, ngroups=2, bias=True,
                        tie_embeddings=False, chunk_size=8),
}


@torch.no_grad()
def backbone_states(lm: CausalLM, ids: Tensor) -> list[Tensor]:
    """[h_1, ..., h_n, norm_f(h_n)]: every layer's output, then the final norm's, as
    transformers' output_hidden_states lists them for MambaForCausalLM / Mamba2ForCausalLM."""
    bb = lm.backbone
    h = bb.encode(ids)
    out = []
    for layer in bb.layers:
        h = layer(h)
        out.append(h)
    out.append(bb.norm_f(h))
    return out


@torch.no_grad()
def perturb_(model: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
    """Add scale·N(0, 1) noise to every parameter (a tied weight once), in place."""
    g = torch.Generator().manual_seed(seed)
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype))
    return model


def rel_err(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b| in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-300))


@contextmanager
def keep_float64() -> Iterator[None]:
    """Tensor.float() and Tensor.to(torch.float32) return float64 tensors unchanged inside (see
    the module doc); everything else is untouched. Not thread-safe: tests only."""
    orig_float, orig_to = Tensor.float, Tensor.to

    def _float(self: Tensor, *args, **kwargs) -> Tensor:
        return self if self.dtype == torch.float64 else orig_float(self, *args, **kwargs)

    def _to(self: Tensor, *args, **kwargs) -> Tensor:
        if self.dtype == torch.float64:
            if kwargs.get("dtype") is torch.float32:
                kwargs = dict(kwargs, dtype=torch.float64)
            args = tuple(torch.float64 if a is torch.float32 else a for a in args)
        return orig_to(self, *args, **kwargs)

    Tensor.float, Tensor.to = _float, _to  # type: ignore[method-assign]
    try:
        yield
    finally:
        Tensor.float, Tensor.to = orig_float, orig_to  # type: ignore[method-assign]
