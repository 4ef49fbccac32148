"""The C selective-scan kernel (scan_kernel.c via cscan.py) and its Numba fallback, each against
the reference loop: outputs and the gradients of every input, float64 and float32, with and
without D / z / delta_bias / softplus; shapes that hit every code path of the C kernel (full and
partial channel vectors, tiles of 8 steps and ragged ones, checkpoint blocks); the build cache;
and the fallback when no C compiler is found."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from ops_cases import ScanCase, scalar_loss, scan_inputs, tensor_args
from torch.func import grad, vmap

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.selective_scan import cscan, selective_scan, selective_scan_ref

REPO = Path(__file__).resolve().parents[2]
HAVE_C = cscan.load() is not None
needs_c = pytest.mark.skipif(not HAVE_C, reason=f"C kernel unavailable: {cscan.status()}")
IMPLS = [pytest.param("fused_c", marks=needs_c), "fused_numba"]

ALL = dict(with_D=True, with_z=True, with_bias=True, softplus=True, with_h0=True, last_state=True)
CASES = [
    ScanCase("L1-batch1-all", 1, 3, 4, 1, **ALL),
    ScanCase("L1-bare", 1, 1, 1, 1),
    ScanCase("odd-L37-all", 2, 5, 3, 37, **ALL),
    ScanCase("D8-full-vector-L67", 2, 8, 4, 67, **ALL),  # float32: one full 8-channel vector
    ScanCase("D16-L130-K64", 1, 16, 16, 130, with_D=True, softplus=True, last_state=True),
    ScanCase("D20-G2-ragged", 2, 20, 5, 45, groups=2, **ALL),  # 10 per group: 8 + 2 channels
    ScanCase("D12-G4-K7", 2, 12, 3, 50, groups=4, checkpoint_every=7, **ALL),
    ScanCase("K1", 1, 9, 2, 11, checkpoint_every=1, **ALL),
    ScanCase("K-larger-than-L", 2, 8, 2, 19, checkpoint_every=100, with_h0=True, last_state=True),
    ScanCase("no-options", 2, 6, 4, 24),
    ScanCase("D-only", 2, 6, 4, 24, with_D=True),
    ScanCase("z-only", 1, 6, 4, 24, with_z=True),
    ScanCase("bias-no-softplus", 2, 6, 4, 24, with_bias=True),
    ScanCase("softplus-no-bias", 2, 6, 4, 24, softplus=True),
    ScanCase("N1-batch1", 1, 8, 1, 33, with_D=True, softplus=True),
    ScanCase("N5-remainder-states", 2, 8, 5, 40, **ALL),  # 4 + 1 state groups
]


def _grads(out, ts):
    names = list(ts)
    return dict(zip(names, torch.autograd.grad(scalar_loss(out), [ts[n] for n in names]),
                    strict=True))  # fmt: skip


def _inputs(case: ScanCase, dtype: torch.dtype) -> dict:
    """The float64 inputs of `case`, cast to dtype (so float32 and float64 runs see the same
    values up to rounding)."""
    kw = scan_inputs(case)
    return {k: (v.detach().to(dtype).requires_grad_(True) if isinstance(v, torch.Tensor) else v)
            for k, v in kw.items()}  # fmt: skip


def _run(case: ScanCase, backend: str, dtype: torch.dtype):
    kw = _inputs(case, dtype)
    ts = tensor_args(kw)
    if backend == "reference":
        out = selective_scan_ref(**kw)
    else:
        out = selective_scan(**kw, backend=backend, checkpoint_every=case.checkpoint_every)
    return out, _grads(out, ts)


def _tuple(out):
    return out if isinstance(out, tuple) else (out,)


def _close(got, want, rel: float):
    """max |got - want| <= rel * max |want| (scale-aware, for float32 vs float64)."""
    got, want = got.double(), want.double()
    scale = want.abs().max().clamp_min(1e-30)
    err = (got - want).abs().max() / scale
    assert err <= rel, f"relative error {err:.2e} > {rel:.0e}"


@pytest.mark.parametrize("backend", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float64_matches_reference(case, backend):
    out, g = _run(case, backend, torch.float64)
    want_out, want_g = _run(case, "reference", torch.float64)
    for a, b in zip(_tuple(out), _tuple(want_out), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert g.keys() == want_g.keys()
    for name in want_g:
        torch.testing.assert_close(g[name], want_g[name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("backend", IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_float32_close_to_float64_reference(case, backend):
    """float32 runs the polynomial exp / softplus; compared with the float64 reference."""
    out, g = _run(case, backend, torch.float32)
    want_out, want_g = _run(case, "reference", torch.float64)
    for a, b in zip(_tuple(out), _tuple(want_out), strict=True):
        assert a.dtype == torch.float32
        _close(a, b, 2e-5)
    for name in want_g:
        assert g[name].dtype == torch.float32, name
        _close(g[name], want_g[name], 1e-4)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_c_equals_numba(dtype):
    """The two implementations of the same loops agree to rounding."""
    case = ScanCase("cn", 2, 24, 16, 200, groups=3, **ALL)
    (o1, g1), (o2, g2) = (_run(case, be, dtype) for be in ("fused_c", "fused_numba"))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for a, b in zip(o1, o2, strict=True):
        _close(a, b, tol)
    for name in g1:
        _close(g1[name], g2[name], tol if dtype == torch.float64 else 1e-4)


@needs_c
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softplus_and_exp_edge_values(dtype):
    """Raw δ across softplus's range (very negative, around the threshold 20, large) and decays
    that underflow: the in-kernel softplus / exp against PyTorch's, through the whole op."""
    g = torch.Generator().manual_seed(4)
    L = 64
    vals = torch.tensor([-90.0, -30.0, -15.0, -5.0, -1e-3, 0.0, 1e-3, 0.5, 5.0, 19.9, 20.0, 20.1,
                         25.0, 60.0], dtype=torch.float64)  # fmt: skip
    delta = vals.repeat(L // len(vals) + 1)[:L].expand(2, 8, L).clone()
    delta = delta + 1e-3 * torch.randn(2, 8, L, generator=g, dtype=torch.float64)
    kw = dict(
        u=torch.randn(2, 8, L, generator=g, dtype=torch.float64),
        delta=delta,
        A=-torch.rand(8, 4, generator=g, dtype=torch.float64) * 0.05,
        B=torch.randn(2, 4, L, generator=g, dtype=torch.float64),
        C=torch.randn(2, 4, L, generator=g, dtype=torch.float64),
        D=torch.randn(8, generator=g, dtype=torch.float64),
        delta_bias=torch.randn(8, generator=g, dtype=torch.float64) * 0.1,
    )
    kw["A"][0, 0] = -1e4  # decays that underflow to 0
    ref_kw = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
    kw = {k: v.to(dtype).requires_grad_(True) for k, v in kw.items()}
    y = selective_scan(**kw, delta_softplus=True, backend="fused_c")
    y_ref = selective_scan_ref(**ref_kw, delta_softplus=True)
    assert torch.isfinite(y).all()
    rel = 1e-12 if dtype == torch.float64 else 2e-5
    _close(y, y_ref, rel)
    w = torch.linspace(-1, 1, y.numel(), dtype=torch.float64).view_as(y_ref)
    gs = torch.autograd.grad((y.double() * w).sum(), list(kw.values()))
    gs_ref = torch.autograd.grad((y_ref * w).sum(), list(ref_kw.values()))
    for name, a, b in zip(kw, gs, gs_ref, strict=True):
        assert torch.isfinite(a).all(), name
        _close(a, b, 1e-10 if dtype == torch.float64 else 1e-4)


@pytest.mark.parametrize("backend", IMPLS)
def test_nan_propagates(backend):
    case = ScanCase("nan", 1, 8, 4, 20, with_D=True, softplus=True)
    for dtype in (torch.float32, torch.float64):
        kw = _inputs(case, dtype)
        with torch.no_grad():
            kw["u"][0, 3, 7] = float("nan")
            kw["A"][5, 1] = float("nan")
            y = selective_scan(**kw, backend=backend)
            y_ref = selective_scan_ref(**kw)
        torch.testing.assert_close(y.isnan(), y_ref.isnan())
        assert y[0, 3, 7:].isnan().all() and y[0, 5].isnan().all()
        assert not y[0, 0].isnan().any()


@pytest.mark.parametrize("backend", IMPLS)
def test_noncontiguous_inputs_and_expanded_gradient(backend):
    """Transposed / strided inputs, and y.sum() (whose gradient is an expanded tensor)."""
    case = ScanCase("nc", 2, 8, 3, 21, with_D=True, with_bias=True, softplus=True)
    kw = scan_inputs(case)
    u_t = kw["u"].detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_(True)
    assert not u_t.is_contiguous()
    B_t = kw["B"].detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)
    kw_nc = {**kw, "u": u_t, "B": B_t}
    y = selective_scan(**kw_nc, backend=backend)
    y_ref = selective_scan_ref(**kw)
    torch.testing.assert_close(y, y_ref, rtol=1e-9, atol=1e-10)
    got = torch.autograd.grad(y.sum(), [u_t, B_t, kw["delta"], kw["A"]])
    want = torch.autograd.grad(y_ref.sum(), [kw["u"], kw["B"], kw["delta"], kw["A"]])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("backend", IMPLS)
