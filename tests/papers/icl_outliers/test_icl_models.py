"""The one-layer ICL Mamba (Eq. 3): recurrent == closed form, linear Transformer == gate ≡ 1, init,
gates against the explicit product formula; the stacks' shapes."""

from __future__ import annotations

import math

import pytest
import torch

from ssmlab.errors import UserError
from ssmlab.papers.icl_outliers.data import ICLDataConfig, make_patterns, sample_test
from ssmlab.papers.icl_outliers.model import (
    ICLLinearTransformer,
    ICLMamba,
    ICLSoftmaxAttention,
    gate_matrix,
    icl_stack,
    last_column_gates,
)

D64 = torch.float64


def prompts(B: int = 6, l: int = 12, seed: int = 0) -> torch.Tensor:
    cfg = ICLDataConfig()
    pat = make_patterns(cfg, dtype=D64)
    return sample_test(pat, cfg, B, l, 0.4, "random", "random", torch.Generator().manual_seed(seed)).P


def perturbed(model: ICLMamba, seed: int = 1, scale: float = 0.3) -> ICLMamba:
    """Move the weights off the (sparse) init so that every entry matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def explicit_output(model: ICLMamba, P: torch.Tensor) -> torch.Tensor:
    """Eq. 3 with the gate's product written out term by term (no cumulative sums)."""
    L = P.shape[1]
    W = model.W_B.T @ model.W_C  # (d+1, d+1)
    out = []
    for b in range(P.shape[0]):
        total = P.new_zeros(())
        for i in range(L):
            if model.gated:
                g = torch.sigmoid(P[b, i] @ model.w)
                for j in range(i + 1, L):
                    g = g * (1 - torch.sigmoid(P[b, j] @ model.w))
            else:
                g = P.new_ones(())
            total = total + g * P[b, i, -1] * (P[b, i] @ W @ P[b, -1])
        out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("gated", [True, False], ids=["mamba", "linear"])
