"""The attention lens: closed-form gate matrix, the implied L×L matrices, and the identity
between the recurrent scan and gated attention (A = -1, Δ = softplus(z), zero-order hold:
y_t = Σ_s G_{s,t} (c_t · b_s) x_s; derived in docs/ops.md, "Attention lens")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ops_cases import ScanCase, scan_inputs

from ssmlab.ops.attention_lens import gate_matrix, implied_attention, ssd_implied_attention
from ssmlab.ops.selective_scan import selective_scan
from ssmlab.ops.ssd import ssd_ref

f64 = torch.float64


def test_gate_matrix_equals_explicit_products():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 9, generator=g, dtype=f64) * 2
    G = gate_matrix(z)
    s = torch.sigmoid(z)
    for b in range(2):
        for t in range(9):
            for j in range(9):
                want = s[b, j] * torch.prod(1 - s[b, j + 1 : t + 1]) if j <= t else 0.0
                assert abs(G[b, t, j].item() - float(want)) < 1e-14
    assert torch.equal(G, G.tril())


def test_gate_matrix_saturated_gates_are_exact_and_differentiable():
    z = torch.tensor([60.0, -60.0, 0.0, 45.0, -45.0], dtype=f64, requires_grad=True)
    G = gate_matrix(z)
    s = torch.sigmoid(z.detach())
    # 1 - σ(60) is 8.8e-27, below float64 resolution of 1 - x; the log form keeps it
    torch.testing.assert_close(
        G[1, 0], s[0] * torch.exp(-F.softplus(z.detach()[1])), rtol=1e-14, atol=0
    )
    assert G[1, 0] > 0
    (g,) = torch.autograd.grad(G.sum(), z)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("backend", ["fused", "reference", "pscan"])
def test_scan_reproduces_gated_attention_identity(backend):
    """A = -1, Δ = softplus(z): exp(-Δ) = 1 - σ(z). mamba's Euler input weight is Δ_s, so B is
    fed as b_s σ(z_s) / Δ_s to obtain the ZOH weight σ(z_s); then y_t = Σ_s G_{s,t} (c_t·b_s) x_s."""
    g = torch.Generator().manual_seed(1)
    Bs, Dc, N, L = 2, 3, 4, 33
    x = torch.randn(Bs, Dc, L, generator=g, dtype=f64)
    z = torch.randn(Bs, Dc, L, generator=g, dtype=f64) * 2
    b = torch.randn(Bs, N, L, generator=g, dtype=f64)
    c = torch.randn(Bs, N, L, generator=g, dtype=f64)
    delta = F.softplus(z)
    B_zoh = b[:, None] * (torch.sigmoid(z) / delta)[:, :, None, :]  # (B, D, N, L): G = D groups
    C_per = c[:, None].expand(Bs, Dc, N, L)
    y_scan = selective_scan(
        x, z, -torch.ones(Dc, N, dtype=f64), B_zoh, C_per, delta_softplus=True, backend=backend
    )
    y_attn = torch.einsum(
        "bdts,bts,bds->bdt", gate_matrix(z), torch.einsum("bnt,bns->bts", c, b), x
    )
    torch.testing.assert_close(y_scan, y_attn, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "case",
    [
        ScanCase(
            "all-options-grouped",
            2,
            4,
            3,
            21,
            groups=2,
            with_D=True,
            with_z=True,
            with_bias=True,
            softplus=True,
        ),
        ScanCase("bare-L1", 1, 2, 2, 1),
        ScanCase("N1-shared", 2, 3, 1, 40),
    ],
    ids=lambda c: c.id,
)
def test_implied_attention_times_u_is_the_scan(case):
    kw = scan_inputs(case)
    y = selective_scan(**kw, backend="reference")
    M = implied_attention(
        kw["delta"], kw["A"], kw["B"], kw["C"], D=kw["D"], z=kw["z"],
        delta_bias=kw["delta_bias"], delta_softplus=kw["delta_softplus"],
    )  # fmt: skip
    assert M.shape == (case.batch, case.channels, case.length, case.length)
    torch.testing.assert_close(torch.einsum("bdts,bds->bdt", M, kw["u"]), y, rtol=1e-11, atol=1e-12)
    assert torch.equal(M, M.tril())
    # gradients through the matrix are finite and match the scan's
    gA = torch.autograd.grad(torch.einsum("bdts,bds->bdt", M, kw["u"]).pow(2).sum(), kw["A"])[0]
    gA_scan = torch.autograd.grad(selective_scan(**kw, backend="reference").pow(2).sum(), kw["A"])[
        0
    ]
    torch.testing.assert_close(gA, gA_scan, rtol=1e-9, atol=1e-10)


def test_implied_attention_stable_for_long_strong_decay():
    case = ScanCase("strong", 1, 2, 2, 200)
    kw = scan_inputs(case)
    with torch.no_grad():
        kw["A"].fill_(-50.0)
        kw["delta"].fill_(3.0)
    M = implied_attention(kw["delta"], kw["A"], kw["B"], kw["C"])
    assert torch.isfinite(M).all()
    (g,) = torch.autograd.grad(M.sum(), kw["A"])
    assert torch.isfinite(g).all()


def test_ssd_implied_attention_times_x_is_the_ssd_scan():
    g = torch.Generator().manual_seed(2)
    Bs, L, H, P, G, N = 2, 17, 4, 3, 2, 5
    x = torch.randn(Bs, L, H, P, generator=g, dtype=f64)
    dt = torch.randn(Bs, L, H, generator=g, dtype=f64)
    A = -torch.rand(H, generator=g, dtype=f64)
    B = torch.randn(Bs, L, G, N, generator=g, dtype=f64)
    C = torch.randn(Bs, L, G, N, generator=g, dtype=f64)
    D = torch.randn(H, generator=g, dtype=f64)
    M = ssd_implied_attention(dt, A, B, C, D=D, dt_softplus=True)
    y = ssd_ref(x, dt, A, B, C, D=D, dt_softplus=True)
    torch.testing.assert_close(torch.einsum("bhts,bshp->bthp", M, x), y, rtol=1e-11, atol=1e-12)
