"""Fast selective-scan paths (fused Numba kernel, PyTorch pscan) against the reference loop:
outputs, last states and the gradients of every input, in float64."""

from __future__ import annotations

import pytest
import torch
from ops_cases import ScanCase, scalar_loss, scan_inputs, tensor_args

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.selective_scan import selective_scan, selective_scan_ref
from ssmlab.ops.selective_scan.fused import fused_scan_core

ALL = dict(with_D=True, with_z=True, with_bias=True, softplus=True, with_h0=True, last_state=True)
CASES = [
    ScanCase("L1", 2, 3, 4, 1, **ALL),
    ScanCase("L1-bare", 1, 1, 1, 1),
    ScanCase("L2-K1", 2, 2, 3, 2, checkpoint_every=1, **ALL),
    ScanCase("odd-L37-all-options", 2, 4, 3, 37, **ALL),
    ScanCase("L130-crosses-3-checkpoint-blocks", 2, 3, 4, 130, **ALL),
    ScanCase("L130-K7-ragged-blocks", 1, 2, 3, 130, checkpoint_every=7, with_h0=True),
    ScanCase("L37-K-larger-than-L", 2, 2, 2, 37, checkpoint_every=100, last_state=True),
    ScanCase("N1", 3, 2, 1, 20, with_D=True, last_state=True),
    ScanCase("batch1", 1, 3, 5, 16, with_z=True),
    ScanCase("bare-no-options", 2, 3, 4, 24),
    ScanCase("softplus-bias-only", 2, 3, 2, 19, with_bias=True, softplus=True),
    ScanCase("D-z-only", 2, 3, 2, 19, with_D=True, with_z=True),
    ScanCase("h0-and-last-state", 2, 3, 2, 19, with_h0=True, last_state=True),
    ScanCase("grouped-G2", 2, 4, 3, 33, groups=2, **ALL),
    ScanCase("grouped-G-equals-D", 2, 3, 2, 17, groups=3, with_h0=True, last_state=True),
    ScanCase("grouped-G1", 1, 4, 3, 9, groups=1, softplus=True),
    ScanCase("L64-exactly-one-block", 2, 2, 3, 64, **ALL),
]


def _run(case: ScanCase, backend: str, **extra):
    kw = scan_inputs(case)
    ts = tensor_args(kw)
    out = selective_scan(**kw, backend=backend, checkpoint_every=case.checkpoint_every, **extra)
    names = list(ts)
    grads = torch.autograd.grad(scalar_loss(out), [ts[n] for n in names])
    return out, dict(zip(names, grads, strict=True))


def _ref(case: ScanCase):
    kw = scan_inputs(case)
    ts = tensor_args(kw)
    out = selective_scan_ref(**kw)
    names = list(ts)
    grads = torch.autograd.grad(scalar_loss(out), [ts[n] for n in names])
    return out, dict(zip(names, grads, strict=True))


def _assert_same(got, want, rtol=1e-9, atol=1e-10):
    got_out, got_g = got
    want_out, want_g = want
    got_out = got_out if isinstance(got_out, tuple) else (got_out,)
    want_out = want_out if isinstance(want_out, tuple) else (want_out,)
    assert len(got_out) == len(want_out)
    for name, a, b in zip(("y", "h_last"), got_out, want_out, strict=False):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
    assert got_g.keys() == want_g.keys()
    for name in want_g:
        torch.testing.assert_close(
            got_g[name], want_g[name], rtol=rtol, atol=atol, msg=lambda m, n=name: f"d{n}: {m}"
        )


