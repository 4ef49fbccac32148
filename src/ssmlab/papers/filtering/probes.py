"""Probes of the filtering paper: gate alignment, W_O alignment ("lucky neurons"), gate
statistics per token class.

Paper: arXiv 2602.12499 (ICLR 2026): Fig. 2 / Lemma 4.1 (cos(w_Δ, o_+) rises, irrelevant flat),
Fig. 4 / Lemma 4.2 (irrelevant projections of w_Δ strongly negative on locality data), Fig. 5 and
Table 3 (W_O rows align with the class features).

Glossary: basis (d, d) rows o_k (o_+ = basis[0], o_- = basis[1], irrelevant basis[2:]);
w (d,) the gate vector w_Δ; W (m, d) the head's first layer W_O; v (m,) the fixed output weights.

Every probe is a pure function of tensors; `gate_probe` / `head_probe` wrap them as trainer
probes `(model, step) -> dict` for ssmlab.train.trainer.train.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ssmlab.papers.filtering.data import MINUS, PLUS

_EPS = 1e-12


def gate_alignment(w: Tensor, basis: Tensor) -> dict[str, float]:
    """Projections ⟨w, o⟩ and cosines cos(w, o) of the gate vector with the features.

    Keys: proj_plus, proj_minus, proj_irr_mean, proj_irr_min, proj_irr_max, cos_plus,
    cos_minus, cos_class (cosine with span{o_+, o_-}), irr_abs_cos_mean, irr_abs_cos_max,
    w_norm. A zero w gives zero cosines."""
    w = w.detach().to(torch.float64)
    P = basis.detach().to(torch.float64) @ w  # (d,)
    nw = float(w.norm())
    cos = P / max(nw, _EPS)  # (d,)
    irr, irr_cos = P[2:], cos[2:].abs()
    return {
        "proj_plus": float(P[PLUS]),
        "proj_minus": float(P[MINUS]),
        "proj_irr_mean": float(irr.mean()) if irr.numel() else 0.0,
        "proj_irr_min": float(irr.min()) if irr.numel() else 0.0,
        "proj_irr_max": float(irr.max()) if irr.numel() else 0.0,
        "cos_plus": float(cos[PLUS]),
        "cos_minus": float(cos[MINUS]),
        "cos_class": float(cos[:2].norm()),
        "irr_abs_cos_mean": float(irr_cos.mean()) if irr.numel() else 0.0,
        "irr_abs_cos_max": float(irr_cos.max()) if irr.numel() else 0.0,
        "w_norm": nw,
    }


def row_cosines(W: Tensor, basis: Tensor) -> Tensor:
    """cos(W[i], o_k) for every row i and feature k: (m, d) -> (m, d_features)."""
    W = W.detach().to(torch.float64)
    norms = W.norm(dim=1, keepdim=True).clamp_min(_EPS)  # (m, 1)
    return (W @ basis.detach().to(torch.float64).T) / norms  # (m, K)


def lucky_neurons(W: Tensor, basis: Tensor, v: Tensor | None = None,
                  threshold: float = 0.5) -> dict[str, float]:
    """W_O alignment (Fig. 5): a neuron is "lucky" when its row's cosine with o_+ or o_- is at
    least `threshold` (default 0.5). Our reading of Fig. 5 (the sources do not define "lucky"):
    a lucky neuron's output weight sign matches the feature it grows along, so with `v` given a
    neuron counts only if it aligns with o_+ and v_i > 0, or with o_- and v_i < 0.

    Keys: lucky_frac, lucky_plus_frac, lucky_minus_frac, cos_class_mean (mean over neurons of
    max(cos(W_i, o_+), cos(W_i, o_-)) clipped at 0), cos_lucky_mean (mean of that over the lucky
    neurons; 0 if none), irr_abs_cos_mean (mean |cos| with irrelevant features),
    class_energy (‖W P_class‖_F / ‖W‖_F, the share of W in span{o_+, o_-})."""
    C = row_cosines(W, basis)  # (m, d)
    cp, cm = C[:, PLUS], C[:, MINUS]
    plus = cp >= threshold
    minus = cm >= threshold
    if v is not None:
        plus = plus & (v.detach() > 0)
        minus = minus & (v.detach() < 0)
    lucky = plus | minus
    best = torch.maximum(cp, cm).clamp_min(0)  # (m,)
    m = W.shape[0]
    return {
        "lucky_frac": float(lucky.sum()) / m,
        "lucky_plus_frac": float(plus.sum()) / m,
        "lucky_minus_frac": float(minus.sum()) / m,
        "cos_class_mean": float(best.mean()),
        "cos_lucky_mean": float(best[lucky].mean()) if bool(lucky.any()) else 0.0,
        "irr_abs_cos_mean": float(C[:, 2:].abs().mean()) if C.shape[1] > 2 else 0.0,
        "class_energy": subspace_cosine(W, basis[:2]),
    }


def subspace_cosine(W: Tensor, U: Tensor) -> float:
    """‖W Uᵀ‖_F / ‖W‖_F for W (m, d) or (d,) and orthonormal rows U (k, d): the cosine between
    W's rows and the subspace span(U) (for a vector: cos of its angle to the subspace)."""
    W = W.detach().to(torch.float64)
    if W.dim() == 1:
        W = W[None]
    U = U.detach().to(torch.float64)
    nw = float(W.norm())
    return float((W @ U.T).norm()) / nw if nw > _EPS else 0.0


