"""S4D: convolution (FFT) mode equals recurrent mode (outputs and gradients), the kernel equals
its defining sum, init values, Toeplitz attention matrix."""

from __future__ import annotations

import math

import pytest
import torch
from layers_cases import randn

from ssmlab.errors import UserError
from ssmlab.layers.s4d import S4D

CASES = [("real", "euler"), ("real", "zoh"), ("lin", "euler"), ("lin", "zoh")]


def _pair(init: str, discretization: str, seed: int = 0) -> tuple[S4D, S4D]:
    torch.manual_seed(seed)
    conv = S4D(6, d_state=4, init=init, discretization=discretization, mode="conv",
               dt_min=0.05, dt_max=0.5).double()
    rec = S4D(6, d_state=4, init=init, discretization=discretization, mode="recurrent").double()
    rec.load_state_dict(conv.state_dict())
    return conv, rec


@pytest.mark.parametrize("init,discretization", CASES)
def test_conv_equals_recurrent(init, discretization):
    conv, rec = _pair(init, discretization)
    x = randn(2, 23, 6)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = conv(x1), rec(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    w = randn(*y1.shape, seed=4)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    rec_params = dict(rec.named_parameters())
    for name, p in conv.named_parameters():
        torch.testing.assert_close(p.grad, rec_params[name].grad, rtol=1e-9, atol=1e-11, msg=name)


@pytest.mark.parametrize("init,discretization", CASES)
def test_kernel_equals_defining_sum(init, discretization):
    """K_l = Re Σ_n c_n C_n exp(Δ A_n l) B̄_n, computed here mode by mode in complex128."""
    torch.manual_seed(1)
    m = S4D(3, d_state=4, init=init, discretization=discretization).double()
    L = 7
    K = m.kernel(L)
    dt = torch.exp(m.log_dt.detach()).to(torch.complex128)
    if init == "real":
        A = -torch.exp(m.A_log.detach()).to(torch.complex128)
        Bc, Cc, c = m.B.detach().to(torch.complex128), m.C.detach().to(torch.complex128), 1.0
    else:
        A = torch.complex(-torch.exp(m.A_log.detach()), m.A_imag.detach())
        Bc = torch.view_as_complex(m.B.detach().contiguous())
        Cc = torch.view_as_complex(m.C.detach().contiguous())
        c = 2.0
    want = torch.zeros(3, L, dtype=torch.float64)
    for d in range(3):
        for n in range(A.shape[1]):
            dA = dt[d] * A[d, n]
            B_bar = dt[d] * Bc[d, n] if discretization == "euler" else (torch.exp(dA) - 1) / A[d, n] * Bc[d, n]
            for l in range(L):
                want[d, l] += (c * Cc[d, n] * torch.exp(dA * l) * B_bar).real
    torch.testing.assert_close(K.detach(), want, rtol=1e-12, atol=1e-14)


def test_attention_matrix_is_toeplitz_of_kernel_and_input_independent():
    torch.manual_seed(2)
    m = S4D(4, d_state=4).double()
    L = 6
    M1, M2 = m.attention_matrix(randn(1, L, 4)), m.attention_matrix(randn(1, L, 4, seed=3))
    torch.testing.assert_close(M1, M2, rtol=0, atol=0)
    K = m.kernel(L)
    for t in range(L):
        for s in range(L):
            want = K[:, t - s] if s <= t else torch.zeros(4, dtype=torch.float64)
            torch.testing.assert_close(M1[0, :, t, s], want, rtol=0, atol=0)


def test_initialisation():
    torch.manual_seed(0)
    real = S4D(5, d_state=3, dt_min=0.01, dt_max=0.2)
    assert torch.equal(real._A().detach(), -torch.arange(1, 4, dtype=torch.float32).repeat(5, 1))
    dt = torch.exp(real.log_dt.detach())
    assert dt.min() >= 0.01 * (1 - 1e-6) and dt.max() <= 0.2 * (1 + 1e-6)
    assert torch.equal(real.D.detach(), torch.ones(5))
    assert torch.equal(real.B.detach(), torch.ones(5, 3))
    lin = S4D(5, d_state=6, init="lin")
    A = lin._A().detach()
    assert A.shape == (5, 3)
    torch.testing.assert_close(A.real, torch.full((5, 3), -0.5))
    torch.testing.assert_close(A.imag, math.pi * torch.arange(3.0).repeat(5, 1))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(init="hippo"), "init"),
    (dict(init="lin", d_state=5), "even"),
    (dict(discretization="bilinear"), "discretization"),
    (dict(mode="fft"), "mode"),
])
def test_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        S4D(4, **kwargs)
