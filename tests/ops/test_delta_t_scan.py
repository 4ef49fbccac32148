"""Mamba-ΔT scan: fused kernel vs the reference loop (outputs and gradients of every input),
vs the materialised formula the layer used before (linear_recurrence on (B, d, N, L)), and
input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import grad, vmap

from ssmlab.ops.delta_t_scan import BACKENDS, delta_t_scan, delta_t_scan_ref
from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.linear_recurrence import linear_recurrence


def _inputs(Bsz, L, d, N, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    u = r(Bsz, L, d)
    delta = F.softplus(r(Bsz, L, N) - 1.0)
    A = -torch.exp(r(d, N) * 0.5)  # Λ < 0
    Bin, C = r(Bsz, L, N), r(Bsz, L, N)
    return [x.to(dtype).requires_grad_(True) for x in (u, delta, A, Bin, C)]


def _loss(y):
    w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    return (w * y).sum() + 0.3 * (y**2).sum()


def _compare(ins, K, rtol, atol):
    yf = delta_t_scan(*ins, backend="fused", checkpoint_every=K)
    yr = delta_t_scan_ref(*ins)
    assert yf.shape == yr.shape == ins[0].shape
    torch.testing.assert_close(yf, yr, rtol=rtol, atol=atol)
    gfs = torch.autograd.grad(_loss(yf), ins)
    grs = torch.autograd.grad(_loss(yr), ins)
    for name, gf, gr in zip(("u", "delta", "A", "Bin", "C"), gfs, grs, strict=True):
        assert gf.shape == gr.shape, name
        torch.testing.assert_close(gf, gr, rtol=rtol, atol=atol, msg=name)


SHAPES = [
    pytest.param((2, 37, 5, 3), id="B2-L37-d5-N3"),
    pytest.param((3, 1, 4, 2), id="L1"),
    pytest.param((2, 20, 1, 4), id="d1"),
    pytest.param((2, 20, 4, 1), id="N1"),
    pytest.param((1, 130, 8, 8), id="L130-not-multiple-of-64"),
    pytest.param((4, 64, 16, 8), id="L64-induction-like"),
]


@pytest.mark.parametrize("K", [1, 3, 64])
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_matches_reference_float64(shape, K):
    _compare(_inputs(*shape), K, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("K", [1, 3, 64])
@pytest.mark.parametrize("shape", [(2, 37, 5, 3), (1, 130, 8, 8), (3, 1, 4, 2)])
def test_fused_matches_reference_float32(shape, K):
    _compare(_inputs(*shape, dtype=torch.float32), K, rtol=1e-4, atol=1e-4)


def test_gradcheck_fused():
    ins = _inputs(2, 7, 3, 2, seed=3)
    f = lambda *a: delta_t_scan(*a, backend="fused", checkpoint_every=3)  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(ins))


def test_equals_the_materialised_linear_recurrence():
    """What MambaDeltaT._ssm computed before: (B, d, N, L) decays and drives, then a scan."""
    u, delta, A, Bin, C = _inputs(3, 29, 6, 4, seed=5)
    dT = delta.transpose(1, 2)  # (B, N, L)
    a = torch.exp(A[None, :, :, None] * dT[:, None])  # (B, d, N, L)
    b = u.transpose(1, 2)[:, :, None, :] * Bin.transpose(1, 2)[:, None]  # (B, d, N, L)
    h = linear_recurrence(a, b, backend="fused")  # (B, d, N, L)
    y_old = torch.einsum("bdnl,bnl->bld", h, C.transpose(1, 2))  # (B, L, d)
    for backend in ("fused", "reference", "auto"):
        y = delta_t_scan(u, delta, A, Bin, C, backend=backend)
        torch.testing.assert_close(y, y_old, rtol=1e-11, atol=1e-12)
    ins = (u, delta, A, Bin, C)
    g_old = torch.autograd.grad(_loss(y_old), ins)
    g_new = torch.autograd.grad(_loss(delta_t_scan(*ins)), ins)
    for go, gn in zip(g_old, g_new, strict=True):
        torch.testing.assert_close(gn, go, rtol=1e-10, atol=1e-12)


def test_vmap_and_vmap_grad_match_reference():
    """Seed ensembles: a vmapped Λ (one (d, N) block per sample), an unbatched Bin."""
    S = 3
    per = [_inputs(2, 9, 4, 3, seed=10 + s) for s in range(S)]
    u, delta, A, _, C = (torch.stack([p[i].detach() for p in per]) for i in range(5))
    Bin = per[0][3].detach()
    dims = (0, 0, 0, None, 0)
    f = lambda *a: delta_t_scan(*a, backend="fused", checkpoint_every=4)  # noqa: E731
    yf = vmap(f, in_dims=dims)(u, delta, A, Bin, C)
    yr = vmap(delta_t_scan_ref, in_dims=dims)(u, delta, A, Bin, C)
    torch.testing.assert_close(yf, yr, rtol=1e-11, atol=1e-12)
    args = tuple(range(5))
    gf = vmap(grad(lambda *a: _loss(f(*a)), argnums=args), in_dims=dims)(u, delta, A, Bin, C)
    gr = vmap(grad(lambda *a: _loss(delta_t_scan_ref(*a)), argnums=args), in_dims=dims)(
        u, delta, A, Bin, C
    )
    for a, b in zip(gf, gr, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_zero_length_sequence():
    u, delta, A, Bin, C = _inputs(2, 0, 3, 2)
    y = delta_t_scan(u, delta, A, Bin, C, backend="fused")
    assert y.shape == (2, 0, 3)
    (g,) = torch.autograd.grad(y.sum(), (A,))
    assert torch.equal(g, torch.zeros_like(A))


def test_backends_listed():
    assert BACKENDS == ("auto", "fused", "reference")


def _bad(**over):
    u, delta, A, Bin, C = (x.detach() for x in _inputs(2, 5, 3, 4))
    args = dict(u=u, delta=delta, A=A, Bin=Bin, C=C)
    args.update(over)
    return args


@pytest.mark.parametrize(
    ("over", "match"),
    [
        pytest.param(dict(u=torch.zeros(2, 5)), "u has shape", id="u-rank"),
        pytest.param(dict(delta=torch.zeros(2, 5, 4, 1)), "delta has shape", id="delta-rank"),
        pytest.param(dict(A=torch.zeros(3, 4, 1)), "A has shape", id="A-rank"),
        pytest.param(dict(A=torch.zeros(2, 4)), "A has shape", id="A-d-mismatch"),
        pytest.param(dict(Bin=torch.zeros(3, 5, 4)), "Bin has shape", id="Bin-B-mismatch"),
        pytest.param(dict(C=torch.zeros(2, 6, 4)), "C has shape", id="C-L-mismatch"),
        pytest.param(dict(delta=torch.zeros(2, 5, 3)), "delta has shape", id="delta-N-mismatch"),
        pytest.param(dict(u=torch.zeros(2, 5, 3, dtype=torch.int64)), "dtype", id="int-u"),
        pytest.param(dict(C=torch.zeros(2, 5, 4, dtype=torch.int32)), "dtype", id="int-C"),
    ],
)
def test_bad_inputs_raise(over, match):
    for backend in ("fused", "reference"):
        with pytest.raises(OpsInputError, match=match):
            delta_t_scan(**_bad(**over), backend=backend)


def test_bad_backend_dtype_mix_and_checkpoint():
    with pytest.raises(OpsInputError, match="unknown delta_t_scan backend 'pscan'"):
        delta_t_scan(**_bad(), backend="pscan")
    with pytest.raises(OpsInputError, match="one dtype"):
        delta_t_scan(**_bad(C=torch.zeros(2, 5, 4, dtype=torch.float32)), backend="fused")
    with pytest.raises(OpsInputError, match="checkpoint_every"):
        delta_t_scan(**_bad(), backend="fused", checkpoint_every=0)
    assert issubclass(OpsInputError, ValueError)
