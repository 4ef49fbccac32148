"""Attention baselines: causal softmax attention, causal linear attention and local (sliding
window) causal softmax attention, multi-head, on (B, L, d_model).

Glossary (code name -> symbol):
    n_heads     H       heads; head_dim P = d_model / H
    q_proj      W_Q     queries q_t = W_Q x_t, split into heads (B, H, L, P)
    k_proj      W_K     keys
    v_proj      W_V     values (the `values` of the mixer's core)
    out_proj    W_O     merges the heads back to d_model
    scale       τ       score scale, default 1/sqrt(P)
    phi         φ       linear attention's feature map

Matrices (per head; the "core output" is M v before the head merge and out_proj):
    softmax:  M_{t,s} = exp(τ q_t·k_s) / Σ_{r≤t} exp(τ q_t·k_r)                 for s ≤ t
    linear:   M_{t,s} = φ(q_t)·φ(k_s)  [/ Σ_{r≤t} φ(q_t)·φ(k_r) if normalize]   for s ≤ t
    local:    as softmax but over s ∈ [t - w + 1, t] only (window w includes t itself)

Backends: softmax "auto"/"sdpa" (torch's scaled_dot_product_attention) or "reference" (explicit
masked softmax); local "banded" (strided windows via unfold, O(L·w) memory), "dense" (SDPA with
the band as a mask, O(L²)), "auto" (dense up to L = max(256, 32 w), banded beyond) or
"reference" (explicit masked softmax); linear: mode "recurrent" runs the state recurrence
S_t = S_{t-1} + φ(k_t) v_tᵀ on ssmlab.ops.linear_recurrence (backend passed on), mode
"quadratic" the masked matrix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.base import Mixer, MixerCore, causal_mask, check_backend
from ssmlab.layers.s6 import check_dims
from ssmlab.ops.linear_recurrence import linear_recurrence

FEATURE_MAPS = ("identity", "elu+1", "relu")


class _MultiHead(Mixer):
    """Q, K, V and output projections shared by the attention baselines."""

    def __init__(self, d_model: int, n_heads: int, bias: bool):
        super().__init__()
        check_dims(d_model=d_model, n_heads=n_heads)
        if d_model % n_heads:
            raise UserError(f"n_heads={n_heads} must divide d_model={d_model}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def _heads(self, t: Tensor) -> Tensor:
        Bsz, L, _ = t.shape
        return t.view(Bsz, L, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, L, P)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._heads(self.q_proj(x)), self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def readout(self, x: Tensor, core_output: Tensor) -> Tensor:
        """(B, H, L, P) core output -> (B, L, d_model): merge heads, out_proj."""
        return self.out_proj(core_output.transpose(1, 2).flatten(2))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, L, d_model) -> (B, L, d_model)."""
        return self.readout(x, self.core(x).output)


class SoftmaxAttention(_MultiHead):
    """Causal multi-head softmax attention (module docstring).

    Args: d_model; n_heads=1; bias=False; scale=None (1/sqrt(head_dim)); backend "auto" (= "sdpa")
    | "sdpa" | "reference".
    """

    BACKENDS: tuple[str, ...] = ("auto", "sdpa", "reference")

    def __init__(self, d_model: int, n_heads: int = 1, bias: bool = False,
                 scale: float | None = None, backend: str = "auto"):
        super().__init__(d_model, n_heads, bias)
        if check_backend(backend) not in self.BACKENDS:
            raise UserError(f"{type(self).__name__} backend must be one of {self.BACKENDS}, "
                            f"got {backend!r}")
        self.backend = backend
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else float(scale)

    def _matrix(self, q: Tensor, k: Tensor) -> Tensor:
        L = q.shape[2]
        scores = torch.einsum("bhtp,bhsp->bhts", q, k) * self.scale  # (B, H, L, L)
        scores = scores.masked_fill(~causal_mask(L, q.device), float("-inf"))
        return scores.softmax(dim=-1)

    def core(self, x: Tensor) -> MixerCore:
        q, k, v = self._qkv(x)
        if self.backend == "reference":
            y = self._matrix(q, k) @ v  # (B, H, L, P)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return MixerCore(values=v, output=y)

    def attention_matrix(self, x: Tensor) -> Tensor:
        q, k, _ = self._qkv(x)
        return self._matrix(q, k)  # (B, H, L, L)


