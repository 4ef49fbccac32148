"""RetNet's multi-scale retention (Sun et al. 2023, "Retentive Network", Sec. 2): causal linear
attention with a fixed exponential decay per head, on (B, L, d_model).

Glossary (code name -> paper symbol; parameter names as torchscale's MultiScaleRetention):
    d_model       d_model  model width
    n_heads       h        heads; key width per head d_k = d_model / h
    value_factor  —        value width = value_factor · d_model (paper's parameter allocation:
                           W_V, W_G ∈ R^{d×2d}, W_O ∈ R^{2d×d}, so 2); d_v = value width / h
    q_proj        W_Q      queries (B, H, L, d_k)
    k_proj        W_K      keys    (B, H, L, d_k)
    v_proj        W_V      values  (B, H, L, d_v), the `values` of the core
    g_proj        W_G      output gate: swish(X W_G)
    out_proj      W_O      value width -> d_model
    norm          GroupNorm_h  per-head normalisation of the retention output (HeadNorm)
    gamma         γ_h      decay of head h, γ_h = 1 - 2^(-5-h), h = 0..H-1 (fixed, not learned;
                           computed in the module's dtype, not stored)
    rotary        Θ        Q ⊙ Θ, K ⊙ Θ̄ with Θ_n = e^{i n θ}: the rotation of consecutive channel
                           pairs (2i, 2i+1) by the angle n θ_i (position n = 0..L-1)
    rotary_base   —        θ_i = rotary_base^(-linspace(0, 1, d_k/2)_i), i = 0..d_k/2-1
                           (torchscale's `1 / 10000 ** torch.linspace(0, 1, d_k // 2)`)
    scale         —        q_t · k_s multiplied by d_k^(-1/2) (the paper's "QKᵀ/√d", Sec. 2.3)
    S             S_n      state per head, d_k × d_v                           (B, H, d_k, d_v)

Retention (per head; recurrent form, the definition the reference backend runs):
    S_n = γ S_{n-1} + K_nᵀ V_n,      Retention(X_n) = Q_n S_n
parallel form: Retention(X) = (Q Kᵀ ⊙ D) V with D_{nm} = γ^{n-m} (n ≥ m), 0 otherwise;
chunkwise form: ssmlab.ops.gated_linear (chunked backend, the default).
Multi-scale retention:
    Y = GroupNorm_h(Concat(head_1, ..., head_h)),      MSR(X) = (swish(X W_G) ⊙ Y) W_O.

Choices where the paper leaves a detail open (constructor options, defaults named):
- rotary=True: the paper's Θ (its xPos-derived relative position). torchscale rotates without
  xPos's extra per-position scaling (γ already decays), and so do we; rotary=False drops Θ
  (pure decayed linear attention, what the ICL-outlier analysis writes as h_t = Σ G v kᵀ).
- The paper's retention score normalisations (Sec. 2.3: D̃ = D / sqrt(row sums), R̃ = R /
  max(|row sum|, 1)) rescale each output row by a positive factor, which GroupNorm removes (up
  to its ε); they are numerical devices for large-scale training and are not implemented, so the
  implied matrix is exactly scale · (q̃ k̃ᵀ) ⊙ D. With norm="none" this is a real difference from
  a model trained with them.
- norm="group" (paper): per-head LayerNorm with a per-channel affine (= nn.GroupNorm(h, ·) at
  each position); "rms" (torchscale's later versions use a per-head RMSNorm); "none".
  norm_eps=1e-6 (torchscale's layernorm_eps).
- output_gate=True (paper's swish gate); False replaces swish(X W_G) by 1.
- bias=False for every projection (torchscale); init: torch defaults.

Attention lens: per head, o_t = Σ_{s ≤ t} M_{h,t,s} v_s with
    M_{h,t,s} = d_k^(-1/2) · γ_h^(t-s) · (Θ_t q_t) · (Θ_s k_s)
shape (B, H, L, L), values v (B, H, L, d_v). Core output = retention output before the group
norm, the gate and out_proj.

Backends (ssmlab.ops.gated_linear): "auto" = "chunked" (chunk_size steps in parallel, recurrent
across chunks), "reference" (the loop over time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import Mixer, MixerCore, check_backend
from ssmlab.layers.s6 import check_dims
from ssmlab.ops.gated_linear import gated_linear_attention, gated_linear_matrix

NORMS = ("group", "rms", "none")

__all__ = ["NORMS", "HeadNorm", "RetNet", "retnet_gammas", "retnet_log_gammas", "rotate_pairs"]


class HeadNorm(nn.Module):
    """Per-head normalisation of a multi-head output (B, H, L, P) -> (B, L, H·P).

    kind "group": (o - mean) / sqrt(var + eps) over each head's P channels at each position, then
    a per-channel affine (weight 1, bias 0 at init) — nn.GroupNorm(H, H·P) applied per position;
    "rms": o / sqrt(mean(o²) + eps) · weight per head; "none": the identity (no parameters)."""

    def __init__(self, n_heads: int, head_dim: int, kind: str = "group", eps: float = 1e-5):
        super().__init__()
        if kind not in NORMS:
            raise UserError(f"norm must be one of {NORMS}, got {kind!r}")
        if not eps > 0:
            raise UserError(f"norm_eps must be > 0, got {eps}")
        self.kind, self.eps = kind, eps
        if kind != "none":
            self.weight = nn.Parameter(torch.ones(n_heads * head_dim))
        if kind == "group":
            self.bias = nn.Parameter(torch.zeros(n_heads * head_dim))

    def forward(self, o: Tensor) -> Tensor:
        if self.kind == "group":
            mean = o.mean(-1, keepdim=True)
            var = o.var(-1, unbiased=False, keepdim=True)
            o = (o - mean) * torch.rsqrt(var + self.eps)  # (B, H, L, P)
        elif self.kind == "rms":
            o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps)
        o = o.transpose(1, 2).flatten(2)  # (B, L, H·P)
        if self.kind == "group":
            return o * self.weight + self.bias
        if self.kind == "rms":
            return o * self.weight
        return o


def retnet_gammas(n_heads: int, dtype: torch.dtype = torch.float64,
                  device: torch.device | None = None) -> Tensor:
    """γ_h = 1 - 2^(-5-h), h = 0..n_heads-1 (the paper's multi-scale decays). (H,)"""
    return 1.0 - torch.exp2(-5.0 - torch.arange(n_heads, dtype=dtype, device=device))


def retnet_log_gammas(n_heads: int, dtype: torch.dtype = torch.float64,
                      device: torch.device | None = None) -> Tensor:
    """log γ_h = log1p(-2^(-5-h)) (accurate for γ near 1). (H,)"""
    return torch.log1p(-torch.exp2(-5.0 - torch.arange(n_heads, dtype=dtype, device=device)))


def rotate_pairs(x: Tensor, base: float) -> Tensor:
    """The real form of x ⊙ Θ, Θ_n = e^{i n θ}: rotate channel pairs (2i, 2i+1) of position n by
    n θ_i, θ_i = base^(-linspace(0, 1, P/2)_i) (torchscale's theta_shift). (…, L, P) -> (…, L, P).

    Rotating q and k by their own positions makes q̃_t · k̃_s depend on t - s only."""
    L, P = x.shape[-2:]
    theta = base ** -torch.linspace(0.0, 1.0, P // 2, dtype=x.dtype, device=x.device)  # (P/2,)
    angle = torch.arange(L, dtype=x.dtype, device=x.device)[:, None] * theta  # (L, P/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (…, L, P/2)
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


class _GatedLinearMixer(Mixer):
    """What RetNet and GLA share: multi-head q/k/v, the gated-linear-attention core on
    ssmlab.ops.gated_linear, and the readout o -> out_proj(gate ⊙ HeadNorm(o)).

    Subclasses set q_proj, k_proj, v_proj, g_proj (or None), out_proj, norm, n_heads, key_dim,
    value_dim, head_k, head_v, scale, chunk_size, backend and implement `_qk_decay`."""

    def _heads(self, t: Tensor) -> Tensor:
        """(B, L, H·P) -> (B, H, L, P)."""
        Bsz, L, _ = t.shape
        return t.view(Bsz, L, self.n_heads, -1).transpose(1, 2)

    def _qk_decay(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # pragma: no cover
        """q, k (B, H, L, d_k) and the log-decay (B, H, L) or (B, H, L, d_k)."""
        raise NotImplementedError

    def _values(self, x: Tensor) -> Tensor:
        return self._heads(self.v_proj(x))  # (B, H, L, d_v)

    def core(self, x: Tensor) -> MixerCore:
        """values v (B, H, L, d_v) and o = M v (B, H, L, d_v) by the chunked / reference scan."""
        q, k, log_decay = self._qk_decay(x)
        v = self._values(x)
        o = gated_linear_attention(q, k, v, log_decay, scale=self.scale, backend=self.backend,
                                   chunk_size=self.chunk_size)
        return MixerCore(values=v, output=o)

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, H, L, L): M_{h,t,s} = scale Σ_k q_t[k] k_s[k] Π_{j=s+1..t} decay_j[k]."""
        q, k, log_decay = self._qk_decay(x)
        return gated_linear_matrix(q, k, log_decay, scale=self.scale)

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """(B, H, L, d_v) -> (B, L, d_model): per-head norm, swish output gate, out_proj."""
        y = self.norm(core_output)  # (B, L, value_dim)
        if self.g_proj is not None:
            y = F.silu(self.g_proj(x)) * y
        return self.out_proj(y)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, d_model) -> (B, L, d_model)."""
        return self.readout(x, self.core(x).output)


class RetNet(_GatedLinearMixer):
    """Multi-scale retention on (B, L, d_model) (module docstring).

    Args: d_model; n_heads=4 (must divide d_model; with rotary, d_model / n_heads must be even);
    value_factor=2 (value width = value_factor · d_model, the paper's 2d); rotary=True (the
    paper's Θ; False: no position rotation); rotary_base=10000.0; scale=None (= d_k^-1/2);
    norm "group" (paper) | "rms" | "none"; norm_eps=1e-6; output_gate=True (swish(X W_G));
    bias=False; chunk_size=64; backend "auto" (= "chunked") | "chunked" | "reference"
    (ssmlab.ops.gated_linear).
    """

    def __init__(self, d_model: int, n_heads: int = 4, value_factor: int = 2,
                 rotary: bool = True, rotary_base: float = 10000.0, scale: float | None = None,
                 norm: str = "group", norm_eps: float = 1e-6, output_gate: bool = True,
                 bias: bool = False, chunk_size: int = 64, backend: str = "auto"):
        super().__init__()
        check_dims(d_model=d_model, n_heads=n_heads, value_factor=value_factor,
                   chunk_size=chunk_size)
        if d_model % n_heads:
            raise UserError(f"n_heads={n_heads} must divide d_model={d_model}")
        head_k = d_model // n_heads
        if rotary and head_k % 2:
            raise UserError(f"rotary=True rotates channel pairs: the key width per head "
                            f"d_model / n_heads = {head_k} must be even (or pass rotary=False)")
        if not rotary_base > 1:
            raise UserError(f"rotary_base must be > 1, got {rotary_base}")
        if scale is not None and not scale > 0:
            raise UserError(f"scale must be > 0 (or None for d_k^-1/2), got {scale}")
        self.d_model, self.n_heads, self.value_factor = d_model, n_heads, value_factor
        self.key_dim, self.value_dim = d_model, value_factor * d_model
        self.head_k, self.head_v = head_k, self.value_dim // n_heads
        self.rotary, self.rotary_base = bool(rotary), float(rotary_base)
        self.scale = head_k**-0.5 if scale is None else float(scale)
        self.chunk_size = chunk_size
        self.backend = check_backend(backend)

        self.q_proj = nn.Linear(d_model, self.key_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=bias)
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=bias) if output_gate else None
        self.out_proj = nn.Linear(self.value_dim, d_model, bias=bias)
        self.norm = HeadNorm(n_heads, self.head_v, norm, norm_eps)

    def gamma(self, dtype: torch.dtype | None = None) -> Tensor:
        """γ_h = 1 - 2^(-5-h), (H,), in the module's dtype by default."""
        w = self.q_proj.weight
        return retnet_gammas(self.n_heads, dtype or w.dtype, w.device)

    def decay(self, x: Tensor) -> Tensor:
        """The per-step decay (B, H, L): γ_h at every position (input-independent)."""
        Bsz, L, _ = x.shape
        return self.gamma(x.dtype)[:, None].expand(Bsz, self.n_heads, L)

    def _qk_decay(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k = self._heads(self.q_proj(x)), self._heads(self.k_proj(x))  # (B, H, L, d_k)
        if self.rotary:
            q, k = rotate_pairs(q, self.rotary_base), rotate_pairs(k, self.rotary_base)
        Bsz, L, _ = x.shape
        log_gamma = retnet_log_gammas(self.n_heads, x.dtype, x.device)  # (H,)
        log_decay = log_gamma[:, None].expand(Bsz, self.n_heads, L)
        return q, k, log_decay  # log_decay (B, H, L)
