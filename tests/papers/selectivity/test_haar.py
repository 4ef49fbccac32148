"""The S6 Haar construction equals the direct (closed-form) Haar projection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssmlab.errors import UserError
from ssmlab.papers.selectivity.theory.haar import (
    all_wavelets,
    boxes_for,
    derivable,
    greedy_wavelets,
    haar_coefficients,
    haar_projection,
    haar_s6,
    haar_s6_inputs,
    haar_s6_layer,
    haar_wavelet,
    position_bits,
    s6_box_integrals,
    s6_haar_projection,
)


def test_direct_haar_is_orthonormal_and_complete() -> None:
    L = 32
    ws = all_wavelets(L)
    Psi = np.stack([np.ones(L)] + [haar_wavelet(w, L) for w in ws])  # (L, L)
    assert np.allclose(Psi @ Psi.T / L, np.eye(L))  # orthonormal in L2[0, 1)
    f = np.random.default_rng(0).standard_normal(L)
    assert np.allclose(haar_projection(f, ws), f)  # the full basis reproduces f


WAVELET_SETS = {
    "coarse-levels": lambda L: all_wavelets(L, max_level=3),
    "scattered": lambda L: [(0, 0), (5, 7), (9, 300), (9, 301), (3, 2)],
    "finest-pair": lambda L: [(9, 0), (9, 511)],
    "full": lambda L: all_wavelets(L),
}


@pytest.mark.parametrize("name", list(WAVELET_SETS))
def test_s6_projection_equals_direct(name: str) -> None:
    L = 1024
    ws = WAVELET_SETS[name](L)
    rng = np.random.default_rng(1)
    f = np.stack([rng.standard_normal(L), np.cumsum(rng.standard_normal(L)) / 10])  # (2, L)
    proj, coefs = s6_haar_projection(f, ws)
    for b in range(2):
        direct = haar_projection(f[b], ws)
        scale = np.abs(f[b]).max()
        assert np.abs(proj[b] - direct).max() <= 1e-6 * scale
        assert np.abs(coefs[b] - haar_coefficients(f[b], ws)).max() <= 1e-6 * scale


def test_box_integrals_are_running_integrals_and_within_bound() -> None:
    L = 256
    boxes = [(0, 0), (3, 5), (8, 17)]
    con = haar_s6(L, boxes)
    u = torch.from_numpy(np.random.default_rng(2).standard_normal((1, L)))
    y = s6_box_integrals(u, con)[0]  # (D, L)
    for d, (j, k) in enumerate(boxes):
        ind = np.zeros(L)
        ind[k * (L >> j):(k + 1) * (L >> j)] = 1
        running = np.cumsum(u[0].numpy() * ind) / L  # ∫ over the box up to t
        err = np.abs(y[d].numpy() - running).max()
        assert err <= con.error_bound(float(u.abs().max()))
        # frozen after the box: the output is constant from the box's end on
        end = (k + 1) * (L >> j)
        assert np.ptp(y[d, end - 1:].numpy()) <= 1e-12


def test_construction_needs_freezing() -> None:
    """With a constant Δ (S4D's regime) the same channel is not a box integral: the check can
    fail, so it says something."""
    L = 256
    con = haar_s6(L, [(2, 1)])
    u = torch.ones(1, L, dtype=torch.float64)
    good = float(s6_box_integrals(u, con)[0, 0, -1])
    assert abs(good - 0.25) < 1e-9
    flat = haar_s6(L, [(0, 0)])  # Δ = δ everywhere: integrates the whole signal
    assert abs(float(s6_box_integrals(u, flat)[0, 0, -1]) - 0.25) > 0.5


def test_real_s6_layer_matches_op() -> None:
    L = 128
    ws = [(0, 0), (2, 3), (6, 40)]
    con = haar_s6(L, boxes_for(ws))
    layer = haar_s6_layer(con)
    u = torch.from_numpy(np.random.default_rng(3).standard_normal((2, L)))
    out = layer(haar_s6_inputs(u, con))  # (B, L, D + J + 1)
    D = len(con.boxes)
    ref = s6_box_integrals(u, con, backend="reference")
    assert torch.allclose(out[:, :, :D].transpose(1, 2), ref, rtol=0, atol=1e-12)


def test_bits_and_boxes() -> None:
    bits = position_bits(8)
    assert bits[5].tolist() == [1.0, 0.0, 1.0]
    ws = [(0, 0), (1, 0), (1, 1), (2, 1)]  # closed under parents: 1 + #wavelets channels
    assert len(boxes_for(ws)) == 1 + len(ws)
    assert (1, 1) in derivable({(0, 0), (1, 0)})
    assert len(boxes_for([(3, 5)])) == 3  # an orphan wavelet stores both halves
    with pytest.raises(UserError):
        s6_haar_projection(np.zeros(16), [(4, 0)])


def test_greedy_respects_budget_and_error_decreases() -> None:
    L = 512
    from ssmlab.papers.selectivity.data.piecewise import PiecewiseConfig, piecewise_constant

    g = piecewise_constant(PiecewiseConfig(pieces=6, grid=L), 0).values
    errs = []
    for N in (2, 4, 8, 16, 32):
        ws = greedy_wavelets(g, N)
        assert len(boxes_for(ws)) <= N
        errs.append(float(((haar_projection(g, ws) - g) ** 2).mean()))
    assert all(b <= a + 1e-15 for a, b in zip(errs, errs[1:], strict=False))
    assert errs[-1] < 0.2 * errs[0]
