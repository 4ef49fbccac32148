"""The ICL paper's one-layer Mamba and its baselines (icl_outliers, arXiv 2510.00399, Sec. 3).

Glossary (code name -> paper symbol):
    P           P = [x_1..x_l x_q; y_1..y_l 0]   the prompt; our rows are the paper's columns p_i
                                                 (B, L = l + 1, d + 1)
    W_B, W_C    W_B, W_C ∈ R^{m×(d+1)}           key / query maps, B_i = p_i^T W_B^T, C_i = W_C p_i
    w           w = w_{d+1}                      the label row's gate vector, Δ_i = softplus(w^T p_i)
    m           m = l + 1                        state size
    delta       δ                                init scale of W_B, W_C's diagonal
    gate_logits w^T p_i                          (B, L)
    gates       G_{i,l+1}(w)                     (B, L), the last column of the gate matrix
    scores      p_i^T W_B^T W_C p_q              (B, L)

Eq. 3 (output for the query, the last position):

    F(Ψ; P) = Σ_{i=1..l+1} G_{i,l+1}(w) · y_i · p_i^T W_B^T W_C p_q,
    G_{i,t}(w) = σ(w^T p_i) Π_{j=i+1..t} (1 - σ(w^T p_j)),

which is the Mamba recurrence on the label row with A = -1, Δ_i = softplus(w^T p_i) and zero-order
hold (exp(-Δ) = 1 - σ(w^T p), 1 - exp(-Δ) = σ(w^T p)):

    h_i = (1 - σ(w^T p_i)) h_{i-1} + σ(w^T p_i) y_i W_B p_i ∈ R^m,    F = (W_C p_q)^T h_{l+1}.

The query term vanishes because its label slot is 0. The linear Transformer is the same model
with G ≡ 1 (Sec. 3.2). `form="closed"` evaluates Eq. 3 vectorised (gates from cumulative
log-decays); `form="recurrent"` runs the scan; they agree to float64 precision (tested).

Init (Sec. 3): the first min(m, d) diagonal entries of W_B and W_C are δ, all else 0;
w ~ N(0, I/(d+1)). All of Ψ = {W_B, W_C, w} are trained. The paper states the init for the
first d diagonal entries; W_B has only m rows, and m = l_tr + 1 = 21 < d = 30 in its set-up,
hence min(m, d). The label coordinate d + 1 starts at 0 either way.

L in this module is the prompt length l + 1, not the paper's L (the lower bound 0.3 on Σλ of
the shifted test outliers, see data.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssmlab.errors import UserError
from ssmlab.layers.norms import RMSNorm
from ssmlab.models.classifier import SequenceClassifier
from ssmlab.ops.attention_lens import gate_matrix
from ssmlab.ops.linear_recurrence import linear_recurrence
from ssmlab.seeding import seeded

if TYPE_CHECKING:
    from ssmlab.layers.registry import MixerName

__all__ = ["ICLLinearTransformer", "ICLMamba", "ICLSoftmaxAttention", "gate_matrix", "icl_stack",
           "last_column_gates"]

Form = Literal["closed", "recurrent"]


def diagonal_init(m: int, d: int, delta: float, dtype: torch.dtype) -> Tensor:
    """(m, d + 1) with W[i, i] = δ for i < min(m, d): the paper's W_B, W_C init."""
    W = torch.zeros(m, d + 1, dtype=dtype)
    k = min(m, d)
    W[torch.arange(k), torch.arange(k)] = delta
    return W


def last_column_gates(z: Tensor) -> Tensor:
    """G_{i,L}(w) = σ(z_i) Π_{j=i+1..L} (1 - σ(z_j)) for z = w^T p: (..., L) -> (..., L).

    Vectorised in log space: log(1 - σ(z)) = logsigmoid(-z), summed over j > i as an exclusive
    reversed cumulative sum (only the needed terms are added: no difference of prefix sums, so no
    cancellation). The full matrix is ssmlab.ops.attention_lens.gate_matrix; the output needs
    only this last column, O(L) instead of O(L²)."""
    log_keep = F.logsigmoid(-z)  # (..., L) log(1 - σ(z_j))
    suffix = torch.flip(torch.cumsum(torch.flip(log_keep, [-1]), -1), [-1])  # Σ_{j≥i}
    after = F.pad(suffix[..., 1:], (0, 1))  # (..., L) Σ_{j>i}, 0 for the last position
    return torch.exp(F.logsigmoid(z) + after)