def gate_stats(gates: Tensor, features: Tensor, y: Tensor) -> dict[str, float]:
    """Mean gate σ(w_Δᵀx_t) per token class: relevant (the label's class feature), confusing
    (the other class feature), irrelevant. gates, features (N, L); y (N,) ±1.
    Missing classes give NaN."""
    own = torch.where(y[:, None] > 0, PLUS, MINUS)  # (N, 1)
    other = torch.where(y[:, None] > 0, MINUS, PLUS)
    g = gates.detach().to(torch.float64)
    out = {}
    for name, mask in (("relevant", features == own), ("confusing", features == other),
                       ("irrelevant", features >= 2)):
        out[f"gate_{name}"] = float(g[mask].mean()) if bool(mask.any()) else float("nan")
    return out


def gate_probe(basis: Tensor, X: Tensor | None = None, features: Tensor | None = None,
               y: Tensor | None = None, prefix: str = "") -> Callable[[Any, int], dict[str, float]]:
    """A trainer probe recording `gate_alignment` of model.w_delta, and `gate_stats` on
    (X, features, y) when given."""

    def probe(model: Any, step: int) -> dict[str, float]:
        out = gate_alignment(model.w_delta, basis)
        if X is not None and features is not None and y is not None:
            out |= gate_stats(model.gates(X), features, y)
        return {prefix + k: v for k, v in out.items()}

    return probe


def head_probe(basis: Tensor, threshold: float = 0.5) -> Callable[[Any, int], dict[str, float]]:
    """A trainer probe recording `lucky_neurons` of model.W_O (with model.v)."""

    def probe(model: Any, step: int) -> dict[str, float]:
        s = lucky_neurons(model.W_O, basis, model.v, threshold)
        return {"wo_" + k: v for k, v in s.items()}

    return probe


def input_sensitivity(fn: Callable[[Tensor], Tensor], X: Tensor) -> Tensor:
    """The mean input direction each output channel of `fn` responds to: row e of the result is
    mean over (b, s) of ∂(Σ_t fn(X)[b, t, e]) / ∂x_{b,s} — (E, d) for fn: (B, L, d) -> (B, L, E).

    Used for the standard multi-block Mamba (Table 3): with fn = the first block's step sizes Δ,
    the rows are each channel's effective gate vector w_Δ (a local linearisation through the
    norm, in_proj, the causal convolution, SiLU, x_proj and dt_proj)."""
    X = X.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = fn(X)  # (B, L, E)
        rows = []
        for e in range(out.shape[-1]):
            (g,) = torch.autograd.grad(out[..., e].sum(), X, retain_graph=e + 1 < out.shape[-1])
            rows.append(g.mean((0, 1)))  # (d,)
    return torch.stack(rows)  # (E, d)


def class_alignment(W: Tensor, basis: Tensor) -> dict[str, float]:
    """How much of W (m, d) or (d,) lies along the class features vs the irrelevant ones.

    class_cos = ‖W P_class‖_F / ‖W‖_F (cosine with span{o_+, o_-}); class_feature_cos = mean over
    o_± of ‖W o‖ / ‖W‖_F; irr_feature_cos = the same mean over irrelevant o_j (for a random W
    both per-feature values are ≈ 1/√d)."""
    W = W.detach().to(torch.float64)
    if W.dim() == 1:
        W = W[None]
    B = basis.detach().to(torch.float64)
    nw = float(W.norm())
    if nw <= _EPS:
        return {"class_cos": 0.0, "class_feature_cos": 0.0, "irr_feature_cos": 0.0}
    per = (W @ B.T).norm(dim=0) / nw  # (d,)
    return {
        "class_cos": subspace_cosine(W, B[:2]),
        "class_feature_cos": float(per[:2].mean()),
        "irr_feature_cos": float(per[2:].mean()) if per.numel() > 2 else 0.0,
    }
