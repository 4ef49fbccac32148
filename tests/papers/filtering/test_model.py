"""FilteringMamba: closed form == recurrence == Mamba's selective scan (float64), the gate
matrix at init, the head, which parameters train, the gate ablation."""

from __future__ import annotations

import pytest
import torch

from ssmlab.papers.filtering.model import FilteringMamba, FilteringMambaConfig
from ssmlab.papers.filtering.theory import init_gate_matrix


def _model(d=6, seed=0, **kw) -> FilteringMamba:
    m = FilteringMamba(d, FilteringMambaConfig(width=5, **kw), seed=seed, dtype=torch.float64)
    with torch.no_grad():  # a non-trivial gate so every factor of G matters
        m.w_delta.copy_(torch.randn(d, generator=torch.Generator().manual_seed(1),
                                    dtype=torch.float64))
    return m


@pytest.mark.parametrize("bc_init", ["identity", "gaussian"])
@pytest.mark.parametrize("form", ["recurrent", "scan"])
def test_closed_form_equals_recurrence(bc_init, form):
    m = _model(bc_init=bc_init, state_size=4 if bc_init == "gaussian" else None)
    X = torch.randn(3, 9, 6, dtype=torch.float64)
    torch.testing.assert_close(m.mix(X, "closed"), m.mix(X, form), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(m(X), m(X, form=form), rtol=1e-10, atol=1e-12)


def test_gradients_agree_between_forms():
    X = torch.randn(2, 7, 6, dtype=torch.float64)
    grads = []
    for form in ("closed", "recurrent"):
        m = _model(train_bc=True, bc_init="gaussian")
        m(X, form=form).sum().backward()
        grads.append([p.grad.clone() for p in (m.w_delta, m.W_O, m.W_B, m.W_C)])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_fused_forward_equals_head_of_mix():
    m = _model()
    X = torch.randn(4, 8, 6, dtype=torch.float64)
    torch.testing.assert_close(m(X), m.head(m.mix(X)), rtol=1e-12, atol=1e-12)


def test_gate_matrix_at_init_is_powers_of_half():
    m = FilteringMamba(5, FilteringMambaConfig(width=3), dtype=torch.float64)
    X = torch.randn(2, 6, 5, dtype=torch.float64)
    G = m.gate_matrix(X)
    expected = torch.as_tensor(init_gate_matrix(6)).expand(2, 6, 6)
    torch.testing.assert_close(G, expected)


def test_identity_kernel_is_token_inner_product():
    m = FilteringMamba(5, FilteringMambaConfig(width=3), dtype=torch.float64)
    X = torch.randn(2, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(m.kernel(X), X @ X.transpose(1, 2))


def test_kernel_cache_tracks_in_place_changes():
    m = FilteringMamba(5, FilteringMambaConfig(width=3), dtype=torch.float64)
    X = torch.randn(2, 4, 5, dtype=torch.float64)
    K1 = m.kernel(X).clone()
    X.mul_(2.0)
    torch.testing.assert_close(m.kernel(X), 4 * K1)
    with torch.no_grad():
        m.W_B.mul_(3.0)
    torch.testing.assert_close(m.kernel(X), 12 * K1)


def test_head_weights_and_trained_set():
    m = FilteringMamba(8, FilteringMambaConfig(width=6))
    assert torch.allclose(m.v.abs(), torch.full((6,), 6**-0.5))
    assert int((m.v > 0).sum()) == 3  # balanced by default
    assert torch.count_nonzero(m.w_delta) == 0  # w_Δ = 0 at init
    trained = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trained == {"w_delta", "W_O"}
    m2 = FilteringMamba(8, FilteringMambaConfig(width=6, train_bc=True))
    assert {n for n, p in m2.named_parameters() if p.requires_grad} == {"w_delta", "W_O", "W_B", "W_C"}


def test_gate_ablation_keeps_gates_at_half():
    m = FilteringMamba(4, FilteringMambaConfig(width=3, gate=False))
    assert not m.w_delta.requires_grad
    X = torch.randn(2, 5, 4)
    assert torch.allclose(m.gates(X), torch.full((2, 5), 0.5))


def test_same_seed_same_model_different_seed_different():
    a = FilteringMamba(8, seed=3)
    b = FilteringMamba(8, seed=3)
    c = FilteringMamba(8, seed=4)
    assert torch.equal(a.W_O, b.W_O) and not torch.equal(a.W_O, c.W_O)


def test_scan_form_survives_saturated_gates():
    m = FilteringMamba(4, FilteringMambaConfig(width=3))
    with torch.no_grad():
        m.w_delta.fill_(-200.0)  # softplus underflows to 0 in float32
    X = torch.ones(1, 5, 4)
    m(X, form="scan").sum().backward()
    assert torch.isfinite(m.w_delta.grad).all()
    torch.testing.assert_close(m(X, form="scan"), m(X), atol=1e-6, rtol=1e-5)


def test_stacks_are_the_generic_backbone_plus_the_paper_head():
    """MambaStack = SequenceBackbone (pre-norm residual blocks on the tokens, final RMSNorm) +
    PaperHead; MixerHead = one mixer without norm or residual + PaperHead."""
    from ssmlab.papers.filtering.model import MambaStack, MambaStackConfig, MixerHead

    X = torch.randn(2, 7, 16)
    st = MambaStack(16, MambaStackConfig(depth=2, d_state=4, width=6), seed=1)
    h = X
    for blk in st.backbone.layers:
        h = h + blk.mixer(blk.norm(h))
    v = st.head.v
    assert torch.equal(v, torch.tensor([1.0] * 3 + [-1.0] * 3) / 6**0.5)
    torch.testing.assert_close(st(X), (torch.relu(st.backbone.norm_f(h) @ st.head.W_O.T) @ v)
                               .mean(1))
    h1 = st.backbone.hidden(X)[1]  # Δ of block 2 reads block 1's output
    blk = st.backbone.layers[1]
    torch.testing.assert_close(st.delta(X, layer=1), blk.mixer.delta(blk.norm(h1)))
    for mixer in ("softmax", "softmax_bidir"):
        mh = MixerHead(16, mixer, width=4, seed=2)
        mix = mh.backbone.layers[0].mixer
        torch.testing.assert_close(mh(X), (torch.relu(mix(X) @ mh.head.W_O.T) @ mh.head.v)
                                   .mean(1))
    # the same seed, the same model; the global RNG untouched
    state = torch.get_rng_state()
    again = MambaStack(16, MambaStackConfig(depth=2, d_state=4, width=6), seed=1)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(a, b) for a, b in zip(st.parameters(), again.parameters(),
                                                 strict=True))
