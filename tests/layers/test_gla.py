"""GLA (gated linear attention): the low-rank forget gate α_t = σ(x W_α1 W_α2 + b_α)^(1/τ), the
recurrence S_t = diag(α_t) S_{t-1} + k_tᵀ v_t against an explicit loop, the whole layer against
the paper's equations (per-head LN, Swish output gate, W_O), the implied matrix entry by entry,
the chunked op against the reference loop (per-channel decay: outputs, final state, every
gradient; float64 tight, float32 loose; L = 1, odd L, L not a multiple of the chunk), stability
under gates that would overflow a factorised chunk form, reductions to the scalar-decay path and
to linear attention, bad arguments."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from layers_cases import gated_linear_inputs, randn, weighted_loss

from ssmlab.errors import UserError
from ssmlab.layers.attention import LinearAttention
from ssmlab.layers.gla import GLA
from ssmlab.ops.gated_linear import (
    gated_linear_attention,
    gated_linear_chunked,
    gated_linear_matrix,
    gated_linear_ref,
)

# (batch, heads, L, K, V), chunk size
OP_CASES = [
    pytest.param((1, 1, 1, 2, 3), 4, id="L1"),
    pytest.param((2, 3, 37, 4, 5), 16, id="odd-L37-Q16-padded"),
    pytest.param((2, 2, 13, 3, 2), 1, id="Q1"),
    pytest.param((1, 2, 70, 2, 3), 32, id="L70-Q32-three-chunks"),
    pytest.param((2, 2, 20, 4, 4), 64, id="Q-larger-than-L"),
    pytest.param((2, 2, 24, 1, 2), 8, id="exact-chunks-K1"),
]


def _model(seed: int = 0, **kw) -> GLA:
    torch.manual_seed(seed)
    return GLA(**{"d_model": 8, "n_heads": 2, **kw}).double()


def test_parameter_layout_and_paper_defaults():
    m = GLA(16)  # d_k = d/2, d_v = d, 4 heads, rank-16 gate, τ = 16
    assert (m.n_heads, m.key_dim, m.value_dim, m.head_k, m.head_v) == (4, 8, 16, 2, 4)
    assert m.gate_logit_normalizer == 16.0 and m.scale == pytest.approx(2**-0.5)
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"q_proj.weight": (8, 16), "k_proj.weight": (8, 16), "v_proj.weight": (16, 16),
                      "gk_proj.0.weight": (16, 16), "gk_proj.1.weight": (8, 16),
                      "gk_proj.1.bias": (8,), "g_proj.weight": (16, 16), "g_proj.bias": (16,),
                      "out_proj.weight": (16, 16), "norm.weight": (16,), "norm.bias": (16,)}
    m = GLA(8, n_heads=1, gate_low_rank_dim=3, output_gate=False, norm="none")
    assert {n for n, _ in m.named_parameters()} == {
        "q_proj.weight", "k_proj.weight", "v_proj.weight", "gk_proj.0.weight",
        "gk_proj.1.weight", "gk_proj.1.bias", "out_proj.weight"}


def test_gate_is_the_papers_low_rank_sigmoid_power():
    m = _model(1)
    with torch.no_grad():
        m.gk_proj[1].bias.copy_(randn(m.key_dim, seed=9))
    x = randn(2, 7, 8)
    W1, W2, b = m.gk_proj[0].weight, m.gk_proj[1].weight, m.gk_proj[1].bias
    alpha = torch.sigmoid(x @ W1.T @ W2.T + b) ** (1 / 16)  # (B, L, d_k)
    want = alpha.view(2, 7, 2, -1).transpose(1, 2)  # (B, H, L, d_k/H)
    got = m.decay(x)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)
    assert (got > 0).all() and (got < 1).all()
    # data-dependent: different inputs, different gates
    assert (m.decay(randn(2, 7, 8, seed=4)) - got).abs().max() > 1e-3


def _explicit(m: GLA, x: torch.Tensor):
    Bs, L, _ = x.shape

    def heads(t):
        return t.view(Bs, L, m.n_heads, -1).transpose(1, 2)

    q, k, v = (heads(x @ p.weight.T) for p in (m.q_proj, m.k_proj, m.v_proj))
    W1, W2, b = m.gk_proj[0].weight, m.gk_proj[1].weight, m.gk_proj[1].bias
    alpha = heads(torch.sigmoid(x @ W1.T @ W2.T + b) ** (1 / m.gate_logit_normalizer))
    return q, k, v, alpha


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_core_equals_the_gla_recurrence(backend):
    """S_t = diag(α_t) S_{t-1} + k_tᵀ v_t, o_t = q_t S_t · scale: an explicit loop over t."""
    m = _model(2, backend=backend, chunk_size=4)
    x = randn(2, 11, 8)
    q, k, v, alpha = _explicit(m, x)
    S = torch.zeros(2, m.n_heads, m.head_k, m.head_v, dtype=torch.float64)
    outs = []
    for t in range(11):
        S = torch.diag_embed(alpha[:, :, t]) @ S + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S) * m.scale)
    core = m.core(x)
    torch.testing.assert_close(core.values, v, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(core.output, torch.stack(outs, dim=2), rtol=1e-12, atol=1e-12)


def test_forward_is_the_papers_layer():
    """y_t = (Swish(x_t W_r + b_r) ⊙ Concat_h LN(o_t^h)) W_O, LN per head with its own affine."""
    m = _model(3, chunk_size=3)
    with torch.no_grad():
        m.norm.weight.copy_(randn(m.value_dim, seed=5))
        m.norm.bias.copy_(randn(m.value_dim, seed=6))
    x = randn(2, 10, 8)
    o = m.core(x).output  # (B, H, L, d_v/H), checked against the recurrence above
    P = m.head_v
    normed = [F.layer_norm(o[:, h], (P,), m.norm.weight[h * P:(h + 1) * P],
                           m.norm.bias[h * P:(h + 1) * P], eps=m.norm.eps)
              for h in range(m.n_heads)]
    o_prime = torch.cat(normed, dim=-1)  # (B, L, d_v)
    r = F.silu(x @ m.g_proj.weight.T + m.g_proj.bias)
    torch.testing.assert_close(m(x), (r * o_prime) @ m.out_proj.weight.T, rtol=1e-12,
                               atol=1e-12)


def test_matrix_entries_are_the_gated_formula():
    """M[h, t, s] = scale Σ_k q_t[k] k_s[k] Π_{j=s+1..t} α_j[k] for s ≤ t, 0 above."""
    m = _model(4)
    x = randn(1, 6, 8)
    M = m.attention_matrix(x)[0]  # (H, L, L)
    q, k, _, alpha = _explicit(m, x)
    for h in range(m.n_heads):
        for t in range(6):
            for s in range(6):
                want = torch.zeros((), dtype=torch.float64)
                if s <= t:
                    prod = alpha[0, h, s + 1:t + 1].prod(dim=0)  # (d_k/H,)
                    want = (q[0, h, t] * k[0, h, s] * prod).sum() * m.scale
                torch.testing.assert_close(M[h, t, s], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("dims", "Q"), OP_CASES)
def test_chunked_op_matches_reference_float64(dims, Q):
    kw = gated_linear_inputs(*dims, per_channel=True)
    ts = list(kw.values())
    yr, hr = gated_linear_ref(**kw, scale=0.7, return_last_state=True)
    yc, hc = gated_linear_chunked(**kw, scale=0.7, return_last_state=True, chunk_size=Q)
    torch.testing.assert_close(yc, yr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hc, hr, rtol=1e-10, atol=1e-12)
    gr = torch.autograd.grad(weighted_loss(yr, hr), ts)
    gc = torch.autograd.grad(weighted_loss(yc, hc), ts)
    for name, a, b in zip(kw, gc, gr, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize(("dims", "Q"), OP_CASES[1:4])
def test_chunked_op_matches_reference_float32(dims, Q):
    kw = gated_linear_inputs(*dims, per_channel=True, dtype=torch.float32, seed=4)
    ts = list(kw.values())
    yr, hr = gated_linear_ref(**kw, scale=0.7, return_last_state=True)
    yc, hc = gated_linear_chunked(**kw, scale=0.7, return_last_state=True, chunk_size=Q)
    torch.testing.assert_close(yc, yr, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(hc, hr, rtol=1e-4, atol=1e-4)
    gr = torch.autograd.grad(weighted_loss(yr, hr), ts)
    gc = torch.autograd.grad(weighted_loss(yc, hc), ts)
    for name, a, b in zip(kw, gc, gr, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=name)


def test_matrix_applied_to_values_is_the_recurrence():
    kw = gated_linear_inputs(2, 3, 17, 4, 5, per_channel=True, with_h0=False)
    M = gated_linear_matrix(kw["q"], kw["k"], kw["log_decay"], scale=0.3)
    assert M.shape == (2, 3, 17, 17)
    assert M[..., torch.ones(17, 17, dtype=torch.bool).triu(1)].abs().max() == 0
    y = gated_linear_ref(kw["q"], kw["k"], kw["v"], kw["log_decay"], scale=0.3)
    torch.testing.assert_close(M @ kw["v"], y, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_strong_gates_are_stable(dtype):
    """log α = -20 per step over a 64-step chunk: exp(-Λ) of a factorised form (q ⊙ e^Λ)(k ⊙ e^-Λ)ᵀ
    would be inf; the segment-sum form stays finite and equals the loop, gradients included."""
    kw = gated_linear_inputs(1, 2, 64, 3, 2, per_channel=True, dtype=dtype, seed=5,
                             with_h0=False)
    with torch.no_grad():
        kw["log_decay"].uniform_(-25.0, -15.0)
    assert torch.isinf(torch.exp(-kw["log_decay"].detach().cumsum(2))).any()
    ts = [t for t in kw.values() if t is not None]
    yc = gated_linear_chunked(**kw, chunk_size=64)
    yr = gated_linear_ref(**kw)
    assert torch.isfinite(yc).all()
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(yc, yr, **tol)
    gc = torch.autograd.grad(weighted_loss(yc), ts)
    gr = torch.autograd.grad(weighted_loss(yr), ts)
    for a, b in zip(gc, gr, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **{k: 100 * v for k, v in tol.items()})


def test_equal_channels_equal_the_scalar_decay_path():
    """A per-channel decay that is the same on every key channel = the scalar (RetNet) path."""
    kw = gated_linear_inputs(2, 2, 21, 3, 4, per_channel=False, seed=6)
    per_channel = kw["log_decay"][..., None].expand(2, 2, 21, 3)
    for Q in (4, 64):
        y_s, h_s = gated_linear_chunked(**kw, chunk_size=Q, return_last_state=True)
        y_v, h_v = gated_linear_chunked(**{**kw, "log_decay": per_channel}, chunk_size=Q,
                                        return_last_state=True)
        torch.testing.assert_close(y_v, y_s, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(h_v, h_s, rtol=1e-12, atol=1e-13)


def test_open_gates_give_linear_attention():
    """b_α → +∞ makes α_t = 1: GLA's core is then scale × causal linear attention (identity φ)."""
    m = _model(7, expand_k=1.0)
    with torch.no_grad():
        m.gk_proj[1].bias.fill_(1e4)
    lin = LinearAttention(8, n_heads=2, mode="quadratic").double()
    lin.load_state_dict({f"{p}_proj.weight": getattr(m, f"{p}_proj").weight
                         for p in ("q", "k", "v", "out")})
    x = randn(2, 9, 8)
    assert torch.equal(m.decay(x), torch.ones_like(m.decay(x)))
    torch.testing.assert_close(m.core(x).output, m.scale * lin.core(x).output, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("L,Q", [(1, 4), (7, 3), (16, 4), (17, 16), (9, 64)])
def test_mixer_chunked_equals_reference_outputs_and_gradients(L, Q):
    for dtype, tol in ((torch.float64, dict(rtol=1e-10, atol=1e-12)),
                       (torch.float32, dict(rtol=1e-4, atol=1e-5))):
        ref = _model(8, backend="reference").to(dtype)
        fast = _model(8, backend="chunked", chunk_size=Q).to(dtype)
        x = randn(2, L, 8, seed=L).to(dtype)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ref(x1), fast(x2)
        torch.testing.assert_close(y2, y1, **tol)
        weighted_loss(y1).backward()
        weighted_loss(y2).backward()
        gtol = {k: 10 * v for k, v in tol.items()}
        torch.testing.assert_close(x2.grad, x1.grad, **gtol)
        for (name, p1), (_, p2) in zip(ref.named_parameters(), fast.named_parameters(),
                                       strict=True):
            torch.testing.assert_close(p2.grad, p1.grad, **gtol, msg=name)


def test_long_sequence_float32_stays_close_to_float64():
    """L = 300 over 19 chunks of 16: the float32 chunked path within 1e-4 of float64."""
    m = _model(9, d_model=16, n_heads=4)
    x = randn(1, 300, 16)
    y64 = m(x)
    y32 = m.float()(x.float())
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(n_heads=3), "n_heads"),
    (dict(n_heads=8), "n_heads"),  # d_k = 4 not divisible by 8
    (dict(expand_k=0.3), "expand_k"),
    (dict(expand_v=0.0), "expand_v"),
    (dict(gate_low_rank_dim=0), "gate_low_rank_dim"),
    (dict(gate_logit_normalizer=0.0), "gate_logit_normalizer"),
    (dict(norm="layer"), "norm"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(scale=0.0), "scale"),
])
def test_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        GLA(8, **kwargs)


def test_unknown_backend_and_bad_op_shapes():
    m = GLA(8, n_heads=2, backend="pscan")
    with pytest.raises(UserError, match="unknown gated_linear backend 'pscan'"):
        m(randn(1, 3, 8).float())
    kw = gated_linear_inputs(1, 2, 5, 3, 2, per_channel=True)
    with pytest.raises(ValueError, match="log_decay has shape"):
        gated_linear_attention(**{**kw, "log_decay": kw["log_decay"][..., :2]})
    with pytest.raises(ValueError, match="v has shape"):
        gated_linear_attention(**{**kw, "v": kw["v"][:, :, :4]})
