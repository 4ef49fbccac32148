"""GLA: gated linear attention with a data-dependent, per-key-channel forget gate (Yang et al.
2024, "Gated Linear Attention Transformers with Hardware-Efficient Training", Sec. 4), on
(B, L, d_model).

Glossary (code name -> paper symbol; parameter names as flash-linear-attention's
GatedLinearAttention where the paper names none):
    d_model          d        model width
    n_heads          H        heads (paper: 4); key width per head d_k/H, value width d_v/H
    expand_k         —        d_k = expand_k · d_model (paper: d_k = d/2, so 0.5)
    expand_v         —        d_v = expand_v · d_model (paper: d_v = d, so 1.0)
    q_proj           W_Q      queries q_t (B, H, L, d_k/H)
    k_proj           W_K      keys k_t    (B, H, L, d_k/H)
    v_proj           W_V      values v_t  (B, H, L, d_v/H), the `values` of the core
    gk_proj.0        W_α1     gate, first low-rank factor d -> 16 (no bias)
    gk_proj.1        W_α2, b_α  gate, second factor 16 -> d_k, with the bias b_α
    gate_low_rank_dim  16     the rank of W_α1 W_α2
    gate_logit_normalizer  τ  the temperature: α_t = σ(x_t W_α1 W_α2 + b_α)^(1/τ), τ = 16
    g_proj           W_r, b_r output gate r_t = Swish(x_t W_r + b_r)
    norm             LN       per-head LayerNorm of o_t^h (HeadNorm, kind "group")
    out_proj         W_O      d_v -> d
    S                S_t      state per head, (d_k/H) × (d_v/H)               (B, H, d_k/H, d_v/H)

Recurrence (per head h; the definition the reference backend runs):
    α_t = σ(x_t W_α1 W_α2 + b_α)^(1/τ) ∈ (0, 1)^{d_k}    (computed as exp(logsigmoid(·) / τ))
    S_t = diag(α_t) S_{t-1} + k_tᵀ v_t   (= G_t ⊙ S_{t-1} + k_tᵀ v_t with G_t = α_tᵀ 1),
    o_t = q_t S_t
    o'_t = Concat(LN(o_t^1), ..., LN(o_t^H)),   r_t = Swish(x_t W_r + b_r),   y_t = (r_t ⊙ o'_t) W_O.
The chunked form (default backend) is ssmlab.ops.gated_linear's chunked algorithm.

Choices where the paper leaves a detail open (constructor options, defaults named):
- scale=None: q_t · k_s is multiplied by (d_k/H)^(-1/2) (flash-linear-attention's default; the
  paper's equations show no scale). It rescales each output row, which the per-head LN removes up
  to its ε, so it only matters with norm="none".
- norm="group": LN per head with a per-channel affine (each head its own weight and bias; the
  paper does not say whether the heads share them); "rms" (flash-linear-attention's per-head
  RMSNorm); "none". norm_eps=1e-5.
- output_gate=True: the paper's r_t (g_proj has the bias b_r); False replaces r_t by 1.
- bias=False for q/k/v/out projections (the paper writes none); init: torch defaults (the paper
  gives none; flash-linear-attention's Xavier gain 2^-2.5 is a training recipe, not the model).

Attention lens: per head, o_t = Σ_{s ≤ t} M_{h,t,s} v_s with
    M_{h,t,s} = scale · Σ_k q_t[k] k_s[k] Π_{j=s+1..t} α_j[k]
shape (B, H, L, L), values v (B, H, L, d_v/H). Core output = o before the norm, the gate and
out_proj.

Backends (ssmlab.ops.gated_linear): "auto" = "chunked" (chunk_size steps in parallel, recurrent
across chunks; memory O(B·L·d_k·chunk_size) for the in-chunk decays, hence the default 16),
"reference" (the loop over time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import check_backend
from ssmlab.layers.retnet import HeadNorm, _GatedLinearMixer
from ssmlab.layers.s6 import check_dims

__all__ = ["GLA"]


def _width(d_model: int, expand: float, name: str) -> int:
    width = d_model * expand
    if not expand > 0 or abs(width - round(width)) > 1e-9 or round(width) < 1:
        raise UserError(f"{name}={expand} must make {name} · d_model = {width} a positive integer")
    return int(round(width))


class GLA(_GatedLinearMixer):
    """Gated linear attention layer on (B, L, d_model) (module docstring).

    Args: d_model; n_heads=4 (must divide d_k and d_v); expand_k=0.5 (d_k = d/2, paper);
    expand_v=1.0 (d_v = d, paper); gate_low_rank_dim=16 (paper); gate_logit_normalizer=16.0
    (τ, paper); scale=None (= (d_k/H)^-1/2); norm "group" (paper's per-head LN) | "rms" | "none";
    norm_eps=1e-5; output_gate=True (r_t); bias=False; chunk_size=16; backend "auto"
    (= "chunked") | "chunked" | "reference" (ssmlab.ops.gated_linear).
    """

    def __init__(self, d_model: int, n_heads: int = 4, expand_k: float = 0.5,
                 expand_v: float = 1.0, gate_low_rank_dim: int = 16,
                 gate_logit_normalizer: float = 16.0, scale: float | None = None,
                 norm: str = "group", norm_eps: float = 1e-5, output_gate: bool = True,
                 bias: bool = False, chunk_size: int = 16, backend: str = "auto"):
        super().__init__()
        check_dims(d_model=d_model, n_heads=n_heads, gate_low_rank_dim=gate_low_rank_dim,
                   chunk_size=chunk_size)
        key_dim = _width(d_model, expand_k, "expand_k")
        value_dim = _width(d_model, expand_v, "expand_v")
        for name, width in (("d_k = expand_k·d_model", key_dim),
                            ("d_v = expand_v·d_model", value_dim)):
            if width % n_heads:
                raise UserError(f"n_heads={n_heads} must divide {name} = {width}")
        if not gate_logit_normalizer > 0:
            raise UserError(f"gate_logit_normalizer (τ) must be > 0, got {gate_logit_normalizer}")
        if scale is not None and not scale > 0:
            raise UserError(f"scale must be > 0 (or None for (d_k/H)^-1/2), got {scale}")
        self.d_model, self.n_heads = d_model, n_heads
        self.key_dim, self.value_dim = key_dim, value_dim
        self.head_k, self.head_v = key_dim // n_heads, value_dim // n_heads
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.scale = self.head_k**-0.5 if scale is None else float(scale)
        self.chunk_size = chunk_size
        self.backend = check_backend(backend)

        self.q_proj = nn.Linear(d_model, key_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, key_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, value_dim, bias=bias)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, key_dim, bias=True))
        self.g_proj = nn.Linear(d_model, value_dim, bias=True) if output_gate else None
        self.out_proj = nn.Linear(value_dim, d_model, bias=bias)
        self.norm = HeadNorm(n_heads, self.head_v, norm, norm_eps)

    def log_decay(self, x: Tensor) -> Tensor:
        """log α_t = logsigmoid(x_t W_α1 W_α2 + b_α) / τ, (B, H, L, d_k/H), all < 0."""
        return self._heads(F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer)

    def decay(self, x: Tensor) -> Tensor:
        """The forget gate α_t ∈ (0, 1), (B, H, L, d_k/H)."""
        return torch.exp(self.log_decay(x))

    def _qk_decay(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k = self._heads(self.q_proj(x)), self._heads(self.k_proj(x))  # (B, H, L, d_k/H)
        return q, k, self.log_decay(x)  # log_decay (B, H, L, d_k/H)