class ICLMamba(nn.Module):
    """One-layer Mamba of Eq. 3 (gated=True) or the linear Transformer (gated=False, G ≡ 1).

    Args: d input dim; m state size (paper: l_tr + 1); delta = δ (paper 0.2); gated; form
    "closed" (default) | "recurrent"; backend of the recurrent form's scan
    (ssmlab.ops.linear_recurrence: "auto" | "fused" | "reference"); seed for w's init; dtype.
    `gate_matrix(model.gate_logits(P))` is the full causal gate matrix (ssmlab.ops.attention_lens).
    forward(P (B, L, d + 1)) -> F (B,)."""

    def __init__(self, d: int, m: int, delta: float = 0.2, gated: bool = True,
                 form: Form = "closed", seed: int = 0, dtype: torch.dtype = torch.float32,
                 backend: str = "auto"):
        super().__init__()
        self.backend = backend
        if d < 1 or m < 1:
            raise UserError(f"ICLMamba needs d ≥ 1 and m ≥ 1, got d={d}, m={m}")
        if form not in ("closed", "recurrent"):
            raise UserError(f"form must be 'closed' or 'recurrent', got {form!r}")
        self.d, self.m, self.gated, self.form = d, m, gated, form
        self.W_B = nn.Parameter(diagonal_init(m, d, delta, dtype))  # (m, d+1)
        self.W_C = nn.Parameter(diagonal_init(m, d, delta, dtype))  # (m, d+1)
        if gated:
            g = torch.Generator().manual_seed(seed)
            w = torch.randn(d + 1, generator=g, dtype=torch.float64) / math.sqrt(d + 1)
            self.w = nn.Parameter(w.to(dtype))  # (d+1,)

    def _check(self, P: Tensor) -> None:
        if P.dim() != 3 or P.shape[-1] != self.d + 1:
            raise UserError(f"prompt must be (B, L, d+1) = (B, L, {self.d + 1}), got {tuple(P.shape)}")

    def gate_logits(self, P: Tensor) -> Tensor:
        """w^T p_i: (B, L)."""
        return P @ self.w

    def gates(self, P: Tensor) -> Tensor:
        """G_{i,l+1}(w) for every position i (the query's own gate last): (B, L); ones if G ≡ 1."""
        if not self.gated:
            return P.new_ones(P.shape[:2])
        return last_column_gates(self.gate_logits(P))

    def kq(self) -> Tensor:
        """W_B^T W_C ∈ R^{(d+1)×(d+1)}: the learned bilinear score."""
        return self.W_B.T @ self.W_C

    def scores(self, P: Tensor) -> Tensor:
        """p_i^T W_B^T W_C p_q for every position: (B, L)."""
        keys = P @ self.W_B.T  # (B, L, m)
        query = P[:, -1] @ self.W_C.T  # (B, m)
        return torch.einsum("blm,bm->bl", keys, query)

    def forward(self, P: Tensor) -> Tensor:
        self._check(P)
        if self.form == "recurrent":
            return self.forward_recurrent(P)
        y = P[..., -1]  # (B, L) labels, 0 at the query
        return (self.gates(P) * y * self.scores(P)).sum(-1)

    def forward_recurrent(self, P: Tensor) -> Tensor:
        """The scan h_i = a_i h_{i-1} + b_i (a = 1 - σ(w^T p), b = σ(w^T p) y W_B p), F = C_q · h."""
        self._check(P)
        y = P[..., -1:]  # (B, L, 1)
        keys = P @ self.W_B.T  # (B, L, m)
        if self.gated:
            zl = self.gate_logits(P).unsqueeze(-1)  # (B, L, 1)
            a, b = torch.sigmoid(-zl), torch.sigmoid(zl) * y * keys  # (B, L, 1), (B, L, m)
        else:
            a, b = torch.ones_like(y), y * keys
        h = linear_recurrence(a.expand_as(b).movedim(1, -1), b.movedim(1, -1),
                              backend=self.backend).movedim(-1, 1)  # (B, L, m), time last inside
        return (h[:, -1] * (P[:, -1] @ self.W_C.T)).sum(-1)


