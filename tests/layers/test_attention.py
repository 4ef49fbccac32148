"""Attention baselines: backends agree, local attention equals the banded dense softmax (and full
softmax when w ≥ L), linear attention's recurrent and quadratic modes agree."""

from __future__ import annotations

import pytest
import torch
from layers_cases import randn

from ssmlab.errors import UserError
from ssmlab.layers.attention import LinearAttention, LocalAttention, SoftmaxAttention

D, L = 8, 10


def _twin(cls, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return cls(D, **kwargs).double()


def _copy(src, cls, **kwargs):
    dst = cls(D, **kwargs).double()
    dst.load_state_dict(src.state_dict())
    return dst


def test_softmax_sdpa_equals_reference_with_gradients():
    a = _twin(SoftmaxAttention, n_heads=2)
    b = _copy(a, SoftmaxAttention, n_heads=2, backend="reference")
    x = randn(2, L, D)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = a(x1), b(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    y1.sum().backward()
    y2.sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)


def test_softmax_rows_are_distributions():
    M = _twin(SoftmaxAttention, n_heads=2).attention_matrix(randn(2, L, D))
    torch.testing.assert_close(M.sum(-1), torch.ones(2, 2, L, dtype=torch.float64))


@pytest.mark.parametrize("backend", ["banded", "dense", "auto"])
@pytest.mark.parametrize("window", [1, 3, 7])
def test_local_paths_equal_the_reference(window, backend):
    a = _twin(LocalAttention, n_heads=2, window=window, backend=backend)
    b = _copy(a, LocalAttention, n_heads=2, window=window, backend="reference")
    x = randn(2, L, D)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = a(x1), b(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    (y1 ** 2).sum().backward()
    (y2 ** 2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    Ma, Mb = a.attention_matrix(x), b.attention_matrix(x)
    torch.testing.assert_close(Ma, Mb, rtol=1e-12, atol=1e-14)
    # band structure: nothing at lags ≥ window
    t = torch.arange(L)
    outside = (t[:, None] - t[None, :]) >= window
    assert Ma[..., outside].abs().max() == 0


def test_local_window_one_is_identity_matrix():
    m = _twin(LocalAttention, window=1)
    M = m.attention_matrix(randn(1, L, D))
    torch.testing.assert_close(M[0, 0], torch.eye(L, dtype=torch.float64))


@pytest.mark.parametrize("window", [L, L + 5])
def test_local_with_large_window_is_softmax_attention(window):
    local = _twin(LocalAttention, n_heads=2, window=window)
    full = _copy(local, SoftmaxAttention, n_heads=2)
    x = randn(2, L, D)
    torch.testing.assert_close(local(x), full(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("feature_map,normalize", [
    ("identity", False), ("elu+1", False), ("relu", False), ("elu+1", True), ("relu", True),
])
def test_linear_recurrent_equals_quadratic(feature_map, normalize):
    kw = dict(n_heads=2, feature_map=feature_map, normalize=normalize)
    a = _twin(LinearAttention, mode="recurrent", **kw)
    b = _copy(a, LinearAttention, mode="quadratic", **kw)
    x = randn(2, L, D)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = a(x1), b(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    (y1 * randn(*y1.shape, seed=3)).sum().backward()
    (y2 * randn(*y2.shape, seed=3)).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-9, atol=1e-11)


def test_linear_identity_matrix_is_masked_qk():
    m = _twin(LinearAttention)
    x = randn(1, L, D)
    q, k = m.q_proj(x), m.k_proj(x)
    torch.testing.assert_close(m.attention_matrix(x)[0, 0], (q[0] @ k[0].T).tril())


@pytest.mark.parametrize("cls,kwargs,needle", [
    (SoftmaxAttention, dict(n_heads=3), "n_heads"),
    (SoftmaxAttention, dict(backend="fused"), "backend"),
    (LocalAttention, dict(window=0), "window"),
    (LocalAttention, dict(backend="sdpa"), "backend"),
    (LinearAttention, dict(feature_map="softmax"), "feature_map"),
    (LinearAttention, dict(normalize=True), "positive feature map"),
    (LinearAttention, dict(mode="chunked"), "mode"),
])
def test_bad_arguments_are_user_errors(cls, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        cls(D, **kwargs)


def test_local_auto_takes_dense_for_short_and_banded_for_long_sequences():
    m = LocalAttention(D, window=3)
    assert [m.path(L) for L in (10, 256, 257, 4096)] == ["dense", "dense", "banded", "banded"]
    assert LocalAttention(D, window=64).path(2048) == "dense"
    assert LocalAttention(D, window=16).path(513) == "banded"
    assert LocalAttention(D, window=3, backend="banded").path(10) == "banded"
    # the long path agrees with the reference too (auto picks banded at this length)
    a = _twin(LocalAttention, window=3)
    b = _copy(a, LocalAttention, window=3, backend="reference")
    x = randn(1, 300, D)
    assert a.path(300) == "banded"
    torch.testing.assert_close(a(x), b(x), rtol=1e-12, atol=1e-12)
