"""torch.func transforms through the fused scan (seed ensembles rely on them) and property tests
on random small shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from ops_cases import ScanCase, scalar_loss, scan_inputs, tensor_args
from torch.func import grad, vmap

from ssmlab.ops.selective_scan import selective_scan, selective_scan_ref

S = 3  # seeds in the ensemble


def _ensemble(seed=0, groups=None, L=23):
    """Per-seed inputs stacked on a leading axis (S, ...)."""
    case = ScanCase("ens", 2, 4, 3, L, groups=groups, with_h0=True)
    per_seed = [scan_inputs(case, seed=seed + s) for s in range(S)]
    return {
        k: torch.stack([p[k].detach() for p in per_seed])
        for k in ("u", "delta", "A", "B", "C", "h0")
    }


def _loss(A, u, delta, B, C, h0, D, z, backend):
    y, h = selective_scan(
        u, delta, A, B, C, D=D, z=z, delta_softplus=True, return_last_state=True, h0=h0,
        backend=backend,
    )  # fmt: skip
    return scalar_loss((y, h))


ARGS = ("A", "u", "delta", "B", "C", "h0")


@pytest.mark.parametrize("groups", [None, 2], ids=["shared-BC", "grouped-BC"])
def test_vmap_grad_matches_loop_over_seeds(groups):
    e = _ensemble(groups=groups)
    D = torch.randn(4, dtype=torch.float64)
    z = torch.randn(2, 4, 23, dtype=torch.float64)
    f = vmap(grad(_loss, argnums=tuple(range(6))), in_dims=(0, 0, 0, 0, 0, 0, None, None, None))
    got = f(*(e[k] for k in ARGS), D, z, "fused")
    for s in range(S):
        want = grad(_loss, argnums=tuple(range(6)))(*(e[k][s] for k in ARGS), D, z, "reference")
        for name, g_got, g_want in zip(ARGS, got, want, strict=True):
            torch.testing.assert_close(g_got[s], g_want, rtol=1e-9, atol=1e-10, msg=name)


def test_vmap_grad_with_shared_A_gives_per_seed_gradients():
    """A unbatched (one A for every seed): each seed still gets its own dA."""
    e = _ensemble()
    A = e["A"][0]
    f = vmap(grad(_loss, argnums=(0, 1)), in_dims=(None, 0, 0, 0, 0, 0, None, None, None))
    gA, gu = f(A, e["u"], e["delta"], e["B"], e["C"], e["h0"], None, None, "fused")
    assert gA.shape == (S, *A.shape)
    for s in range(S):
        args = (A, e["u"][s], e["delta"][s], e["B"][s], e["C"][s], e["h0"][s], None, None)
        wA, wu = grad(_loss, argnums=(0, 1))(*args, "reference")
        torch.testing.assert_close(gA[s], wA, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(gu[s], wu, rtol=1e-9, atol=1e-10)


def test_grad_of_vmap_sums_over_seeds():
    e = _ensemble()

    def total(A, backend):
        per_seed = vmap(_loss, in_dims=(None, 0, 0, 0, 0, 0, None, None, None))
        return per_seed(A, e["u"], e["delta"], e["B"], e["C"], e["h0"], None, None, backend).sum()

    A = e["A"][0]
    torch.testing.assert_close(
        grad(total)(A, "fused"), grad(total)(A, "reference"), rtol=1e-9, atol=1e-10
    )


def test_nested_vmap_outputs():
    """vmap over seeds of vmap over a second axis: the rule folds both into the kernel batch."""
    e = _ensemble()
    u2 = torch.stack([e["u"], 2 * e["u"]])  # (2, S, B, D, L)

    def run(u, A, delta, B, C, backend):
        return selective_scan(u, delta, A, B, C, backend=backend)

    f = vmap(vmap(run, in_dims=(0, 0, 0, 0, 0, None)), in_dims=(0, None, None, None, None, None))
    got = f(u2, e["A"], e["delta"], e["B"], e["C"], "fused")
    for i in range(2):
        for s in range(S):
            want = run(u2[i, s], e["A"][s], e["delta"][s], e["B"][s], e["C"][s], "reference")
            torch.testing.assert_close(got[i, s], want, rtol=1e-10, atol=1e-12)


@settings(max_examples=12, deadline=None)
@given(
    batch=st.integers(1, 3),
    groups_per=st.sampled_from([None, 1, 2]),
    per_group=st.integers(1, 3),
    states=st.integers(1, 5),
    length=st.integers(1, 80),
    K=st.sampled_from([1, 3, 16, 64]),
    flags=st.tuples(*(st.booleans() for _ in range(6))),
    seed=st.integers(0, 10_000),
)
def test_property_fused_equals_reference(
    batch, groups_per, per_group, states, length, K, flags, seed
):
    G = groups_per
    channels = per_group * (G or 1)
    D_on, z_on, bias_on, sp, h0_on, last = flags
    case = ScanCase(
        "prop", batch, channels, states, length, groups=G, with_D=D_on, with_z=z_on,
        with_bias=bias_on, softplus=sp, with_h0=h0_on, last_state=last, checkpoint_every=K,
    )  # fmt: skip
    kw = scan_inputs(case, seed=seed)
    ts = tensor_args(kw)
    out_f = selective_scan(**kw, backend="fused", checkpoint_every=K)
    out_r = selective_scan_ref(**kw)
    g_f = torch.autograd.grad(scalar_loss(out_f), list(ts.values()))
    g_r = torch.autograd.grad(scalar_loss(out_r), list(ts.values()))
    for a, b in zip(out_f if last else (out_f,), out_r if last else (out_r,), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    for name, a, b in zip(ts, g_f, g_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=name)
