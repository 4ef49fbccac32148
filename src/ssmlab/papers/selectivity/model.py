"""Models of the selectivity paper (Huang et al. 2025, arXiv 2506.11891).

- `S4DBlock`: the Mamba block with S6 replaced by S4D (in_proj, causal conv, SiLU, S4D, SiLU(z)
  gate, out_proj). The paper compares "the Mamba architecture with different mixers"; ssmlab's
  S4D layer is the bare LTI mixer, so this wraps it in the same block as Mamba's S6.
- `token_lm`: the generic `ssmlab.models.lm.CausalLM` as the paper's experiments use it:
  embedding (+ optional positional encoding) -> n mixer layers -> head, logits per position
  (B, L, |V|) for the trainer's token cross-entropy (labels -100 ignored). Options `residual` /
  `norm` default to the usual pre-norm residual stack; the analytical MQAR constructions turn
  both off (their proofs are about the bare block).
- `ClockS6Kernel`: a bank of S6 channels whose Δ is driven only by the binary position clock
  (the Haar construction's inputs), exposing the implied kernel of the final output over input
  positions, for the approximation experiment.

Shape legend: B batch, L length, D d_model, E inner width, N state size, V vocabulary.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.registry import MixerName, build_mixer
from ssmlab.layers.s4d import S4D
from ssmlab.layers.s6 import check_dims, inverse_softplus
from ssmlab.models.classifier import MixerSpec
from ssmlab.models.lm import CausalLM


class S4DBlock(nn.Module):
    """Mamba block around S4D (module docstring):

        (x, z) = in_proj(h);  u = SiLU(conv1d(x));  y = S4D(u) ⊙ SiLU(z);  out = out_proj(y)

    S4D(u) includes S4D's own D skip. Args: d_model; d_state N (16); d_conv (4); expand (2) or
    d_inner (overrides expand·d_model); S4D options init ("real"), dt_min, dt_max,
    discretization ("euler"), mode ("conv"); conv_bias True, bias False (as MambaBlock)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 d_inner: int | None = None, init: str = "real", dt_min: float = 0.001,
                 dt_max: float = 0.1, discretization: str = "euler", mode: str = "conv",
                 conv_bias: bool = True, bias: bool = False):
        super().__init__()
        check_dims(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        E = d_inner if d_inner is not None else expand * d_model
        check_dims(d_inner=E)
        self.d_model, self.d_inner, self.d_conv = d_model, E, d_conv
        self.in_proj = nn.Linear(d_model, 2 * E, bias=bias)
        self.conv1d = nn.Conv1d(E, E, kernel_size=d_conv, groups=E, padding=d_conv - 1,
                                bias=conv_bias)
        self.s4d = S4D(E, d_state=d_state, init=init, dt_min=dt_min, dt_max=dt_max,
                       discretization=discretization, mode=mode)
        self.out_proj = nn.Linear(E, d_model, bias=bias)

    def branches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, L, D) -> u = SiLU(conv(x-branch)) (B, L, E), z (B, L, E)."""
        L = x.shape[1]
        xb, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each
        u = F.silu(self.conv1d(xb.transpose(1, 2))[..., :L]).transpose(1, 2)  # (B, L, E)
        return u, z

    def forward(self, x: Tensor) -> Tensor:
        u, z = self.branches(x)
        return self.out_proj(self.s4d(u) * F.silu(z))  # (B, L, D)


def build_block(name: str, d_model: int, **kwargs: Any) -> nn.Module:
    """'s4d_block' -> S4DBlock; any other name -> ssmlab.layers.registry.build_mixer."""
    if name == "s4d_block":
        try:
            return S4DBlock(d_model, **kwargs)
        except TypeError as e:
            raise UserError(f"s4d_block: {e}") from None
    return build_mixer(name, d_model, **kwargs)


SelMixer = Literal[MixerName, "s4d_block"]  # a registry mixer or the paper's gated S4D block


def mixer_spec(name: str, kwargs: dict[str, Any]) -> tuple[MixerSpec, dict[str, Any] | None]:
    """(mixer, mixer_kwargs) for SequenceBackbone: "s4d_block" as a factory, any other name as
    the registry name with its options."""
    if name == "s4d_block":
        return (lambda d: build_block("s4d_block", d, **kwargs)), None
    return name, kwargs


def token_lm(vocab_size: int, d_model: int, mixer: str, n_layers: int = 1,
             mixer_kwargs: dict[str, Any] | None = None,
             pos_encoding: Literal["learned", "sinusoidal"] | None = None,
             max_len: int = 2048, residual: bool = True, norm: bool = True) -> CausalLM:
    """Tokens (B, L) -> logits (B, L, V): the generic CausalLM (embedding, + PE, n blocks, final
    norm, bias-free head; every module keeps its own init) as the paper uses it.

    pos_encoding: None, "learned" (absolute, nn.Embedding(max_len, D)) or "sinusoidal".
    residual/norm: h <- h + block(RMSNorm(h)) and a final RMSNorm (default); residual=False,
    norm=False give h <- block(h) with no norms (the constructions). The blocks are
    `lm.backbone.layers[i].mixer` (`first_block`)."""
    spec, kw = mixer_spec(mixer, mixer_kwargs or {})
    return CausalLM(spec, d_model, n_layers, vocab_size=vocab_size,
                    pos_encoding=pos_encoding or "none", max_len=max_len,
                    norm="rms" if norm else "none", final_norm=norm, mixer_kwargs=kw,
                    init="none", residual=residual, head_bias=False)


def first_block(lm: CausalLM) -> nn.Module:
    """The first layer's mixer block (MambaBlock, Mamba2, S4DBlock, ...)."""
    return lm.backbone.layers[0].mixer


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class ClockS6Kernel(nn.Module):
    """E S6 channels (state size N each) whose Δ reads only the J-bit position clock π(t):

        Δ_{t,e} = softplus(W_Δ[e] · π(t) + b_Δ[e]),   A = -exp(A_log) (E, N),   B, C ∈ R^N constant,
        y_T = Σ_e w_e Σ_s K_e(s) u_s,  K_e(s) = Σ_n C_n B_n Δ_{s,e} exp(A_{e,n} Σ_{r=s+1..T} Δ_{r,e}),

    i.e. the final output of S6 (mamba_ssm's discretisation) on the signal u, mixed by a readout
    w. `kernel(L)` returns Σ_e w_e K_e (L,), the linear functional's weights over positions; with
    white-noise inputs the expected squared error of y_T equals the squared kernel error, so the
    experiment fits kernels directly. Init as mamba_ssm: Δ bias log-uniform in [dt_min, dt_max],
    A S4D-real, B = 1, C = N(0, 1)/√N, W_Δ = 0, w = 1/E."""

    def __init__(self, L: int, channels: int, d_state: int = 1, dt_min: float = 0.001,
                 dt_max: float = 0.1, generator: torch.Generator | None = None):
        super().__init__()
        check_dims(channels=channels, d_state=d_state)
        if L < 2 or L & (L - 1):
            raise UserError(f"L must be a power of two, got {L}")
        J = L.bit_length() - 1
        t = torch.arange(L)
        self.register_buffer("bits", torch.stack([(t >> (J - 1 - i)) & 1 for i in range(J)], 1)
                             .float(), persistent=False)  # (L, J)
        self.W = nn.Parameter(torch.zeros(channels, J))
        u = torch.rand(channels, generator=generator)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.b = nn.Parameter(inverse_softplus(dt))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32))
                                  .repeat(channels, 1))  # (E, N)
        self.B = nn.Parameter(torch.ones(d_state))
        self.C = nn.Parameter(torch.randn(d_state, generator=generator) / math.sqrt(d_state))
        self.w = nn.Parameter(torch.full((channels,), 1.0 / channels))

    def delta(self) -> Tensor:
        return F.softplus(self.bits.to(self.W.dtype) @ self.W.T + self.b)  # (L, E)

    def channel_kernels(self) -> Tensor:
        """K_e(s) (L, E) before the readout."""
        delta = self.delta()  # (L, E)
        after = delta.flip(0).cumsum(0).flip(0) - delta  # (L, E): Σ_{r>s} Δ_r
        A = -torch.exp(self.A_log)  # (E, N)
        decay = torch.exp(after[:, :, None] * A[None])  # (L, E, N)
        return torch.einsum("len,n,le->le", decay, self.C * self.B, delta)  # (L, E)

    def kernel(self) -> Tensor:
        return self.channel_kernels() @ self.w  # (L,)

    def forward(self, u: Tensor) -> Tensor:
        """u (B, L) -> y_T (B,)."""
        return u @ self.kernel()
