"""Reference diagonal linear recurrence: the plain loop over time (the executable spec).

Glossary: a_t decay (gate), b_t drive, h_t state; all broadcastable (…, L), time on the last axis.

    h_t = a_t ⊙ h_{t-1} + b_t,     h_{-1} = h0 (zeros by default),   t = 0..L-1.

Nothing else is assumed: decays may be any real number, exactly 0 (a hard reset) or negative.
"""

from __future__ import annotations

import torch
from torch import Tensor


def linear_recurrence_ref(a: Tensor, b: Tensor, h0: Tensor | None = None) -> Tensor:
    """All states h (broadcast(a, b).shape) of h_t = a_t h_{t-1} + b_t; h0 broadcasts to (…)."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    a, b = a.expand(shape), b.expand(shape)
    h = a.new_zeros(shape[:-1]) if h0 is None else h0.expand(shape[:-1])
    hs = []
    for a_t, b_t in zip(a.unbind(-1), b.unbind(-1), strict=True):
        h = a_t * h + b_t  # (…)
        hs.append(h)
    return torch.stack(hs, dim=-1) if hs else a.new_zeros(shape)