def test_recurrent_equals_closed_form_outputs_and_gradients(gated, backend):
    P = prompts()
    closed = perturbed(ICLMamba(30, 13, gated=gated, seed=3, dtype=D64))
    rec = ICLMamba(30, 13, gated=gated, form="recurrent", seed=3, dtype=D64, backend=backend)
    rec.load_state_dict(closed.state_dict())
    f1, f2 = closed(P), rec(P)
    torch.testing.assert_close(f1, f2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f1, explicit_output(closed, P), rtol=1e-12, atol=1e-12)
    g1 = torch.autograd.grad(f1.sum(), list(closed.parameters()))
    g2 = torch.autograd.grad(f2.sum(), list(rec.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_linear_transformer_is_mamba_with_unit_gates():
    P = prompts(seed=2)
    lt = perturbed(ICLLinearTransformer(30, 13, dtype=D64))
    assert not hasattr(lt, "w") and torch.all(lt.gates(P) == 1)
    F = lt(P)
    expected = (P[..., -1] * lt.scores(P)).sum(-1)  # Σ_i y_i p_i^T W_B^T W_C p_q
    torch.testing.assert_close(F, expected)
    mamba = ICLMamba(30, 13, dtype=D64)
    mamba.W_B.data.copy_(lt.W_B.data)
    mamba.W_C.data.copy_(lt.W_C.data)
    mamba.gates = lambda P: P.new_ones(P.shape[:2])  # type: ignore[method-assign]
    torch.testing.assert_close(mamba(P), F)


def test_gates_closed_form_against_product_and_gate_matrix():
    z = torch.randn(5, 9, dtype=D64, generator=torch.Generator().manual_seed(4)) * 3
    G_last = last_column_gates(z)
    s = torch.sigmoid(z)
    for i in range(9):
        prod = s[:, i] * torch.prod(1 - s[:, i + 1 :], dim=-1)
        torch.testing.assert_close(G_last[:, i], prod, rtol=1e-12, atol=1e-15)
    G = gate_matrix(z)  # (5, 9, 9) rows t, columns i
    torch.testing.assert_close(G[:, -1], G_last, rtol=1e-12, atol=1e-15)
    assert torch.all(G.triu(1) == 0)
    # a partition of unity up to the never-written remainder: Σ_i G_{i,t} = 1 - Π_{j≤t}(1-σ_j)
    torch.testing.assert_close(G.sum(-1), 1 - torch.cumprod(1 - s, -1), rtol=1e-12, atol=1e-12)


def test_gates_saturate_without_nan():
    z = torch.tensor([[-80.0, 80.0, -80.0, 0.0]], dtype=D64)
    G = last_column_gates(z)
    # G_2 = σ(80)(1-σ(-80))(1-σ(0)) = 1/2, G_4 = σ(0) = 1/2, G_1 ≈ e^-160 / 2, G_3 ≈ e^-80 / 2
    assert torch.isfinite(G).all()
    torch.testing.assert_close(G[0, [1, 3]], torch.tensor([0.5, 0.5], dtype=D64))
    torch.testing.assert_close(G[0, 0].log(), torch.tensor(-160 - math.log(2), dtype=D64))
    torch.testing.assert_close(G[0, 2].log(), torch.tensor(-80 - math.log(2), dtype=D64))


def test_init_is_the_papers():
    m = ICLMamba(30, 21, delta=0.2, seed=0, dtype=D64)
    expected = torch.zeros(21, 31, dtype=D64)
    expected[range(21), range(21)] = 0.2
    assert torch.equal(m.W_B.data, expected) and torch.equal(m.W_C.data, expected)
    big = ICLMamba(30, 40, delta=0.1)
    assert big.W_B.data.diagonal()[:30].eq(0.1).all() and big.W_B.data.diagonal()[30:].eq(0).all()
    ws = torch.stack([ICLMamba(30, 21, seed=s, dtype=D64).w.data for s in range(200)])
    assert abs(ws.std().item() - 1 / math.sqrt(31)) < 0.01  # w ~ N(0, I/(d+1))
    assert torch.equal(ICLMamba(30, 21, seed=5).w, ICLMamba(30, 21, seed=5).w)


def test_query_label_slot_is_ignored_by_eq3():
    """The query's term vanishes only because y_q = 0; a nonzero slot would add it."""
    P = prompts(seed=5)
    m = perturbed(ICLMamba(30, 13, seed=1, dtype=D64))
    P2 = P.clone()
    P2[:, -1, -1] = 1.0
    assert not torch.allclose(m(P), m(P2))


def test_bad_prompt_shape_is_a_user_error():
    with pytest.raises(UserError):
        ICLMamba(30, 13)(torch.zeros(2, 5, 7))


def test_softmax_and_stacks_shapes():
    P = prompts(B=3, l=6).float()
    assert ICLSoftmaxAttention(30, 7)(P).shape == (3,)
    for kind, kw in (("mamba", {}), ("linear", {"mode": "quadratic"}), ("softmax", {})):
        net = icl_stack(30, kind, n_layers=2, d_model=8, seed=0, mixer_kwargs=kw)
        out = net(P)
        assert out.shape == (3,) and torch.isfinite(out).all()
        # causal: the output at the query does not change when nothing is appended; same seed, same net
        net2 = icl_stack(30, kind, n_layers=2, d_model=8, seed=0, mixer_kwargs=kw)
        torch.testing.assert_close(net2(P), out)


def test_stack_init_is_seeded_and_leaves_the_global_rng_alone():
    """icl_stack's init runs inside seeding.seeded: bit-identical to seeding the global RNG by
    hand and drawing embedding, mixers, readout in that order (the former ICLStack's order), and
    the caller's stream is untouched."""
    from torch import nn

    from ssmlab.layers.registry import build_mixer

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    net = icl_stack(30, "mamba", n_layers=2, d_model=8, seed=11)
    assert torch.equal(torch.random.get_rng_state(), before)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        embed = nn.Linear(31, 8)
        mixers = [build_mixer("mamba", 8) for _ in range(2)]
        readout = nn.Linear(8, 1)
    bb = net.backbone
    pairs = [(bb.embedding, embed), (net.head[1], readout)]
    pairs += [(layer.mixer, m) for layer, m in zip(bb.layers, mixers, strict=True)]
    for got, want in pairs:
        assert all(torch.equal(a, b) for a, b in
                   zip(got.state_dict().values(), want.state_dict().values(), strict=True))


def test_stack_is_the_generic_backbone():
    """Embedding, pre-norm residual layers, a final RMSNorm on the query and a scalar readout:
    the generic classifier's layout (its hidden() is the residual stream per layer)."""
    from ssmlab.models.classifier import SequenceClassifier

    P = prompts(B=3, l=6).float()
    net = icl_stack(30, "gla", n_layers=3, d_model=32, seed=2)
    assert isinstance(net, SequenceClassifier)
    hs = net.backbone.hidden(P)
    assert len(hs) == 4 and hs[-1].shape == (3, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(P), net.head(hs[-1][:, -1]).squeeze(-1))
    with pytest.raises(UserError):
        icl_stack(30, "mamba", n_layers=0)
