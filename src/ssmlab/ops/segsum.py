"""Stable segment sums: the log-decay between every pair of positions, without subtraction.

    segsum(x)[…, t, s] = Σ_{j=s+1..t} x_j   for s <= t   (0 on the diagonal),

computed as a cumulative sum over t of x_j masked to j > s, so no cumsum(x)_t - cumsum(x)_s
cancellation happens (that difference loses all precision when the cumulative log-decay is large,
e.g. after many steps of strong decay). Entries with s > t are 0 and the causal mask says which
entries are valid: callers must mask *before* exp (or multiply exp(...) by the mask), so that no
exp(+large) or NaN gradient appears in the masked half.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(L: int, device: torch.device | None = None) -> Tensor:
    """(L, L) bool, True where s <= t (row t = query/output position, column s = key/input)."""
    return torch.ones(L, L, dtype=torch.bool, device=device).tril()


def segsum(x: Tensor) -> Tensor:
    """(…, L) -> (…, L, L) with [..., t, s] = Σ_{j=s+1..t} x_j for s <= t, 0 for s > t."""
    L = x.shape[-1]
    strict = torch.ones(L, L, dtype=torch.bool, device=x.device).tril(-1)  # [j, s]: j > s
    xx = x.unsqueeze(-1).expand(*x.shape, L)  # (…, L_j, L_s) = x_j
    xx = xx.masked_fill(~strict, 0.0)
    return xx.cumsum(dim=-2)  # (…, L_t, L_s)
