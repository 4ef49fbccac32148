"""Mamba-2: mamba_ssm's parameter layout and init, the SSD recurrence against an explicit loop,
the implied matrix entry by entry, bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from layers_cases import randn

from ssmlab.errors import UserError
from ssmlab.layers.mamba2 import Mamba2


def test_parameter_layout_and_init():
    torch.manual_seed(0)
    m = Mamba2(d_model=8, d_state=3, headdim=4, ngroups=2, dt_min=0.01, dt_max=0.05)
    E, H, G, N = 16, 4, 2, 3
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {
        "in_proj.weight": (2 * E + 2 * G * N + H, 8),
        "conv1d.weight": (E + 2 * G * N, 1, 4),
        "conv1d.bias": (E + 2 * G * N,),
        "dt_bias": (H,),
        "A_log": (H,),
        "D": (H,),
        "norm.weight": (E,),
        "out_proj.weight": (8, E),
    }
    dt = F.softplus(m.dt_bias.detach().double())
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    A = -m.A.detach()
    assert A.min() >= 1 and A.max() <= 16
    assert torch.equal(m.D.detach(), torch.ones(H))
    for p in (m.dt_bias, m.A_log, m.D):
        assert p._no_reinit is True


def test_ssd_core_equals_explicit_recurrence():
    """h_t = exp(Δ_t A_h) h_{t-1} + Δ_t x_t B_tᵀ, y_t = h_t C_t, head h reads group h // (H/G)."""
    torch.manual_seed(1)
    m = Mamba2(d_model=4, d_state=3, headdim=2, ngroups=2).double()
    x = randn(2, 7, 4)
    xh, dt, Bm, Cm, _ = m._features(x)
    H = m.nheads
    h = torch.zeros(2, H, 2, 3, dtype=torch.float64)
    ys = []
    for t in range(7):
        for hd in range(H):
            g = hd // (H // 2)
            h[:, hd] = torch.exp(dt[:, t, hd] * m.A[hd])[:, None, None] * h[:, hd] + \
                (dt[:, t, hd, None] * xh[:, t, hd])[:, :, None] * Bm[:, t, g, None, :]
        ys.append(torch.stack([h[:, hd] @ Cm[:, t, hd // (H // 2)][..., None] for hd in range(H)],
                              1).squeeze(-1))
    want = torch.stack(ys, 1)  # (B, L, H, P)
    got = m.core(x).output.transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_matrix_entries_are_the_ssd_formula():
    """M[h, t, s] = (C_t · B_s) exp(A_h Σ_{j=s+1..t} Δ_j[h]) Δ_s[h], entry by entry."""
    torch.manual_seed(2)
    m = Mamba2(d_model=4, d_state=3, headdim=2, ngroups=2).double()
    x = randn(1, 5, 4)
    M = m.attention_matrix(x)[0]  # (H, L, L)
    _, dt, Bm, Cm, _ = m._features(x)
    H = m.nheads
    for hd in range(H):
        g = hd // (H // 2)
        for t in range(5):
            for s in range(5):
                want = torch.zeros((), dtype=torch.float64)
                if s <= t:
                    decay = torch.exp(m.A[hd] * dt[0, s + 1:t + 1, hd].sum())
                    want = (Cm[0, t, g] @ Bm[0, s, g]) * decay * dt[0, s, hd]
                torch.testing.assert_close(M[hd, t, s], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(headdim=5), "headdim"),
    (dict(headdim=2, ngroups=3), "ngroups"),
    (dict(headdim=4, A_init_range=(0.0, 1.0)), "A_init_range"),
])
def test_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        Mamba2(d_model=8, **kwargs)