@pytest.mark.parametrize("backend", ["fused", "pscan"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_reference(case: ScanCase, backend: str):
    _assert_same(_run(case, backend), _ref(case))


def test_auto_is_fused_on_cpu():
    case = CASES[3]
    _assert_same(_run(case, "auto"), _run(case, "fused"), rtol=0, atol=0)


def test_mixed_grouping_of_B_and_C():
    """B shared (B, N, L) and C grouped (B, G, N, L) at once."""
    case = ScanCase("mixed", 2, 4, 3, 21, groups=2)
    kw = scan_inputs(case)
    kw["B"] = kw["B"][:, 0].detach().requires_grad_(True)
    outs = {be: selective_scan(**kw, backend=be) for be in ("reference", "fused", "pscan")}
    gB_ref = torch.autograd.grad(scalar_loss(outs["reference"]), kw["B"])[0]
    for be in ("fused", "pscan"):
        torch.testing.assert_close(outs[be], outs["reference"], rtol=1e-10, atol=1e-12)
        gB = torch.autograd.grad(scalar_loss(outs[be]), kw["B"])[0]
        torch.testing.assert_close(gB, gB_ref, rtol=1e-9, atol=1e-10)


def test_float32_fused_close_to_float64_reference():
    """float32 uses the polynomial exp; it must stay at float32 accuracy on a longer sequence."""
    case = ScanCase("f32", 2, 8, 16, 300, **ALL)
    kw64 = scan_inputs(case)
    kw32 = {k: (v.detach().float().requires_grad_(True) if isinstance(v, torch.Tensor) else v)
            for k, v in kw64.items()}  # fmt: skip
    y64, h64 = selective_scan_ref(**kw64)
    y32, h32 = selective_scan(**kw32, backend="fused")
    assert y32.dtype == torch.float32
    scale = y64.abs().max()
    assert (y32.double() - y64).abs().max() / scale < 2e-5
    g64 = torch.autograd.grad(scalar_loss((y64, h64)), kw64["A"])[0]
    g32 = torch.autograd.grad(scalar_loss((y32, h32)), kw32["A"])[0]
    assert (g32.double() - g64).abs().max() / g64.abs().max() < 1e-4


def test_zero_decay_and_zero_step_edge_values():
    """Δ = 0 (decay exactly 1, no input) and A very negative (decay underflows to exactly 0)."""
    case = ScanCase("edge", 2, 3, 4, 40, with_h0=True, last_state=True)
    for dtype in (torch.float64, torch.float32):
        kw = scan_inputs(case, dtype=dtype)
        with torch.no_grad():
            kw["delta"][:, :, ::3] = 0.0
            kw["A"][0] = -1e4
        want = selective_scan_ref(**kw)
        got = selective_scan(**kw, backend="fused")
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
            assert torch.isfinite(a).all()


def test_empty_sequence():
    case = ScanCase("L0", 2, 3, 4, 0, with_h0=True, last_state=True)
    kw = scan_inputs(case)
    y, h = selective_scan(**kw, backend="fused")
    assert y.shape == (2, 3, 0)
    torch.testing.assert_close(h, kw["h0"])


def test_threads_do_not_change_results():
    case = ScanCase("threads", 3, 4, 3, 70, **ALL)
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        results.append(_run(case, "fused"))
    _assert_same(results[0], results[1], rtol=1e-12, atol=1e-13)


def test_gradcheck_fused_core():
    """torch.autograd.gradcheck (finite differences) on the bare fused Function, float64."""
    g = torch.Generator().manual_seed(3)
    Bs, Dc, N, L, G = 2, 2, 2, 5, 1

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)

    u, Bt, Ct, h0 = r(Bs, Dc, L), r(Bs, G, L, N), r(Bs, G, L, N), r(Bs, Dc, N)
    delta = (torch.rand(Bs, Dc, L, generator=g, dtype=torch.float64) + 0.1).requires_grad_(True)
    A = (-torch.rand(Dc, N, generator=g, dtype=torch.float64) - 0.1).requires_grad_(True)

    def f(u, delta, A, Bt, Ct, h0):
        return fused_scan_core(u, delta, A, Bt, Ct, h0, checkpoint_every=2)

    assert torch.autograd.gradcheck(f, (u, delta, A, Bt, Ct, h0))


def test_gradcheck_full_interface():
    case = ScanCase("gc", 1, 2, 2, 4, groups=2, **ALL)
    kw = scan_inputs(case, seed=5)
    names = list(tensor_args(kw))

    def f(*ts):
        return selective_scan(**{**kw, **dict(zip(names, ts, strict=True))}, backend="fused")

    assert torch.autograd.gradcheck(f, tuple(kw[n] for n in names))


def test_double_backward_raises_clearly():
    kw = scan_inputs(ScanCase("dd", 1, 2, 2, 5))
    y = selective_scan(**kw, backend="fused")
    (gu,) = torch.autograd.grad(y.sum(), kw["u"], create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        gu.sum().backward()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(backend="cuda-kernel"), "unknown selective-scan backend"),
        (dict(A=torch.zeros(5, 2, dtype=torch.float64)), "A has shape"),
        (dict(B=torch.zeros(2, 2, 4, 9, dtype=torch.float64)), "B has shape"),
        (dict(h0=torch.zeros(2, 3, dtype=torch.float64)), "h0 has shape"),
        (dict(D=torch.zeros(4, dtype=torch.float64)), "D has shape"),
        (dict(checkpoint_every=0), "checkpoint_every"),
    ],
    ids=["unknown-backend", "A-shape", "B-groups-not-dividing-D", "h0-shape", "D-shape", "K0"],
)
def test_bad_input_raises_value_error(change, match):
    kw = scan_inputs(ScanCase("bad", 2, 3, 4, 9))
    with pytest.raises(ValueError, match=match):
        selective_scan(**{**kw, **change})


def test_fused_rejects_half_precision_with_advice():
    kw = scan_inputs(ScanCase("half", 1, 2, 2, 4), dtype=torch.float32)
    kw = {k: (v.detach().bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    with pytest.raises(OpsInputError, match="float32 or float64"):
        selective_scan(**kw, backend="fused")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["fused", "pscan"])
def test_long_sequence_many_checkpoint_blocks(backend):
    """L = 1000 (16 checkpoint blocks, ragged last one), wider channels, every option."""
    case = ScanCase("long", 2, 40, 8, 1000, groups=4, checkpoint_every=64, **ALL)
    _assert_same(_run(case, backend), _ref(case), rtol=1e-8, atol=1e-9)


@pytest.mark.slow
def test_long_sequence_float32_fused_matches_pscan_gradients():
    """float32 at the benchmark's width: fused (polynomial exp) vs pscan (torch exp)."""
    case = ScanCase("f32-long", 2, 64, 16, 1024, with_D=True, softplus=True, last_state=True)
    kw = {
        k: (v.detach().float().requires_grad_(True) if isinstance(v, torch.Tensor) else v)
        for k, v in scan_inputs(case).items()
    }
    ts = tensor_args(kw)
    outs = {be: selective_scan(**kw, backend=be) for be in ("fused", "pscan")}
    grads = {be: torch.autograd.grad(scalar_loss(outs[be]), list(ts.values())) for be in outs}
    for a, b in zip(outs["fused"], outs["pscan"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for name, a, b in zip(ts, grads["fused"], grads["pscan"], strict=True):
        scale = b.abs().max()
        assert (a - b).abs().max() <= 1e-4 * scale, name
