"""Measurements on the ICL model (arXiv 2510.00399): gates by position (Fig. 4 / Cor. 2) and the
attention score's concentration on same-pattern examples (Fig. 3 / Cor. 1).

Glossary: G_i = G_{i,l+1}(w) the gate of context example i for the query; s_i = p_i^T W_B^T W_C p_q
the bilinear score; "same" = context examples whose relevant pattern equals the query's; j = rank
of a clean example by distance to the query (j = 1 the closest clean example).

The gate of a generic mixer. A one-layer stack of a registry mixer (a variant, model.mixer) has
no w: its gate and score are not separate parameters (Mamba-2 / RetNet / GLA decay like G, the
attentions do not decay at all). `query_weights` gives such a stack the gate's role by the
attention lens (ssmlab.layers.base): the query's row of the layer's implied causal matrix M
(B, H, L, L), |M_{q,i}| normalised over the positions i and averaged over heads / channels,
i.e. the share of the query's output read from example i. For the paper's model this row would
be G_i s_i (gate × score), so the two measure the same thing only up to the score; the share
sums to 1, where the paper's gates need not (an untrained share is ≈ 1 / (l + 1)). It covers
the mixer's core only (a Mamba block's short convolution and the z gate are outside M).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ssmlab.errors import UserError
from ssmlab.papers.icl_outliers.data import Prompts
from ssmlab.papers.icl_outliers.model import ICLMamba

QUERY_WEIGHT_CHUNK = 128  # prompts per attention_matrix call (it is (B, H, L, L))


def _nanmean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    cnt = mask.sum(dim)
    tot = torch.where(mask, x, torch.zeros_like(x)).sum(dim)
    return torch.where(cnt > 0, tot / cnt.clamp(min=1), torch.full_like(tot, float("nan")))


@torch.no_grad()
def clean_ranks(outlier: Tensor) -> Tensor:
    """(B, l) int: for clean examples their rank j ≥ 1 by distance to the query (the closest
    clean one is 1), 0 for outliers."""
    clean = (~outlier).long()  # (B, l)
    from_query = torch.flip(torch.cumsum(torch.flip(clean, [-1]), -1), [-1])  # clean at or after i
    return from_query * clean


@torch.no_grad()
def query_weights(model: torch.nn.Module, P: Tensor) -> Tensor:
    """(B, L): the gate of every position for the query (the query's own last). The paper's
    model (ICLMamba): G_{i,l+1}(w). A one-layer stack (model.icl_stack): the share of the
    query's output read from position i (module doc, "The gate of a generic mixer")."""
    if isinstance(model, ICLMamba):
        return model.gates(P)
    layers = model.backbone.layers
    if len(layers) != 1:
        raise UserError(f"query_weights reads a one-layer stack, got {len(layers)} layers")
    out = []
    for Pc in P.split(QUERY_WEIGHT_CHUNK):
        x = layers[0].norm(model.backbone.encode(Pc))  # (b, L, D) the mixer's input
        row = layers[0].mixer.attention_matrix(x)[:, :, -1, :].abs()  # (b, H, L)
        share = row / row.sum(-1, keepdim=True).clamp_min(torch.finfo(row.dtype).tiny)
        out.append(share.mean(1))  # (b, L)
    return torch.cat(out)


@torch.no_grad()
def query_scores(model: torch.nn.Module, P: Tensor) -> Tensor:
    """(B, L): the score of every position for the query, without the gate. The paper's one-layer
    model: s_i = p_i^T W_B^T W_C p_q (Cor. 1). A Mamba stack (model.icl_stack, Fig. 3's 3-layer
    model): its first layer's s_i = C_q · B_i, the same bilinear form read on the layer's
    selective B_t, C_t (MambaBlock.scores; the paper does not define a multi-layer model's
    score, this is its one-layer score carried to the first layer)."""
    if isinstance(model, ICLMamba):
        return model.scores(P)
    first = model.backbone.layers[0]
    if not hasattr(first.mixer, "scores"):
        raise UserError(f"query_scores reads a Mamba layer's C_t · B_s; the first layer is "
                        f"{type(first.mixer).__name__}")
    x = first.norm(model.backbone.encode(P))  # (B, L, D) the first mixer's input
    return first.mixer.scores(x)[:, -1, :]  # (B, L): the query's row


@torch.no_grad()
def gate_profile(model: torch.nn.Module, pr: Prompts, max_rank: int | None = None,
                 ) -> dict[str, Any]:
    """Gates of the context examples for the query, split by outlier / clean.

    Returns lists: by_position_outlier / by_position_clean (mean over prompts where position i is
    an outlier / clean; NaN where never), by_rank_clean (mean gate of the j-th closest clean
    example, j = 1..max_rank), and scalars: mean_outlier, max_outlier, mean_clean."""
    G = query_weights(model, pr.P)[:, :-1]  # (B, l) context gates
    out = pr.outlier
    l = G.shape[1]
    ranks = clean_ranks(out)
    R = max_rank or l
    by_rank = [float(_nanmean(G, ranks == j, 0).nanmean()) if (ranks == j).any() else float("nan")
               for j in range(1, R + 1)]
    return {
        "by_position_outlier": _nanmean(G, out, 0).tolist(),
        "by_position_clean": _nanmean(G, ~out, 0).tolist(),
        "by_rank_clean": by_rank,
        "mean_outlier": float(G[out].mean()) if out.any() else float("nan"),
        "max_outlier": float(G[out].max()) if out.any() else float("nan"),
        "mean_clean": float(G[~out].mean()) if (~out).any() else float("nan"),
    }


@torch.no_grad()
def score_concentration(model: torch.nn.Module, pr: Prompts) -> dict[str, float]:
    """Cor. 1 / Fig. 3: summed and per-example scores s_i (query_scores) on same-pattern context
    examples vs the others (means over prompts). Keys: same_sum, other_sum, same_mean,
    other_mean, and other_abs_mean (the mean |s_i| over other examples: positive and negative
    scores do not cancel)."""
    s = query_scores(model, pr.P)[:, :-1]  # (B, l)
    same = pr.rel[:, :-1] == pr.rel[:, -1:]  # (B, l)
    zeros = torch.zeros_like(s)
    return {
        "same_sum": float(torch.where(same, s, zeros).sum(1).mean()),
        "other_sum": float(torch.where(~same, s, zeros).sum(1).mean()),
        "same_mean": float(s[same].mean()) if same.any() else float("nan"),
        "other_mean": float(s[~same].mean()) if (~same).any() else float("nan"),
        "other_abs_mean": float(s[~same].abs().mean()) if (~same).any() else float("nan"),
    }


def score_probe(pr: Prompts) -> Callable[[torch.nn.Module, int], dict[str, float]]:
    """A trainer probe recording score_concentration on a fixed prompt set."""

    def probe(model: torch.nn.Module, step: int) -> dict[str, float]:
        return score_concentration(model, pr)

    return probe
