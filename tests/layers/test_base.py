"""Helpers of ssmlab.layers.base: segment sums, causal Toeplitz matrices, apply_matrix."""

from __future__ import annotations

import torch
from layers_cases import randn

from ssmlab.layers.base import apply_matrix, segment_sum, toeplitz_causal


def test_segment_sum_entries_and_mask():
    a = randn(2, 5)
    S = segment_sum(a)
    for t in range(5):
        for s in range(5):
            if s <= t:
                torch.testing.assert_close(S[:, t, s], a[:, s + 1:t + 1].sum(-1))
            else:
                assert torch.isinf(S[:, t, s]).all() and (S[:, t, s] < 0).all()


def test_toeplitz_causal_and_apply_matrix_is_causal_convolution():
    K = randn(3, 6)  # (H, L)
    M = toeplitz_causal(K, 6)  # (H, L, L)
    v = randn(1, 3, 6, 1)
    y = apply_matrix(M[None], v)[0, :, :, 0]  # (H, L)
    want = torch.stack([torch.stack([(K[h, :t + 1].flip(0) * v[0, h, :t + 1, 0]).sum()
                                     for t in range(6)]) for h in range(3)])
    torch.testing.assert_close(y, want)