class ICLLinearTransformer(ICLMamba):
    """The linear-Transformer baseline (Sec. 3.2): Eq. 3 with G ≡ 1, Ψ = {W_B, W_C}."""

    def __init__(self, d: int, m: int, delta: float = 0.2, form: Form = "closed", seed: int = 0,
                 dtype: torch.dtype = torch.float32):
        super().__init__(d, m, delta=delta, gated=False, form=form, seed=seed, dtype=dtype)


class ICLSoftmaxAttention(nn.Module):
    """One-layer softmax attention baseline on the same prompts (not in the paper's main text):

        F = Σ_{i ≤ l+1} softmax_i(p_i^T W_B^T W_C p_q) · u^T p_i,

    values u^T p_i with u initialised to e_{d+1} (the label slot), same δ-diagonal init of W_B, W_C.
    The value vector is trained so the output can exceed the hinge margin 1."""

    def __init__(self, d: int, m: int, delta: float = 0.2, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.d, self.m = d, m
        self.W_B = nn.Parameter(diagonal_init(m, d, delta, dtype))
        self.W_C = nn.Parameter(diagonal_init(m, d, delta, dtype))
        u = torch.zeros(d + 1, dtype=dtype)
        u[-1] = 1.0
        self.u = nn.Parameter(u)

    def scores(self, P: Tensor) -> Tensor:
        keys = P @ self.W_B.T  # (B, L, m)
        query = P[:, -1] @ self.W_C.T  # (B, m)
        return torch.einsum("blm,bm->bl", keys, query)

    def forward(self, P: Tensor) -> Tensor:
        att = self.scores(P).softmax(-1)  # (B, L)
        return (att * (P @ self.u)).sum(-1)


def icl_stack(d: int, mixer: MixerName, n_layers: int = 3, d_model: int = 32, seed: int = 0,
              mixer_kwargs: dict[str, Any] | None = None) -> SequenceClassifier:
    """An n-layer stack for the multi-layer results (Fig. 3, Table 1) and for the outlier
    experiments on another mixer (1 layer): not specified by the paper. The generic backbone
    (ssmlab.models.classifier), with every module's own init:

        h_0 = E p_i (linear embedding d+1 -> d_model),
        h_k = h_{k-1} + mixer_k(RMSNorm(h_{k-1}))       (pre-norm residual, k = 1..n_layers)
        F   = r^T RMSNorm(h_n)[query position]          (scalar readout at the query)

    mixer: any registry name (ssmlab.layers.registry), built with its own defaults and
    `mixer_kwargs`. `seed` seeds the init (draws in the order embedding, mixers, readout; the
    global RNG is left as it was). `net.backbone.hidden(P)` is the residual stream after the
    embedding and after each layer; `net(P)` is F (B,)."""
    if n_layers < 1:
        raise UserError(f"n_layers must be ≥ 1, got {n_layers}")
    with seeded(seed):  # init draws from the global RNG; restored after
        net = SequenceClassifier(mixer, d_model, n_layers, binary=True, pooling="last",
                                 d_input=d + 1, init="none", final_norm=False,
                                 mixer_kwargs=mixer_kwargs or {})
    # The final RMSNorm sits after the pooling, on the query's position only: the same output as
    # the backbone's norm_f (a per-position map), and its weight's gradient summed over B
    # entries rather than B × L (of which all but B are zero): float sums in the same order as
    # the stacks' training before the generic backbone, so every stored number is reproduced
    # bit for bit. It draws no random numbers, so the init is the backbone's.
    net.head = nn.Sequential(RMSNorm(d_model), net.head)
    return net