def test_gradient_through_last_state_only(backend):
    """Loss on h_L alone: the output gradient dy is None inside the Function."""
    case = ScanCase("hl", 2, 8, 3, 30, with_D=True, with_h0=True, softplus=True, last_state=True)
    kw = scan_inputs(case)
    names = ["u", "delta", "A", "B", "h0"]
    _, h = selective_scan(**kw, backend=backend)
    _, h_ref = selective_scan_ref(**kw)
    got = torch.autograd.grad((h**2).sum(), [kw[n] for n in names])
    want = torch.autograd.grad((h_ref**2).sum(), [kw[n] for n in names])
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("backend", IMPLS)
def test_empty_sequence(backend):
    kw = scan_inputs(ScanCase("L0", 2, 8, 4, 0, with_h0=True, last_state=True, with_D=True))
    y, h = selective_scan(**kw, backend=backend)
    assert y.shape == (2, 8, 0)
    torch.testing.assert_close(h, kw["h0"])


@pytest.mark.parametrize("backend", IMPLS)
def test_vmap_grad_with_per_seed_D_and_bias(backend):
    """vmap over seeds where D and delta_bias are batched too (the kernel indexes them per
    block, like A)."""
    S = 3
    case = ScanCase("ens", 2, 8, 3, 17, with_D=True, with_bias=True, softplus=True)
    per_seed = [scan_inputs(case, seed=s) for s in range(S)]
    keys = ("A", "u", "delta", "B", "C", "D", "delta_bias")
    e = {k: torch.stack([p[k].detach() for p in per_seed]) for k in keys}

    def loss(A, u, delta, B, C, D, bias, be):
        y = selective_scan(u, delta, A, B, C, D=D, delta_bias=bias, delta_softplus=True,
                           backend=be)  # fmt: skip
        return scalar_loss(y)

    argnums = tuple(range(7))
    got = vmap(grad(loss, argnums=argnums), in_dims=(0,) * 7 + (None,))(
        *(e[k] for k in keys), backend
    )
    for s in range(S):
        want = grad(loss, argnums=argnums)(*(e[k][s] for k in keys), "reference")
        for name, a, b in zip(keys, got, want, strict=True):
            torch.testing.assert_close(a[s], b, rtol=1e-9, atol=1e-10, msg=name)


