"""Mamba-ΔT: the paper's recurrence h_t = exp(Λ ⊙ (1_d ⊗ Δ(x_t))) ⊙ h_{t-1} + x_t ⊗ B_t against an
explicit loop; Δ lives along N; per-column erasure; init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from layers_cases import randn

from ssmlab.errors import UserError
from ssmlab.layers.mamba_dt import MambaDeltaT


@pytest.mark.parametrize("input_scaling", ["none", "delta"])
def test_core_equals_papers_recurrence(input_scaling):
    torch.manual_seed(0)
    m = MambaDeltaT(d_model=3, d_state=4, expand=1, input_scaling=input_scaling).double()
    x = randn(2, 6, 3)
    u, _, delta, Bm, Cm = m._features(x)
    assert delta.shape == (2, 6, 4)  # Δ(x_t) ∈ R^N
    Lam = m.Lambda
    h = torch.zeros(2, 3, 4, dtype=torch.float64)  # (B, d, N)
    ys = []
    for t in range(6):
        gate = torch.exp(Lam * torch.ones(3, 1, dtype=torch.float64) * delta[:, t, None, :])
        drive = Bm[:, t] * (delta[:, t] if input_scaling == "delta" else 1.0)  # (B, N)
        h = gate * h + u[:, t, :, None] * drive[:, None, :]  # x_t ⊗ B_t
        ys.append((h * Cm[:, t, None, :]).sum(-1))  # y_t = h_t C_t
    want = torch.stack(ys, 1)  # (B, L, d)
    got = m.core(x).output.squeeze(-1).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_large_delta_erases_only_its_column():
    """Δ_n → ∞ at step t wipes state column n (for every channel) and keeps the others."""
    torch.manual_seed(1)
    m = MambaDeltaT(d_model=2, d_state=3, expand=1).double()
    with torch.no_grad():
        m.dt_proj.weight.zero_()
        m.dt_proj.bias.copy_(torch.tensor([-30.0, -30.0, 50.0]))  # Δ ≈ (0, 0, 50) at every step
    x = randn(1, 5, 2)
    u, _, delta, Bm, _ = m._features(x)
    a = torch.exp(m.Lambda[None, :, :, None] * delta.transpose(1, 2)[:, None])  # (1, d, N, L)
    assert a[..., 2, :].max() < 1e-20  # column 2 erased at every step
    assert a[..., :2, :].min() > 1 - 1e-10  # columns 0, 1 frozen
    # so the matrix of column 2 alone is diagonal: column-2 memory holds only the current input
    M = m.attention_matrix(x)[0]  # (d, L, L)
    _, _, _, _, Cm = m._features(x)
    frozen = torch.einsum("tn,sn->ts", Cm[0, :, :2], Bm[0, :, :2]).tril()
    current = torch.diag(Cm[0, :, 2] * Bm[0, :, 2])
    for e in range(2):
        torch.testing.assert_close(M[e], frozen + current, rtol=1e-9, atol=1e-12)


def test_initialisation():
    torch.manual_seed(0)
    m = MambaDeltaT(d_model=16, d_state=5, dt_min=0.002, dt_max=0.04)
    assert m.dt_proj.out_features == 5  # one Δ per state, not per channel
    assert torch.equal(m.A_log.detach(),
                       torch.log(torch.arange(1, 6, dtype=torch.float32)).repeat(32, 1))
    dt = F.softplus(m.dt_proj.bias.detach().double())
    assert dt.min() >= 0.002 * (1 - 1e-5) and dt.max() <= 0.04 * (1 + 1e-5)
    assert m.dt_proj.bias._no_reinit is True
    assert torch.equal(m.D.detach(), torch.ones(32))


def test_bad_input_scaling_is_user_error():
    with pytest.raises(UserError, match="input_scaling"):
        MambaDeltaT(d_model=4, input_scaling="zoh")
