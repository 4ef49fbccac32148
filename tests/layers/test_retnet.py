"""RetNet (multi-scale retention): the fixed decays γ_h = 1 - 2^(-5-h), the recurrence against an
explicit loop, the paper's parallel form through the whole layer (GroupNorm, swish gate, W_O),
the rotation Θ against its complex definition, the implied matrix entry by entry, the chunked op
against the reference loop (scalar decay: outputs, final state, every gradient; float64 tight,
float32 loose; L = 1, odd L, L not a multiple of the chunk), against the SSD op, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from layers_cases import gated_linear_inputs, randn, weighted_loss

from ssmlab.errors import UserError
from ssmlab.layers.retnet import RetNet, retnet_gammas, retnet_log_gammas, rotate_pairs
from ssmlab.ops.gated_linear import (
    gated_linear_attention,
    gated_linear_chunked,
    gated_linear_matrix,
    gated_linear_ref,
)
from ssmlab.ops.ssd import ssd

# (batch, heads, L, K, V), chunk size
OP_CASES = [
    pytest.param((1, 1, 1, 2, 3), 4, id="L1"),
    pytest.param((2, 3, 37, 4, 5), 16, id="odd-L37-Q16-padded"),
    pytest.param((2, 2, 13, 3, 2), 1, id="Q1"),
    pytest.param((1, 2, 130, 2, 3), 64, id="L130-Q64-three-chunks"),
    pytest.param((2, 2, 20, 4, 4), 64, id="Q-larger-than-L"),
    pytest.param((2, 2, 24, 2, 1), 8, id="exact-chunks-V1"),
]


def _model(seed: int = 0, **kw) -> RetNet:
    torch.manual_seed(seed)
    return RetNet(**{"d_model": 8, "n_heads": 2, **kw}).double()


def test_gammas_are_the_papers():
    g = retnet_gammas(4)
    torch.testing.assert_close(g, torch.tensor([1 - 1 / 32, 1 - 1 / 64, 1 - 1 / 128, 1 - 1 / 256],
                                               dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(retnet_log_gammas(4), torch.log(g), rtol=1e-15, atol=0)
    m = RetNet(16, n_heads=4)
    assert m.gamma().dtype == torch.float32
    torch.testing.assert_close(m.gamma().double(), g, rtol=0, atol=1e-7)
    x = randn(2, 5, 16).float()
    assert m.decay(x).shape == (2, 4, 5) and torch.equal(m.decay(x)[1, :, 3], m.gamma())
    # fixed, not learned, not stored
    assert all("gamma" not in n for n, _ in m.named_parameters())
    assert all("gamma" not in n for n in m.state_dict())


def test_parameter_layout():
    m = RetNet(8, n_heads=2)  # value_factor 2: W_V, W_G ∈ R^{d×2d}, W_O ∈ R^{2d×d}
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes == {"q_proj.weight": (8, 8), "k_proj.weight": (8, 8), "v_proj.weight": (16, 8),
                      "g_proj.weight": (16, 8), "out_proj.weight": (8, 16),
                      "norm.weight": (16,), "norm.bias": (16,)}
    m = RetNet(8, n_heads=4, value_factor=1, output_gate=False, norm="none", bias=True)
    assert sorted(n for n, _ in m.named_parameters()) == sorted(
        f"{p}_proj.{w}" for p in ("q", "k", "v", "out") for w in ("weight", "bias"))
    assert m.scale == pytest.approx(2**-0.5)


def _complex_rotation(x: torch.Tensor, base: float) -> torch.Tensor:
    """x ⊙ Θ with Θ_n = e^{i n θ} on channel pairs as complex numbers, back to real pairs."""
    L, P = x.shape[-2:]
    theta = 1.0 / base ** torch.linspace(0, 1, P // 2, dtype=torch.float64)
    Theta = torch.exp(1j * torch.arange(L, dtype=torch.float64)[:, None] * theta)  # (L, P/2)
    xc = torch.complex(x[..., 0::2], x[..., 1::2]) * Theta
    return torch.stack([xc.real, xc.imag], dim=-1).flatten(-2)


def test_rotation_is_the_complex_theta_and_relative():
    x = randn(2, 3, 9, 6)
    torch.testing.assert_close(rotate_pairs(x, 10000.0), _complex_rotation(x, 10000.0),
                               rtol=1e-13, atol=1e-13)
    # norms are kept, and q̃_t · k̃_s depends on t - s only: shift both by 3 positions
    torch.testing.assert_close(rotate_pairs(x, 10.0).norm(dim=-1), x.norm(dim=-1))
    q, k = randn(6, seed=2), randn(6, seed=3)
    L = 12
    rq = rotate_pairs(q.expand(L, 6), 10.0)  # (L, 6): the same q at every position
    rk = rotate_pairs(k.expand(L, 6), 10.0)
    scores = rq @ rk.T  # (L, L)
    for t, s in [(5, 2), (8, 8), (2, 7)]:
        torch.testing.assert_close(scores[t + 3, s + 3], scores[t, s], rtol=1e-12, atol=1e-12)
    assert (scores[5, 2] - scores[5, 3]).abs() > 1e-3  # and it does depend on t - s


def _explicit(m: RetNet, x: torch.Tensor):
    """q̃, k̃ (complex Θ), v per head from the weights, independently of the module's code."""
    Bs, L, _ = x.shape
    H, dk = m.n_heads, m.head_k

    def heads(t):
        return t.view(Bs, L, H, -1).transpose(1, 2)

    q, k = heads(x @ m.q_proj.weight.T), heads(x @ m.k_proj.weight.T)
    if m.rotary:
        q, k = _complex_rotation(q, m.rotary_base), _complex_rotation(k, m.rotary_base)
    v = heads(x @ m.v_proj.weight.T)
    gamma = 1.0 - 2.0 ** (-5.0 - torch.arange(H, dtype=torch.float64))
    return q, k, v, gamma, dk**-0.5


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_core_equals_the_retention_recurrence(backend):
    """S_n = γ S_{n-1} + K_nᵀ V_n, o_n = Q_n S_n / √d_k, an explicit loop over n."""
    m = _model(1, backend=backend, chunk_size=4)
    x = randn(2, 11, 8)
    q, k, v, gamma, scale = _explicit(m, x)
    S = torch.zeros(2, m.n_heads, m.head_k, m.head_v, dtype=torch.float64)
    outs = []
    for n in range(11):
        S = gamma[:, None, None] * S + k[:, :, n, :, None] * v[:, :, n, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, n], S) * scale)
    want = torch.stack(outs, dim=2)
    core = m.core(x)
    torch.testing.assert_close(core.values, v, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(core.output, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [{}, dict(rotary=False, n_heads=4, value_factor=1)])
def test_forward_is_the_papers_parallel_msr(kw):
    """MSR(X) = (swish(X W_G) ⊙ GroupNorm_h((Q Kᵀ ⊙ D) V)) W_O, with torch's nn.GroupNorm."""
    m = _model(2, chunk_size=3, **kw)
    with torch.no_grad():  # non-trivial affine
        m.norm.weight.copy_(randn(m.value_dim, seed=5))
        m.norm.bias.copy_(randn(m.value_dim, seed=6))
    x = randn(2, 10, 8)
    q, k, v, gamma, scale = _explicit(m, x)
    n = torch.arange(10, dtype=torch.float64)
    D = (gamma[:, None, None] ** (n[:, None] - n[None, :])) * (n[:, None] >= n[None, :])
    heads = (q @ k.transpose(-1, -2) * scale * D) @ v  # (B, H, L, d_v)
    Y = heads.transpose(1, 2).flatten(2)  # (B, L, H·d_v)
    gn = torch.nn.GroupNorm(m.n_heads, m.value_dim, eps=m.norm.eps).double()
    gn.load_state_dict({"weight": m.norm.weight, "bias": m.norm.bias})
    Y = gn(Y.reshape(-1, m.value_dim)).view_as(Y)
    want = (F.silu(x @ m.g_proj.weight.T) * Y) @ m.out_proj.weight.T
    torch.testing.assert_close(m(x), want, rtol=1e-11, atol=1e-12)


def test_matrix_entries_are_the_retention_formula():
    """M[h, t, s] = γ_h^(t-s) (Θ_t q_t)·(Θ_s k_s) / √d_k for s ≤ t, 0 above, entry by entry."""
    m = _model(3)
    x = randn(1, 6, 8)
    M = m.attention_matrix(x)[0]  # (H, L, L)
    q, k, _, gamma, scale = _explicit(m, x)
    for h in range(m.n_heads):
        for t in range(6):
            for s in range(6):
                want = gamma[h] ** (t - s) * (q[0, h, t] @ k[0, h, s]) * scale if s <= t else 0.0
                torch.testing.assert_close(M[h, t, s], torch.as_tensor(want, dtype=M.dtype),
                                           rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("dims", "Q"), OP_CASES)
def test_chunked_op_matches_reference_float64(dims, Q):
    kw = gated_linear_inputs(*dims, per_channel=False)
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
    kw = gated_linear_inputs(*dims, per_channel=False, dtype=torch.float32, seed=4)
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
    kw = gated_linear_inputs(2, 3, 17, 4, 5, per_channel=False, with_h0=False)
    M = gated_linear_matrix(kw["q"], kw["k"], kw["log_decay"], scale=0.3)
    assert M.shape == (2, 3, 17, 17)
    assert M[..., torch.ones(17, 17, dtype=torch.bool).triu(1)].abs().max() == 0
    y = gated_linear_ref(kw["q"], kw["k"], kw["v"], kw["log_decay"], scale=0.3)
    torch.testing.assert_close(M @ kw["v"], y, rtol=1e-11, atol=1e-12)


def test_retention_is_ssd_with_unit_step_and_log_gamma():
    """RetNet's core = Mamba-2's SSD op with Δ = 1, a_h = log γ_h, B = k, C = q / √d_k, x = v."""
    m = _model(4, rotary=False)
    x = randn(2, 19, 8)
    core = m.core(x)
    q, k, _ = m._qk_decay(x)
    Bs, H, L, _ = q.shape
    y = ssd(core.values.transpose(1, 2), torch.ones(Bs, L, H, dtype=torch.float64),
            torch.log(m.gamma()), k.transpose(1, 2), (q * m.scale).transpose(1, 2),
            backend="reference")  # (B, L, H, P); G = H groups
    torch.testing.assert_close(core.output, y.transpose(1, 2), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("L,Q", [(1, 4), (7, 3), (16, 4), (17, 16), (9, 64)])
def test_mixer_chunked_equals_reference_outputs_and_gradients(L, Q):
    for dtype, tol in ((torch.float64, dict(rtol=1e-10, atol=1e-12)),
                       (torch.float32, dict(rtol=1e-4, atol=1e-5))):
        ref = _model(5, backend="reference").to(dtype)
        fast = _model(5, backend="chunked", chunk_size=Q).to(dtype)
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
    """L = 300 over 5 chunks of 64: the float32 chunked path within 1e-4 of float64."""
    m = _model(6, d_model=16, n_heads=4)
    x = randn(1, 300, 16)
    y64 = m(x)
    y32 = m.float()(x.float())
    assert torch.isfinite(y32).all()
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)


def test_norm_options():
    x = randn(2, 5, 8)
    o = randn(2, 2, 5, 8, seed=3)  # (B, H, L, d_v)
    m = _model(norm="rms")
    want = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.norm.eps)
    torch.testing.assert_close(m.norm(o), want.transpose(1, 2).flatten(2))
    m = _model(norm="none", output_gate=False)
    torch.testing.assert_close(m(x), m.core(x).output.transpose(1, 2).flatten(2) @
                               m.out_proj.weight.T)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(n_heads=3), "n_heads"),
    (dict(n_heads=8), "even"),
    (dict(n_heads=8, rotary=False, norm="batch"), "norm"),
    (dict(value_factor=0), "value_factor"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(scale=-1.0), "scale"),
    (dict(norm_eps=0.0), "norm_eps"),
])
def test_bad_arguments_are_user_errors(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        RetNet(8, **kwargs)


def test_unknown_backend_and_bad_op_shapes():
    m = RetNet(8, n_heads=2, backend="fused")
    with pytest.raises(UserError, match="unknown gated_linear backend 'fused'"):
        m(randn(1, 3, 8).float())
    kw = gated_linear_inputs(1, 2, 5, 3, 2, per_channel=False)
    with pytest.raises(ValueError, match="log_decay has shape"):
        gated_linear_attention(**{**kw, "log_decay": kw["log_decay"][..., :4]})
    with pytest.raises(ValueError, match="h0 has shape"):
        gated_linear_attention(**{**kw, "h0": kw["h0"][..., :1]})
    with pytest.raises(ValueError, match="chunk_size"):
        gated_linear_attention(**kw, chunk_size=0)
    assert math.isfinite(float(gated_linear_attention(**kw).detach().sum()))
