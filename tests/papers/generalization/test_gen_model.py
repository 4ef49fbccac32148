"""The paper's model: scan == implied attention (outputs and gradients, float64), init, paths."""

from __future__ import annotations

import pytest
import torch

from ssmlab.ops.selective_scan.reference import selective_scan_ref
from ssmlab.papers.generalization.model import GenSSMClassifier, GenSSMConfig, tail_sums

CASES = {
    "sA0": dict(s_A=0.0),
    "sA_neg": dict(s_A=-0.1),
    "sA_pos": dict(s_A=0.1),
    "fixA_pos": dict(s_A=0.05, fix_A=True),
    "no_delta": dict(s_A=-0.2, use_delta=False),
    "multiclass": dict(s_A=0.0, num_classes=10, d=5, N=3),
}


def _model(path="attention", seed=0, **kw) -> GenSSMClassifier:
    cfg = GenSSMConfig(**({"d": 4, "N": 4, "vocab_size": 7, "path": path} | kw))
    return GenSSMClassifier(cfg, torch.Generator().manual_seed(seed)).double()


def _loop_scan(u, delta, A, Bt, Ct):
    """The recurrence of the paper written out directly (not ssmlab.ops): (B, L, d) -> (B, L, d)."""
    Bsz, L, d = u.shape
    h = u.new_zeros(Bsz, d, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, t, None, None] * A) * h + delta[:, t, None, None] * Bt[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Ct[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1)


@pytest.mark.parametrize("case", list(CASES))
def test_scan_equals_attention_form_outputs(case):
    m = _model(**CASES[case])
    x = torch.randint(0, 7, (3, 23), generator=torch.Generator().manual_seed(1))
    u = m.embed(x)
    y = m.ssm.forward(u)  # ssmlab.ops scan
    M = m.ssm.attention_matrix(u)  # (B, d, L, L)
    y_att = torch.einsum("bcts,bsc->btc", M, u)
    scale = y.abs().max()
    torch.testing.assert_close(y_att / scale, y / scale, atol=1e-12, rtol=0)
    # the paper's recurrence written out independently
    Bt, Ct = m.ssm.projections(u)
    y_loop = _loop_scan(u, m.ssm.step(u), m.ssm.A, Bt, Ct)
    torch.testing.assert_close(y_loop / scale, y / scale, atol=1e-12, rtol=0)
    # last row = the readout's row, by both paths
    torch.testing.assert_close(m.ssm.last_row(u), M[:, :, -1, :], atol=1e-12 * float(M.detach().abs().max()), rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_paths_agree_on_outputs_and_gradients(case):
    x = torch.randint(0, 7, (4, 17), generator=torch.Generator().manual_seed(2))
    y = (torch.rand(4, generator=torch.Generator().manual_seed(3)) > 0.5).double()
    outs, grads = {}, {}
    for path in ("attention", "scan"):
        m = _model(path=path, **CASES[case])
        out = m(x)
        loss = out.pow(2).mean() if out.dim() == 2 else torch.nn.functional.binary_cross_entropy_with_logits(out, y)
        loss.backward()
        outs[path] = out.detach()
        grads[path] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    torch.testing.assert_close(outs["attention"], outs["scan"], rtol=1e-10, atol=1e-10)
    assert grads["attention"].keys() == grads["scan"].keys()
    if not CASES[case].get("use_delta", True):  # Δ ≡ 1: p and q take no part
        assert not {"ssm.p", "ssm.q"} & grads["scan"].keys()
    for n in grads["scan"]:
        g = grads["scan"][n]
        torch.testing.assert_close(grads["attention"][n], g, rtol=1e-8, atol=1e-10 * (1 + float(g.abs().max())),
                                   msg=f"gradient of {n}")


def test_scan_backends_agree():
    m = _model(s_A=-0.05)
    u = m.embed(torch.randint(0, 7, (2, 30), generator=torch.Generator().manual_seed(4)))
    Bt, Ct = m.ssm.projections(u)
    delta = m.ssm.step(u)
    d = u.shape[-1]
    ref = selective_scan_ref(u.transpose(1, 2), delta[:, None].expand(-1, d, -1), m.ssm.A,
                             Bt.transpose(1, 2), Ct.transpose(1, 2))
    torch.testing.assert_close(m.ssm.forward(u).transpose(1, 2), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("s_A", [-0.3, 0.0, 0.1])
def test_init_spectral_abscissa(s_A):
    cfg = GenSSMConfig(d=6, N=5, s_A=s_A, vocab_size=3)
    m = GenSSMClassifier(cfg, torch.Generator().manual_seed(5))
    A = m.ssm.A.detach()
    s = torch.tensor(s_A, dtype=A.dtype)
    assert A.max() == s  # max(A) == s_A exactly
    assert torch.all(A[:, 0] == s)
    assert torch.all(A <= s) and torch.all(A >= s - 10.0)
    assert A[:, 1:].std() > 1.0  # the U[0, 1)·10 spread is there
    assert isinstance(m.ssm.A, torch.nn.Parameter)


def test_fixed_A_is_a_buffer():
    m = GenSSMClassifier(GenSSMConfig(s_A=0.1, fix_A=True, vocab_size=3))
    assert "ssm.A" not in dict(m.named_parameters())
    assert torch.all(m.ssm.A == torch.tensor(0.1))


def test_step_is_one_scalar_per_time_step():
    m = _model()
    u = m.embed(torch.randint(0, 7, (2, 9)))
    delta = m.ssm.step(u)
    assert delta.shape == (2, 9)
    expect = torch.nn.functional.softplus(m.ssm.p + u @ m.ssm.q)
    torch.testing.assert_close(delta, expect)


def test_tail_sums_exact_without_cancellation():
    delta = torch.tensor([[1e6, 1.0, 2.0, 3.0]], dtype=torch.float32)
    assert tail_sums(delta).tolist() == [[6.0, 5.0, 3.0, 0.0]]


def test_readout_shapes():
    assert _model()(torch.randint(0, 7, (5, 11))).shape == (5,)
    assert _model(num_classes=10)(torch.randint(0, 7, (5, 11))).shape == (5, 10)


def test_scan_backend_names_are_the_ops_backends():
    """GenSSMConfig.scan_backend is a Literal of ssmlab.ops' selective-scan backends."""
    from typing import get_args

    from ssmlab.ops.selective_scan import BACKENDS
    from ssmlab.papers.generalization.model import ScanBackend

    assert set(get_args(ScanBackend)) == set(BACKENDS)
