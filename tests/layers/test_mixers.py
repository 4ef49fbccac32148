"""Properties every mixer must have: shape, causality, attention_matrix == core output,
forward == readout(core), gradients reach every parameter. Parametrised over layers_cases."""

from __future__ import annotations

import torch
from layers_cases import D_MODEL, make_mixer, randn

from ssmlab.layers.base import apply_matrix

BATCH, LENGTH = 2, 9


def test_output_shape_and_dtype(mixer_case):
    m = make_mixer(mixer_case)
    x = randn(BATCH, LENGTH, D_MODEL)
    y = m(x)
    assert y.shape == (BATCH, LENGTH, D_MODEL)
    assert y.dtype == torch.float64
    assert torch.isfinite(y).all()


def test_causal(mixer_case):
    """Changing x at position t0 leaves outputs before t0 unchanged and changes output t0."""
    m = make_mixer(mixer_case)
    x = randn(BATCH, LENGTH, D_MODEL)
    t0 = 5
    x2 = x.clone()
    x2[:, t0:] += randn(BATCH, LENGTH - t0, D_MODEL, seed=7)
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y2[:, :t0], y[:, :t0], rtol=0, atol=1e-12)
    assert (y2[:, t0] - y[:, t0]).abs().max() > 1e-6


def test_attention_matrix_reproduces_core_output(mixer_case):
    m = make_mixer(mixer_case)
    x = randn(BATCH, LENGTH, D_MODEL)
    M = m.attention_matrix(x)
    core = m.core(x)
    H = core.values.shape[1]
    assert M.shape == (BATCH, H, LENGTH, LENGTH)
    assert core.output.shape == core.values.shape
    # causal: nothing above the diagonal
    upper = torch.ones(LENGTH, LENGTH, dtype=torch.bool).triu(1)
    assert M[..., upper].abs().max() == 0
    torch.testing.assert_close(apply_matrix(M, core.values), core.output, rtol=1e-10, atol=1e-10)
    # the matrix is not trivially zero
    assert M.abs().max() > 1e-6


def test_forward_is_readout_of_core(mixer_case):
    m = make_mixer(mixer_case)
    x = randn(BATCH, LENGTH, D_MODEL)
    torch.testing.assert_close(m.readout(x, m.core(x).output), m(x), rtol=1e-12, atol=1e-12)


def test_gradients_reach_every_parameter(mixer_case):
    m = make_mixer(mixer_case)
    x = randn(BATCH, LENGTH, D_MODEL).requires_grad_()
    w = randn(BATCH, LENGTH, D_MODEL, seed=3)
    (m(x) * w).sum().backward()
    assert x.grad is not None and x.grad.abs().max() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, f"{name} got an all-zero gradient"


def test_float32_default_backend_and_length_one(mixer_case):
    """The default (fast) backends run in float32, and a length-1 sequence works."""
    m = make_mixer(mixer_case).float()
    for L in (1, 5):
        x = randn(2, L, D_MODEL).float()
        y = m(x)
        assert y.shape == (2, L, D_MODEL) and y.dtype == torch.float32
        torch.testing.assert_close(y, m.double()(x.double()).float(), rtol=1e-4, atol=1e-5)
        m.float()
