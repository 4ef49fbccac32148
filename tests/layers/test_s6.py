"""S6 / MambaBlock: mamba_ssm-faithful names, shapes and initialisation; the lens formula against
an independent per-entry oracle; bad arguments are UserErrors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from layers_cases import randn

from ssmlab.errors import UserError
from ssmlab.layers.s6 import S6, MambaBlock, inverse_softplus


def test_parameter_names_and_shapes_match_mamba_ssm():
    m = MambaBlock(d_model=20, d_state=5, d_conv=3, expand=2)
    E, R, N = 40, 2, 5  # dt_rank auto = ceil(20 / 16) = 2
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        "in_proj.weight": (2 * E, 20),
        "conv1d.weight": (E, 1, 3),
        "conv1d.bias": (E,),
        "x_proj.weight": (R + 2 * N, E),
        "dt_proj.weight": (E, R),
        "dt_proj.bias": (E,),
        "A_log": (E, N),
        "D": (E,),
        "out_proj.weight": (20, E),
    }
    with_bias = MambaBlock(d_model=20, bias=True, conv_bias=False)
    names = {n for n, _ in with_bias.named_parameters()}
    assert {"in_proj.bias", "out_proj.bias"} <= names and "conv1d.bias" not in names


@pytest.mark.parametrize("cls", [S6, MambaBlock], ids=lambda c: c.__name__)
def test_initialisation(cls):
    torch.manual_seed(0)
    dt_min, dt_max, N = 0.002, 0.05, 6
    m = cls(d_model=32, d_state=N, dt_min=dt_min, dt_max=dt_max)
    E = m.d_inner
    assert m.dt_rank == 2
    # S4D-real A = -(1..N) per channel, stored as A_log
    expected = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1)
    assert torch.equal(m.A_log.detach(), expected)
    assert torch.equal(m.A, -torch.arange(1, N + 1, dtype=torch.float32).repeat(E, 1))
    assert torch.equal(m.D.detach(), torch.ones(E))
    # softplus(dt bias) log-uniform in [dt_min, dt_max]
    dt = F.softplus(m.dt_proj.bias.detach().double())
    assert dt.min() >= dt_min * (1 - 1e-5) and dt.max() <= dt_max * (1 + 1e-5)
    assert dt.max() / dt.min() > 3  # actually spread, not constant
    # dt_proj.weight uniform in ±dt_rank^-1/2
    assert m.dt_proj.weight.abs().max() <= m.dt_rank**-0.5
    # flags that protect the init from backbone re-initialisation / weight decay
    assert m.dt_proj.bias._no_reinit is True
    assert m.A_log._no_weight_decay is True and m.D._no_weight_decay is True


def test_dt_init_floor_and_constant():
    torch.manual_seed(0)
    m = S6(d_model=16, d_state=2, dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-4,
           dt_init="constant", dt_scale=2.0, dt_rank=4)
    torch.testing.assert_close(F.softplus(m.dt_proj.bias.detach().double()),
                               torch.full((16,), 1e-4, dtype=torch.float64), rtol=1e-4, atol=0)
    assert torch.equal(m.dt_proj.weight.detach(), torch.full((16, 4), 2.0 * 4**-0.5))


def test_inverse_softplus():
    y = torch.tensor([1e-4, 1e-2, 0.5, 3.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(F.softplus(inverse_softplus(y)), y, rtol=1e-12, atol=0)


def test_lens_formula_against_per_entry_oracle():
    """M[e, t, s] = Σ_n C_t[n] exp(A[e, n] Σ_{j=s+1..t} Δ_j[e]) Δ_s[e] B_s[n], entry by entry."""
    torch.manual_seed(3)
    m = S6(d_model=3, d_state=2).double()
    x = randn(1, 5, 3)
    M = m.attention_matrix(x)[0]  # (E, L, L)
    u = x.transpose(1, 2)
    dt, Bm, Cm = m._ssm_inputs(u)
    delta = F.softplus(dt + m.dt_proj.bias[:, None])[0]  # (E, L)
    A = m.A
    for e in range(3):
        for t in range(5):
            for s in range(5):
                if s > t:
                    want = 0.0
                else:
                    decay = torch.exp(A[e] * delta[e, s + 1:t + 1].sum())  # (N,)
                    want = (Cm[0, :, t] * decay * Bm[0, :, s]).sum() * delta[e, s]
                torch.testing.assert_close(M[e, t, s], torch.as_tensor(want, dtype=M.dtype),
                                           rtol=1e-12, atol=1e-14)


def test_s6_forward_is_the_selective_scan_plus_skip():
    """S6(x) = scan(x) + D x, checked against a direct recurrence with explicit Δ, B, C."""
    torch.manual_seed(4)
    m = S6(d_model=4, d_state=3).double()
    with torch.no_grad():
        m.D.fill_(0.7)
    x = randn(2, 6, 4)
    dt, Bm, Cm = m._ssm_inputs(x.transpose(1, 2))
    delta = F.softplus(dt + m.dt_proj.bias[:, None])  # (B, E, L)
    h = torch.zeros(2, 4, 3, dtype=torch.float64)
    ys = []
    for t in range(6):
        h = torch.exp(delta[:, :, t, None] * m.A) * h + \
            delta[:, :, t, None] * Bm[:, None, :, t] * x[:, t, :, None]
        ys.append((h * Cm[:, None, :, t]).sum(-1) + 0.7 * x[:, t])
    torch.testing.assert_close(m(x), torch.stack(ys, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(d_state=0), "d_state"),
    (dict(dt_rank=0), "dt_rank"),
    (dict(dt_min=0.1, dt_max=0.01), "dt_min"),
    (dict(dt_init="normal"), "dt_init"),
    (dict(expand=0), "expand"),
])
def test_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        MambaBlock(d_model=8, **kwargs)


def test_dt_rank_auto_is_ceil_d_model_over_16():
    for d in (1, 16, 17, 40):
        assert MambaBlock(d_model=d, d_state=2).dt_rank == math.ceil(d / 16)


def test_delta_accessor_layout_and_range():
    torch.manual_seed(5)
    block = MambaBlock(d_model=4, d_state=2).double()
    x = randn(2, 6, 4)
    delta = block.delta(x)
    assert delta.shape == (2, 6, 8)  # (B, L, E)
    u, _ = block._branches(x)
    dt, _, _ = block._ssm_inputs(u)
    torch.testing.assert_close(delta, F.softplus(dt + block.dt_proj.bias[:, None]).transpose(1, 2))
    assert (delta > 0).all()
    assert S6(d_model=3, d_state=2).double().delta(randn(1, 5, 3)).shape == (1, 5, 3)


def test_scores_are_the_implied_matrix_without_decay_and_delta():
    """M_{e,t,s} = C_t · (exp(Σ Δ A) ⊙ Δ_s B_s): on the diagonal the decay is 1, so
    M_{e,t,t} = Δ_t[e] (C_t · B_t); off it, |M| ≤ Δ_s Σ_n |C_t[n] B_s[n]|."""
    torch.manual_seed(6)
    block = MambaBlock(d_model=4, d_state=3).double()
    x = randn(2, 7, 4)
    S = block.scores(x)  # (B, L, L)
    assert S.shape == (2, 7, 7)
    M = block.attention_matrix(x)  # (B, E, L, L)
    delta = block.delta(x).transpose(1, 2)  # (B, E, L)
    diag = torch.diagonal(M, dim1=-2, dim2=-1)  # (B, E, L)
    torch.testing.assert_close(diag, delta * torch.diagonal(S, dim1=-2, dim2=-1)[:, None])
    u, _ = block._branches(x)
    _, Bm, Cm = block._ssm_inputs(u)  # (B, N, L)
    torch.testing.assert_close(S[:, 5, 2], (Cm[:, :, 5] * Bm[:, :, 2]).sum(1))
