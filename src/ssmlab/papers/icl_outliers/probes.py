"""Measurements on the ICL model (arXiv 2510.00399): gates by position (Fig. 4 / Cor. 2) and the
attention score's concentration on same-pattern examples (Fig. 3 / Cor. 1).

Glossary: G_i = G_{i,l+1}(w) the gate of context example i for the query; s_i = p_i^T W_B^T W_C p_q
the bilinear score; "same" = context examples whose relevant pattern equals the query's; j = rank
of a clean example by distance to the query (j = 1 the closest clean example).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ssmlab.papers.icl_outliers.data import Prompts
from ssmlab.papers.icl_outliers.model import ICLMamba


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
def gate_profile(model: ICLMamba, pr: Prompts, max_rank: int | None = None) -> dict[str, Any]:
    """Gates of the context examples for the query, split by outlier / clean.

    Returns lists: by_position_outlier / by_position_clean (mean over prompts where position i is
    an outlier / clean; NaN where never), by_rank_clean (mean gate of the j-th closest clean
    example, j = 1..max_rank), and scalars: mean_outlier, max_outlier, mean_clean."""
    G = model.gates(pr.P)[:, :-1]  # (B, l) context gates
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
def score_concentration(model: ICLMamba, pr: Prompts) -> dict[str, float]:
    """Cor. 1: summed and per-example scores s_i on same-pattern context examples vs the others
    (means over prompts). Keys: same_sum, other_sum, same_mean, other_mean, and other_abs_mean
    (the mean |s_i| over other examples: positive and negative scores do not cancel)."""
    s = model.scores(pr.P)[:, :-1]  # (B, l)
    same = pr.rel[:, :-1] == pr.rel[:, -1:]  # (B, l)
    zeros = torch.zeros_like(s)
    return {
        "same_sum": float(torch.where(same, s, zeros).sum(1).mean()),
        "other_sum": float(torch.where(~same, s, zeros).sum(1).mean()),
        "same_mean": float(s[same].mean()) if same.any() else float("nan"),
        "other_mean": float(s[~same].mean()) if (~same).any() else float("nan"),
        "other_abs_mean": float(s[~same].abs().mean()) if (~same).any() else float("nan"),
    }


def score_probe(pr: Prompts) -> Callable[[ICLMamba, int], dict[str, float]]:
    """A trainer probe recording score_concentration on a fixed prompt set."""

    def probe(model: ICLMamba, step: int) -> dict[str, float]:
        return score_concentration(model, pr)

    return probe