@needs_c
def test_threads_give_same_result_c():
    case = ScanCase("thr", 3, 24, 5, 90, groups=3, **ALL)
    before = torch.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            res.append(_run(case, "fused_c", torch.float64))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(res[0][0], res[1][0], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for name in res[0][1]:
        torch.testing.assert_close(res[0][1][name], res[1][1][name], rtol=1e-13, atol=1e-14)


def test_auto_and_fused_pick_the_c_kernel_when_built():
    from ssmlab.ops.selective_scan.fused import default_impl

    assert default_impl() == ("c" if HAVE_C else "numba")


# ----------------------------------------------------------------------------- build and cache
@needs_c
def test_cache_is_keyed_on_the_source_and_outside_the_repository(tmp_path, monkeypatch):
    cc = cscan.find_compiler()
    monkeypatch.setenv("SSMLAB_KERNEL_CACHE", str(tmp_path / "cache"))
    path = cscan.library_path(cc)
    assert path.parent == tmp_path / "cache" and path.name.startswith("scan_kernel-")
    edited = tmp_path / "scan_kernel.c"
    edited.write_text(cscan.SOURCE.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(cscan, "SOURCE", edited)
    assert cscan.library_path(cc) != path  # an edited source gets its own build
    monkeypatch.delenv("SSMLAB_KERNEL_CACHE")
    default = cscan.cache_dir().resolve()
    assert REPO not in default.parents  # the built library never lands in the work tree


@needs_c
def test_build_into_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSMLAB_KERNEL_CACHE", str(tmp_path))
    cscan.reset()
    try:
        assert cscan.load() is not None
        built = list(tmp_path.glob("scan_kernel-*.so"))
        assert len(built) == 1 and not list(tmp_path.glob("*.tmp.so"))
        case = ScanCase("b", 1, 8, 2, 9, **ALL)
        out, g = _run(case, "fused_c", torch.float64)
        want, want_g = _run(case, "reference", torch.float64)
        torch.testing.assert_close(out[0], want[0], rtol=1e-9, atol=1e-10)
    finally:
        monkeypatch.delenv("SSMLAB_KERNEL_CACHE")
        cscan.reset()


def test_missing_compiler_falls_back_to_numba(monkeypatch, capsys):
    """No compiler: one stderr line, "fused" runs the Numba kernel, "fused_c" says why."""
    monkeypatch.setattr(cscan, "find_compiler", lambda: None)
    monkeypatch.delenv(cscan.ENV_CHOICE, raising=False)
    cscan.reset()
    try:
        assert cscan.load() is None
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no C compiler found" in err[0] and "Numba" in err[0]
        case = ScanCase("fb", 2, 8, 3, 20, **ALL)
        out, g = _run(case, "fused", torch.float64)
        want, want_g = _run(case, "fused_numba", torch.float64)
        for a, b in zip(out, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert capsys.readouterr().err == ""  # said once
        with pytest.raises(OpsInputError, match="fused_c.*no C compiler"):
            _run(case, "fused_c", torch.float64)
        monkeypatch.setenv(cscan.ENV_CHOICE, "c")
        cscan.reset()
        with pytest.raises(cscan.KernelBuildError, match="required"):
            cscan.load()
    finally:
        monkeypatch.undo()
        cscan.reset()


def test_numba_only_by_environment(monkeypatch, capsys):
    monkeypatch.setenv(cscan.ENV_CHOICE, "numba")
    cscan.reset()
    try:
        assert cscan.load() is None
        assert capsys.readouterr().err == ""  # asked for: no message
    finally:
        monkeypatch.undo()
        cscan.reset()


def test_no_compiler_on_path_in_a_fresh_process(tmp_path):
    """End to end: a process whose PATH has no compiler and whose kernel cache is empty."""
    script = textwrap.dedent(
        """
        import torch
        from ssmlab.ops.selective_scan import selective_scan, selective_scan_ref
        g = torch.Generator().manual_seed(0)
        u, delta = torch.randn(2, 8, 30, generator=g), torch.randn(2, 8, 30, generator=g)
        A = -torch.rand(8, 4, generator=g)
        B, C = torch.randn(2, 4, 30, generator=g), torch.randn(2, 4, 30, generator=g)
        y = selective_scan(u, delta, A, B, C, delta_softplus=True)
        y_ref = selective_scan_ref(u, delta, A, B, C, delta_softplus=True)
        assert (y - y_ref).abs().max() < 1e-4, (y - y_ref).abs().max()
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CC", cscan.ENV_CHOICE)}
    env.update(PATH=str(tmp_path), SSMLAB_KERNEL_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("ssmlab:")]
    assert lines == [
        "ssmlab: no C compiler found (set CC, or install cc / gcc / clang); "
        "the selective scan uses the slower Numba kernel"
    ]
    assert not (tmp_path / "cache").exists()