def feature_map(name: str, t: Tensor) -> Tensor:
    """φ for linear attention: identity, elu+1 (Katharopoulos et al. 2020) or relu."""
    if name == "identity":
        return t
    if name == "elu+1":
        return F.elu(t) + 1.0
    return F.relu(t)


class LinearAttention(_MultiHead):
    """Causal multi-head linear attention y_t = Σ_{s≤t} (φ(q_t)·φ(k_s)) v_s (module docstring).

    Args: d_model; n_heads=1; feature_map "identity" (default) | "elu+1" | "relu";
    normalize=False (True divides by Σ_{s≤t} φ(q_t)·φ(k_s) + eps, Katharopoulos et al.; needs a
    positive feature map); eps=1e-6; mode "recurrent" (default, state recurrence) | "quadratic";
    bias=False; backend="auto" (passed to ssmlab.ops.linear_recurrence in recurrent mode).
    """

    def __init__(self, d_model: int, n_heads: int = 1, feature_map: str = "identity",
                 normalize: bool = False, eps: float = 1e-6, mode: str = "recurrent",
                 bias: bool = False, backend: str = "auto"):
        super().__init__(d_model, n_heads, bias)
        if feature_map not in FEATURE_MAPS:
            raise UserError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
        if normalize and feature_map == "identity":
            raise UserError("normalize=True needs a positive feature map ('elu+1' or 'relu')")
        if mode not in ("recurrent", "quadratic"):
            raise UserError(f"linear attention mode must be 'recurrent' or 'quadratic', got {mode!r}")
        self.feature_map, self.normalize, self.eps, self.mode = feature_map, normalize, eps, mode
        self.backend = check_backend(backend)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self._qkv(x)
        return feature_map(self.feature_map, q), feature_map(self.feature_map, k), v

    def _matrix(self, fq: Tensor, fk: Tensor) -> Tensor:
        L = fq.shape[2]
        M = torch.einsum("bhtp,bhsp->bhts", fq, fk)  # (B, H, L, L)
        M = M * causal_mask(L, fq.device).to(M.dtype)
        if self.normalize:
            M = M / (M.sum(-1, keepdim=True) + self.eps)
        return M

    def core(self, x: Tensor) -> MixerCore:
        fq, fk, v = self._features(x)
        if self.mode == "quadratic":
            return MixerCore(values=v, output=self._matrix(fq, fk) @ v)
        Bsz, H, L, P = v.shape
        kv = fk[..., :, None] * v[..., None, :]  # (B, H, L, P, P): φ(k_t) v_tᵀ
        if self.normalize:  # carry Σ φ(k_s) as one more value column
            kv = torch.cat([kv, fk[..., None]], dim=-1)  # (B, H, L, P, P + 1)
        b = kv.movedim(2, -1)  # (B, H, P, ·, L): time last
        S = linear_recurrence(b.new_ones(1), b, backend=self.backend)  # a_t = 1: running sum
        S = S.movedim(-1, 2)  # (B, H, L, P, ·)
        y = torch.einsum("bhtp,bhtpq->bhtq", fq, S)  # (B, H, L, P [+1])
        if self.normalize:
            y = y[..., :P] / (y[..., P:] + self.eps)
        return MixerCore(values=v, output=y)

    def attention_matrix(self, x: Tensor) -> Tensor:
        fq, fk, _ = self._features(x)
        return self._matrix(fq, fk)


