"""Scalar-decay (Mamba-2 / SSD) scan: chunked algorithm == reference loop == selective_scan with a
per-head scalar A broadcast over the states (float64, outputs and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ops_cases import scalar_loss

from ssmlab.ops.selective_scan import selective_scan
from ssmlab.ops.ssd import auto_backend, ssd, ssd_chunked, ssd_ref


def _inputs(Bs, L, H, P, G, N, seed=0, with_D=True, with_h0=True):
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)

    return dict(
        x=r(Bs, L, H, P),
        dt=r(Bs, L, H),
        A=(-torch.rand(H, generator=g, dtype=torch.float64) - 0.1).requires_grad_(True),
        B=r(Bs, L, G, N),
        C=r(Bs, L, G, N),
        D=r(H) if with_D else None,
        dt_bias=r(H),
        h0=r(Bs, H, P, N) if with_h0 else None,
    )


CASES = [
    pytest.param((1, 1, 1, 1, 1, 1), 4, id="L1"),
    pytest.param((2, 37, 4, 3, 2, 5), 16, id="odd-L37-Q16-padded"),
    pytest.param((2, 37, 4, 3, 4, 2), 1, id="Q1"),
    pytest.param((1, 130, 2, 2, 1, 3), 64, id="L130-Q64-three-chunks"),
    pytest.param((2, 20, 3, 2, 3, 4), 64, id="Q-larger-than-L"),
    pytest.param((2, 64, 2, 1, 1, 1), 8, id="exact-chunks-N1-P1"),
]


@pytest.mark.parametrize(("dims", "Q"), CASES)
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("backend", ["chunked", "scan"])
def test_fast_paths_match_reference(dims, Q, with_h0, backend):
    """The chunked algorithm and the scan path (the selective scan's fused kernel, what "auto"
    runs on the CPU): outputs, last state and every input's gradient equal the reference loop's
    (float64)."""
    kw = _inputs(*dims, with_h0=with_h0)
    ts = [v for v in kw.values() if v is not None]
    yr, hr = ssd_ref(**kw, dt_softplus=True, return_last_state=True)
    yc, hc = ssd(**kw, dt_softplus=True, return_last_state=True, chunk_size=Q, backend=backend)
    torch.testing.assert_close(yc, yr, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(hc, hr, rtol=1e-10, atol=1e-11)
    gr = torch.autograd.grad(scalar_loss((yr, hr)), ts)
    gc = torch.autograd.grad(scalar_loss((yc, hc)), ts)
    for a, b in zip(gc, gr, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_ssd_equals_selective_scan_with_scalar_decay_per_head(backend):
    Bs, L, H, P, G, N = 2, 29, 4, 3, 2, 5
    kw = _inputs(Bs, L, H, P, G, N, seed=1)
    # the chunked algorithm, pinned: "auto" on the CPU is the scan path, which is this same
    # mapping onto selective_scan, so comparing it with the mapping below could not fail
    y, h = ssd(**kw, dt_softplus=True, return_last_state=True, backend="chunked")
    # channel d = h * P + p
    u = kw["x"].permute(0, 2, 3, 1).reshape(Bs, H * P, L)
    delta = (kw["dt"] + kw["dt_bias"]).repeat_interleave(P, dim=2).transpose(1, 2)  # (B, HP, L)
    A = kw["A"].repeat_interleave(P)[:, None].expand(H * P, N)
    ys, hs = selective_scan(
        u, delta, A, kw["B"].permute(0, 2, 3, 1), kw["C"].permute(0, 2, 3, 1),
        D=kw["D"].repeat_interleave(P), delta_softplus=True, return_last_state=True,
        h0=kw["h0"].reshape(Bs, H * P, N), backend=backend,
    )  # fmt: skip
    torch.testing.assert_close(ys.view(Bs, H, P, L).permute(0, 3, 1, 2), y, rtol=1e-10, atol=1e-11)
    torch.testing.assert_close(hs.view(Bs, H, P, N), h, rtol=1e-10, atol=1e-11)
    gA = torch.autograd.grad(scalar_loss(y), kw["A"])[0]
    gA_sel = torch.autograd.grad(scalar_loss(ys.view(Bs, H, P, L).permute(0, 3, 1, 2)), kw["A"])[0]
    torch.testing.assert_close(gA_sel, gA, rtol=1e-9, atol=1e-10)


def test_strong_decay_is_stable():
    """Large Δ·A over long chunks: segment sums avoid cumsum cancellation (no inf/NaN)."""
    kw = _inputs(1, 100, 2, 2, 1, 2, seed=2, with_h0=False)
    with torch.no_grad():
        kw["dt"].fill_(30.0)
        kw["A"].fill_(-5.0)
    y = ssd_chunked(**kw, chunk_size=100)
    yr = ssd_ref(**kw)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-12)
    g = torch.autograd.grad(y.sum(), kw["B"])[0]
    assert torch.isfinite(g).all()


def test_bad_input():
    kw = _inputs(1, 5, 2, 2, 1, 2)
    with pytest.raises(ValueError, match="unknown ssd backend"):
        ssd(**kw, backend="triton")
    with pytest.raises(ValueError, match="A has shape"):
        ssd(**{**kw, "A": torch.zeros(3, dtype=torch.float64)})
    with pytest.raises(ValueError, match="chunk_size"):
        ssd(**kw, chunk_size=0)


def test_softplus_matches_manual():
    kw = _inputs(1, 9, 2, 2, 1, 2)
    manual = {**kw, "dt": F.softplus(kw["dt"] + kw["dt_bias"]), "dt_bias": None}
    torch.testing.assert_close(ssd(**kw, dt_softplus=True), ssd(**manual), rtol=1e-12, atol=1e-12)


def test_auto_is_scan_on_cpu_and_vmaps():
    kw = _inputs(2, 11, 2, 3, 1, 4, seed=3, with_h0=False)
    assert auto_backend(kw["x"]) == "scan"
    torch.testing.assert_close(ssd(**kw), ssd(**kw, backend="scan"), rtol=0, atol=0)
    # vmap over a leading ensemble dim (seed ensembles): equals the per-member calls
    xs = torch.stack([kw["x"], 2 * kw["x"]])
    got = torch.func.vmap(lambda x: ssd(x, kw["dt"], kw["A"], kw["B"], kw["C"], D=kw["D"]))(xs)
    for i in range(2):
        want = ssd_ref(xs[i], kw["dt"], kw["A"], kw["B"], kw["C"], D=kw["D"])
        torch.testing.assert_close(got[i], want, rtol=1e-10, atol=1e-11)


def test_scan_single_precision_close_to_chunked():
    kw = {k: None if v is None else v.detach().float() for k, v in _inputs(3, 40, 4, 8, 2, 16,
                                                                            seed=4).items()}
    torch.testing.assert_close(ssd(**kw, backend="scan"), ssd(**kw, backend="chunked"),
                               rtol=1e-4, atol=1e-5)
