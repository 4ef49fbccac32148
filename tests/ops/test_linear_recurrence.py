"""Generic diagonal linear recurrence: fused kernel vs the reference loop (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, vmap

from ssmlab.ops.linear_recurrence import linear_recurrence, linear_recurrence_ref

SHAPES = [
    pytest.param((5,), (5,), None, id="1d"),
    pytest.param((1,), (1,), (), id="L1-scalar-h0"),
    pytest.param((2, 3, 37), (2, 3, 37), (2, 3), id="same-shape-odd-L"),
    pytest.param((3, 1, 1, 20), (1, 4, 2, 20), (4, 2), id="broadcast-a-and-b-and-h0"),
    pytest.param((1, 130), (6, 130), (6,), id="shared-decay-L130"),
    pytest.param((2, 4, 16, 9), (2, 4, 1, 9), None, id="mamba-dT-like-decay-along-N"),
]


def _rand(shape, seed, positive=False):
    g = torch.Generator().manual_seed(seed)
    x = (
        torch.rand(shape, generator=g, dtype=torch.float64)
        if positive
        else torch.randn(shape, generator=g, dtype=torch.float64)
    )
    return x.requires_grad_(True)


def _loss(h):
    w = torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view_as(h)
    return (w * h).sum() + 0.3 * (h**2).sum()


@pytest.mark.parametrize(("a_shape", "b_shape", "h0_shape"), SHAPES)
def test_fused_matches_reference(a_shape, b_shape, h0_shape):
    a = _rand(a_shape, 0, positive=True)
    b = _rand(b_shape, 1)
    h0 = None if h0_shape is None else _rand(h0_shape, 2)
    ins = [t for t in (a, b, h0) if t is not None]
    hf = linear_recurrence(a, b, h0, backend="fused")
    hr = linear_recurrence_ref(a, b, h0)
    torch.testing.assert_close(hf, hr, rtol=1e-12, atol=1e-12)
    for gf, gr in zip(
        torch.autograd.grad(_loss(hf), ins), torch.autograd.grad(_loss(hr), ins), strict=True
    ):
        assert gf.shape == gr.shape
        torch.testing.assert_close(gf, gr, rtol=1e-10, atol=1e-12)


def test_exact_zero_and_negative_decays():
    """a_t = 0 is a hard reset (no logs are taken); negative decays flip the sign."""
    a = torch.tensor([[0.5, 0.0, -1.5, 0.0, 2.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[1.0, 2.0, 3.0, -1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    h = linear_recurrence(a, b, torch.tensor([4.0], dtype=torch.float64))
    # h: 0.5*4+1=3, reset -> 2, -1.5*2+3=0, reset -> -1, 2*-1+0.5=-1.5
    torch.testing.assert_close(h, torch.tensor([[3.0, 2.0, 0.0, -1.0, -1.5]], dtype=torch.float64))
    ga, gb = torch.autograd.grad(_loss(h), (a, b))
    ra, rb = torch.autograd.grad(
        _loss(linear_recurrence_ref(a, b, torch.tensor([4.0], dtype=torch.float64))), (a, b)
    )
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gb, rb)


def test_gradcheck_and_double_backward():
    a = _rand((2, 6), 3, positive=True)
    b = _rand((2, 6), 4)
    h0 = _rand((2,), 5)
    f = lambda a, b, h0: linear_recurrence(a, b, h0, backend="fused")  # noqa: E731
    assert torch.autograd.gradcheck(f, (a, b, h0))
    assert torch.autograd.gradgradcheck(f, (a, b, h0))


def test_complex_decays_match_reference_with_gradients():
    """S4D-style complex modes: outputs and PyTorch-convention (conjugate) gradients."""
    g = torch.Generator().manual_seed(8)
    a = torch.polar(torch.rand(3, 1, generator=g, dtype=torch.float64) * 0.9 + 0.05,
                    torch.randn(3, 1, generator=g, dtype=torch.float64))  # fmt: skip
    a = a.expand(3, 25).clone().requires_grad_(True)
    b = torch.randn(2, 3, 25, generator=g, dtype=torch.complex128, requires_grad=True)
    h0 = torch.randn(3, generator=g, dtype=torch.complex128, requires_grad=True)
    hf = linear_recurrence(a, b, h0, backend="fused")
    hr = linear_recurrence_ref(a, b, h0)
    torch.testing.assert_close(hf, hr, rtol=1e-12, atol=1e-12)

    def loss(h):
        return (h.real**2 - 0.5 * h.imag).sum()

    gf = torch.autograd.grad(loss(hf), (a, b, h0))
    gr = torch.autograd.grad(loss(hr), (a, b, h0))
    for x, y in zip(gf, gr, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    small = (a[:, :4].detach().requires_grad_(True), b[:1, :, :4].detach().requires_grad_(True))
    assert torch.autograd.gradcheck(lambda a, b: linear_recurrence(a, b, backend="fused"), small)


def test_float32_path():
    a = torch.rand(3, 200) * 0.2 + 0.8
    b = torch.randn(3, 200)
    torch.testing.assert_close(
        linear_recurrence(a, b),
        linear_recurrence_ref(a.double(), b.double()).float(),
        rtol=1e-5,
        atol=1e-5,
    )


def test_vmap_grad_matches_loop():
    a = _rand((4, 3, 11), 6, positive=True).detach()
    b = _rand((4, 3, 11), 7).detach()
    f = lambda a, b, be: _loss(linear_recurrence(a, b, backend=be))  # noqa: E731
    got = vmap(grad(f, argnums=(0, 1)), in_dims=(0, None, None))(a, b[0], "fused")
    for s in range(4):
        want = grad(f, argnums=(0, 1))(a[s], b[0], "reference")
        torch.testing.assert_close(got[0][s], want[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got[1][s], want[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(a=torch.ones(3, 4), b=torch.ones(2, 4)), "do not broadcast"),
        (dict(a=torch.ones(3, 4), b=torch.ones(3, 4), h0=torch.ones(3, 2)), "broadcast"),
        (dict(a=torch.ones(3, 4), b=torch.ones(3, 4), backend="gpu"), "unknown"),
        (
            dict(a=torch.ones(4, dtype=torch.int64), b=torch.ones(4, dtype=torch.int64)),
            "float32, float64",
        ),
    ],
    ids=["shapes", "h0-shape", "backend", "int-dtype"],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        linear_recurrence(**kwargs)