class LocalAttention(SoftmaxAttention):
    """Sliding-window causal softmax attention: query t sees keys s ∈ [t - w + 1, t].

    Two exact paths. "banded": keys and values are left-padded by w - 1 and cut into strided
    windows (Tensor.unfold, a view), scores are (B, H, L, w): O(L·w) memory, no loop over
    positions. "dense": torch's scaled_dot_product_attention with the (L, L) band as a boolean
    mask: O(L²) work but one fused kernel. "auto" takes "dense" while L ≤ max(256, 32 w) and
    "banded" beyond: measured (benchmarks/local_attention.py, one thread, d_model 64, forward +
    backward, ~2048 tokens a batch), the unfold/einsum path is 3-30x slower up to L = 256 (L = 32,
    w = 3: 25 vs 8 ms) and pays off only for long sequences with narrow windows (L = 512 and 1024,
    w = 3: 0.7-0.8x the dense time).
    `window >= L` equals full causal softmax attention (tested).

    Args: d_model; n_heads=1; window w=16 (≥ 1, includes the query position); bias=False;
    scale=None (1/sqrt(head_dim)); backend "auto" | "banded" | "dense" | "reference" (explicit
    masked L×L softmax, the specification).
    """

    BACKENDS = ("auto", "banded", "dense", "reference")
    DENSE_MAX_L = 256  # "auto" is dense for L ≤ max(DENSE_MAX_L, DENSE_PER_WINDOW · w)
    DENSE_PER_WINDOW = 32

    def __init__(self, d_model: int, n_heads: int = 1, window: int = 16, bias: bool = False,
                 scale: float | None = None, backend: str = "auto"):
        check_dims(window=window)
        super().__init__(d_model, n_heads, bias, scale, backend)
        self.window = window

    def _band_mask(self, L: int, device: torch.device) -> Tensor:
        """(L, w) bool: window slot j of query t holds key s = t - w + 1 + j; valid iff s ≥ 0."""
        t = torch.arange(L, device=device)[:, None]
        j = torch.arange(self.window, device=device)[None, :]
        return t - self.window + 1 + j >= 0

    def _banded(self, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Window weights (B, H, L, w) and output (B, H, L, P)."""
        w, L = self.window, q.shape[2]
        kw = F.pad(k, (0, 0, w - 1, 0)).unfold(2, w, 1)  # (B, H, L, P, w)
        vw = F.pad(v, (0, 0, w - 1, 0)).unfold(2, w, 1)  # (B, H, L, P, w)
        scores = torch.einsum("bhlp,bhlpw->bhlw", q, kw) * self.scale  # (B, H, L, w)
        scores = scores.masked_fill(~self._band_mask(L, q.device), float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, H, L, w)
        return weights, torch.einsum("bhlw,bhlpw->bhlp", weights, vw)

    def _band(self, L: int, device: torch.device) -> Tensor:
        """(L, L) bool: key s is visible to query t iff t - w < s ≤ t."""
        t = torch.arange(L, device=device)
        return causal_mask(L, device) & (t[:, None] - t[None, :] < self.window)

    def _dense_matrix(self, q: Tensor, k: Tensor) -> Tensor:
        scores = torch.einsum("bhtp,bhsp->bhts", q, k) * self.scale
        return scores.masked_fill(~self._band(q.shape[2], q.device), float("-inf")).softmax(dim=-1)

    def path(self, L: int) -> str:
        """The path a length-L input takes: the backend, or auto's choice (class docstring)."""
        if self.backend != "auto":
            return self.backend
        dense = L <= max(self.DENSE_MAX_L, self.DENSE_PER_WINDOW * self.window)
        return "dense" if dense else "banded"

    def core(self, x: Tensor) -> MixerCore:
        q, k, v = self._qkv(x)
        path = self.path(x.shape[1])
        if path == "reference":
            return MixerCore(values=v, output=self._dense_matrix(q, k) @ v)
        if path == "dense":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self._band(q.shape[2], q.device),
                                               scale=self.scale)
            return MixerCore(values=v, output=y)
        return MixerCore(values=v, output=self._banded(q, k, v)[1])

    def attention_matrix(self, x: Tensor) -> Tensor:
        """(B, H, L, L): the band weights scattered to their key columns (vectorised)."""
        q, k, v = self._qkv(x)
        if self.path(x.shape[1]) != "banded":
            return self._dense_matrix(q, k)
        weights, _ = self._banded(q, k, v)  # (B, H, L, w)
        Bsz, H, L, w = weights.shape
        idx = torch.arange(L, device=q.device)[:, None] + torch.arange(w, device=q.device)  # (L, w)
        padded = weights.new_zeros(Bsz, H, L, L + w - 1)  # column c <-> key s = c - (w - 1)
        padded = padded.scatter(-1, idx.expand(Bsz, H, L, w), weights)
        return padded[..., w - 1:]
