"""Fused CPU selective scan: autograd and vmap wrappers around the kernels.

Two implementations of the same loops, chosen by `impl`:
    "c"      scan_kernel.c through ctypes (cscan.py: built with the system C compiler on first
             use, cached per source hash / CPU), the fast path;
    "numba"  kernels.py (Numba), the fallback where no C compiler is available.

The core op is the recurrence with the step-size transform and the skip term
    Δ_t = softplus(δ_t + bias) (or δ_t + bias),
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,     y_t = C_t · h_t + Dskip x_t
on kernel layouts; the gate z lives in PyTorch around it (selective_scan in __init__.py). The C
kernel does bias, softplus and Dskip inside its loops (no (B, D, L) temporaries, no extra
passes over memory); the Numba path does them with PyTorch ops inside the same Functions.

`FusedScanFn` takes the layouts of the kernels (k = kernel batch):
    u, delta (Bk, D, L) (delta raw: before bias / softplus);  A (D, N) shared or (Ba, D, N)
    with Bk % Ba == 0, batch b uses A[b // (Bk / Ba)];  Dskip, bias (D,) or (Bd, D) likewise, or
    None;  Bt, Ct (Bk, G, L, N) time-major;  h0 (Bk, D, N) or None (zeros); softplus a bool
    -> y (Bk, D, L), h_last (Bk, D, N), ckpt (Bk, ceil(L/K), N, D) (saved for the backward).
Only B and C are transposed (by the caller): they are D/G times smaller than u.

vmap rule (why A, Dskip and bias may carry a batch axis): under torch.func.vmap over S samples every
input is moved to a leading sample axis (unbatched ones are expanded) and the sample axis is
folded into the kernel batch, (S, Bk) -> S·Bk; A becomes (S·Ba, D, N), which the kernel indexes
by b // (Bk / Ba), so a vmapped A (seed ensembles with per-seed parameters) costs nothing extra;
the same for Dskip and bias. The backward is itself an autograd.Function with the same rule, which is
what torch.func needs for vmap(grad(f)): the grad transform calls our backward on batched
tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from ssmlab.ops._numba import kernel_threads, n_kernel_threads, to_numpy
from ssmlab.ops.selective_scan import cscan, kernels

DEFAULT_CHECKPOINT_EVERY = 64
MAX_CHANNEL_CHUNK = 64  # SIMD lanes hold channels; 64 = 4 AVX-512 / 8 AVX2 float32 vectors
C_VECTOR_BYTES = 32  # scan_kernel.c: one vector = 32 bytes = 8 float32 / 4 float64 channels
IMPLS = ("c", "numba")


def default_impl() -> str:
    """The kernel "fused" runs: "c" when the C kernel is built (or can be), else "numba"."""
    return "c" if cscan.load() is not None else "numba"


def _ptr(t: Tensor | None) -> int | None:
    """Address of a C-contiguous tensor (None -> NULL); the caller keeps the tensor alive."""
    if t is None:
        return None
    assert t.is_contiguous(), "C kernel buffers must be contiguous"
    return t.data_ptr()


def _cont(*ts: Tensor | None) -> tuple[Tensor | None, ...]:
    """Detached, contiguous versions (no copy when already contiguous); None stays None."""
    return tuple(None if t is None else t.detach().contiguous() for t in ts)


def _c_parts(Bk: int, G: int, nch: int) -> int:
    """Channel parts per group in the C backward: enough work items (>= 8 per thread, handed
    out dynamically) that a thread slowed by other load does not hold up the rest, at most one
    per channel vector. Costs one sum of dB and dC over the parts."""
    threads = n_kernel_threads()
    return max(1, min(nch, -(-8 * threads // max(1, Bk * G))))


def _d2(Dskip: Tensor | None) -> Tensor | None:
    """Dskip as (Bd, D)."""
    return None if Dskip is None else (Dskip.unsqueeze(0) if Dskip.dim() == 1 else Dskip)


def _per_batch(x: Tensor, Bk: int) -> Tensor:
    """(Bx, ...) parameter -> (Bk, ...) view, kernel batch b reading x[b // (Bk / Bx)]."""
    Bx = x.shape[0]
    return x.unsqueeze(1).expand(Bx, Bk // Bx, *x.shape[1:]).reshape(Bk, *x.shape[1:])


def _reduce_param(g_k: Tensor, like: Tensor) -> Tensor:
    """Per-kernel-batch gradient (Bk, ...) -> the shape of the parameter `like` ((...) or
    (Bx, ...)), summing the kernel batches that read the same parameter block."""
    if g_k.dim() > like.dim():  # shared parameter
        return g_k.sum(0)
    Bx = like.shape[0]
    return g_k.view(Bx, g_k.shape[0] // Bx, *g_k.shape[1:]).sum(1)


def _a3(A: Tensor) -> Tensor:
    """A as (Ba, D, N)."""
    return A.unsqueeze(0) if A.dim() == 2 else A


def _chunking(Bk: int, G: int, per_group: int) -> tuple[int, int]:
    """(CH, P): channels per kernel work item, and channel parts per group in the backward.

    Halve the chunk (down to 8) until there are >= 2 work items per thread; P splits a group
    over threads in the backward only when Bk·G alone cannot keep them busy."""
    threads = n_kernel_threads()
    ch = MAX_CHANNEL_CHUNK
    while ch > 8 and Bk * G * -(-per_group // ch) < 2 * threads:
        ch //= 2
    ch = max(1, min(ch, per_group))
    nch = -(-per_group // ch)
    parts = max(1, min(nch, -(-2 * threads // max(1, Bk * G))))
    return ch, parts


def _numba_delta(delta: Tensor, bias2: Tensor | None, softplus: bool) -> Tensor:
    """Δ for the Numba kernels: softplus(δ + bias) in PyTorch (the C kernel does it inline)."""
    v = delta if bias2 is None else delta + _per_batch(bias2, delta.shape[0])[:, :, None]
    return F.softplus(v) if softplus else v


def _forward_impl(
    u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, Dskip: Tensor | None,
    bias: Tensor | None, h0: Tensor | None, K: int, softplus: bool, impl: str,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    Bk, Dc, L = u.shape
    A3 = _a3(A)
    N = A.shape[-1]
    G = Bt.shape[1]
    nblk = -(-L // K)
    y = u.new_empty(Bk, Dc, L)  # (B, D, L)
    h_last = u.new_empty(Bk, Dc, N)  # (B, D, N)
    ckpt = u.new_empty(Bk, nblk, N, Dc)  # (B, L/K, N, D)
    D2, b2 = _d2(Dskip), _d2(bias)
    if impl == "c":
        u, delta, A3, Bt, Ct, D2, b2, h0 = _cont(u, delta, A3, Bt, Ct, D2, b2, h0)
        fn = cscan.load().ssm_scan_forward_f32 if u.dtype == torch.float32 else (
            cscan.load().ssm_scan_forward_f64)  # fmt: skip
        with kernel_threads() as threads:
            rc = fn(
                _ptr(u), _ptr(delta), _ptr(A3), _ptr(D2), _ptr(b2), _ptr(Bt), _ptr(Ct),
                _ptr(h0), Bk, Dc, L, N, G, A3.shape[0], 1 if D2 is None else D2.shape[0],
                1 if b2 is None else b2.shape[0], min(K, max(L, 1)), int(softplus),
                _ptr(y), _ptr(h_last), _ptr(ckpt), threads,
            )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"C selective scan forward failed (code {rc})")
        return y, h_last, ckpt
    CH, _ = _chunking(Bk, G, Dc // G)
    h0_ = u.new_zeros(Bk, Dc, N) if h0 is None else h0
    dt = _numba_delta(delta, b2, softplus)
    with kernel_threads():
        kernels.scan_forward(
            to_numpy(u), to_numpy(dt), to_numpy(A3), to_numpy(Bt), to_numpy(Ct),
            to_numpy(h0_), K, CH, y.numpy(), h_last.numpy(), ckpt.numpy(),
        )  # fmt: skip
    if D2 is not None:
        y += _per_batch(D2, Bk)[:, :, None] * u  # (B, D, L)
    return y, h_last, ckpt


def _backward_impl(
    dy: Tensor, dh_last: Tensor | None, u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor,
    Ct: Tensor, Dskip: Tensor | None, bias: Tensor | None, ckpt: Tensor, K: int, softplus: bool,
    impl: str,
) -> tuple[Tensor, ...]:  # fmt: skip
    """-> du, ddelta, dA, dBt, dCt, dDskip (or None), dbias (or None), dh0."""
    Bk, Dc, L = u.shape
    A3 = _a3(A)
    N = A3.shape[2]
    G = Bt.shape[1]
    D2, b2 = _d2(Dskip), _d2(bias)
    du = torch.empty_like(u)  # (B, D, L)
    ddelta = torch.empty_like(u)  # (B, D, L)
    dA_k = u.new_empty(Bk, Dc, N)  # (B, D, N)
    dh0 = u.new_empty(Bk, Dc, N)  # (B, D, N)
    dD = dbias = None
    if impl == "c":
        nch = -(-(Dc // G) // (C_VECTOR_BYTES // u.element_size()))
        P = _c_parts(Bk, G, nch)
        dB_p = u.new_empty(Bk, G, P, L, N)  # (B, G, P, L, N)
        dC_p = u.new_empty(Bk, G, P, L, N)  # (B, G, P, L, N)
        dD_k = u.new_empty(Bk, Dc)  # (B, D)
        dbias_k = u.new_empty(Bk, Dc)  # (B, D)
        dy, dh_last, u, delta, A3, D2, b2, Bt, Ct, ckpt = _cont(
            dy, dh_last, u, delta, A3, D2, b2, Bt, Ct, ckpt
        )
        fn = cscan.load().ssm_scan_backward_f32 if u.dtype == torch.float32 else (
            cscan.load().ssm_scan_backward_f64)  # fmt: skip
        with kernel_threads() as threads:
            rc = fn(
                _ptr(dy), _ptr(dh_last), _ptr(u), _ptr(delta), _ptr(A3), _ptr(D2), _ptr(b2),
                _ptr(Bt), _ptr(Ct), _ptr(ckpt), Bk, Dc, L, N, G, A3.shape[0],
                1 if D2 is None else D2.shape[0], 1 if b2 is None else b2.shape[0],
                min(K, max(L, 1)), P, int(softplus), _ptr(du), _ptr(ddelta), _ptr(dA_k),
                _ptr(dD_k), _ptr(dbias_k), _ptr(dh0), _ptr(dB_p), _ptr(dC_p), threads,
            )  # fmt: skip
        if rc != 0:
            raise MemoryError(f"C selective scan backward failed (code {rc})")
        if D2 is not None:
            dD = _reduce_param(dD_k, Dskip)
        if b2 is not None:
            dbias = _reduce_param(dbias_k, bias)
    else:
        CH, P = _chunking(Bk, G, Dc // G)
        dB_p = u.new_zeros(Bk, G, P, L, N)  # (B, G, P, L, N)
        dC_p = u.new_zeros(Bk, G, P, L, N)  # (B, G, P, L, N)
        dh_last_ = u.new_zeros(Bk, Dc, N) if dh_last is None else dh_last
        dt = _numba_delta(delta, b2, softplus)
        with kernel_threads():
            kernels.scan_backward(
                to_numpy(dy), to_numpy(dh_last_), to_numpy(u), to_numpy(dt), to_numpy(A3),
                to_numpy(Bt), to_numpy(Ct), to_numpy(ckpt), K, CH, P,
                du.numpy(), ddelta.numpy(), dA_k.numpy(), dh0.numpy(), dB_p.numpy(),
                dC_p.numpy(),
            )  # fmt: skip
        if D2 is not None:
            du += _per_batch(D2, Bk)[:, :, None] * dy  # (B, D, L)
            dD = _reduce_param((dy * u).sum(-1), Dskip)  # (D,) or (Bd, D)
        if softplus:
            v = delta if b2 is None else delta + _per_batch(b2, Bk)[:, :, None]
            ddelta = torch.ops.aten.softplus_backward(ddelta, v, 1.0, 20.0)
        if b2 is not None:
            dbias = _reduce_param(ddelta.sum(-1), bias)  # (D,) or (Bb, D)
    dBt = dB_p[:, :, 0] if P == 1 else dB_p.sum(2)  # (B, G, L, N)
    dCt = dC_p[:, :, 0] if P == 1 else dC_p.sum(2)  # (B, G, L, N)
    dA = _reduce_param(dA_k, A)  # (D, N) or (Ba, D, N)
    return du, ddelta, dA, dBt, dCt, dD, dbias, dh0


def _fold(x: Tensor, bdim: int | None, S: int) -> Tensor:
    """Move the vmapped axis to the front (expanding unbatched x) and merge it with axis 1."""
    x = x.expand(S, *x.shape) if bdim is None else x.movedim(bdim, 0)
    return x.reshape(S * x.shape[1], *x.shape[2:])


def _fold_param(x: Tensor | None, bdim: int | None, S: int, base: int) -> Tensor | None:
    """A parameter with `base` own dims ((D, N): 2, (D,): 1), optionally a leading block axis
    (Ba, ...), [+ vmapped axis] -> (S·Ba, ...), per-sample blocks, sample-major."""
    if x is None:
        return None
    x = x.expand(S, *x.shape) if bdim is None else x.movedim(bdim, 0)
    if x.dim() == base + 1:
        x = x.unsqueeze(1)  # (S, 1, ...)
    return x.reshape(-1, *x.shape[2:])


def _fold_A(A: Tensor, bdim: int | None, S: int) -> Tensor:
    """(D, N) or (Ba, D, N) [+ vmapped axis] -> (S·Ba, D, N), per-sample blocks, sample-major."""
    return _fold_param(A, bdim, S, 2)


def _unfold(x: Tensor, S: int) -> Tensor:
    return x.view(S, x.shape[0] // S, *x.shape[1:])


class FusedScanFn(Function):
    """(u, delta, A, Bt, Ct, Dskip, bias, h0, K, softplus, impl) -> (y, h_last, ckpt) on kernel
    layouts (module doc)."""

    @staticmethod
    def forward(u, delta, A, Bt, Ct, Dskip, bias, h0, K, softplus, impl):
        return _forward_impl(u, delta, A, Bt, Ct, Dskip, bias, h0, K, softplus, impl)

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, delta, A, Bt, Ct, Dskip, bias, h0, K, softplus, impl = inputs
        ckpt = output[2]
        ctx.mark_non_differentiable(ckpt)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(u, delta, A, Bt, Ct, Dskip, bias, ckpt)
        ctx.K, ctx.softplus, ctx.impl = K, softplus, impl
        ctx.has_h0 = h0 is not None

    @staticmethod
    def backward(ctx, dy, dh_last, _dckpt):
        u, delta, A, Bt, Ct, Dskip, bias, ckpt = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        du, ddelta, dA, dBt, dCt, dD, dbias, dh0 = FusedScanBwdFn.apply(
            dy, dh_last, u, delta, A, Bt, Ct, Dskip, bias, ckpt, ctx.K, ctx.softplus, ctx.impl
        )
        dh0 = dh0 if ctx.has_h0 else None
        return du, ddelta, dA, dBt, dCt, dD, dbias, dh0, None, None, None

    @staticmethod
    def vmap(info, in_dims, u, delta, A, Bt, Ct, Dskip, bias, h0, K, softplus, impl):
        S = info.batch_size
        u_d, d_d, A_d, B_d, C_d, D_d, b_d, h_d = in_dims[:8]
        args = (
            _fold(u, u_d, S),
            _fold(delta, d_d, S),
            _fold_A(A, A_d, S),
            _fold(Bt, B_d, S),
            _fold(Ct, C_d, S),
            _fold_param(Dskip, D_d, S, 1),
            _fold_param(bias, b_d, S, 1),
            None if h0 is None else _fold(h0, h_d, S),
            K,
            softplus,
            impl,
        )
        y, h_last, ckpt = FusedScanFn.apply(*args)
        return (_unfold(y, S), _unfold(h_last, S), _unfold(ckpt, S)), (0, 0, 0)


class FusedScanBwdFn(Function):
    """The reverse pass as its own Function, so that torch.func can vmap the backward."""

    @staticmethod
    def forward(dy, dh_last, u, delta, A, Bt, Ct, Dskip, bias, ckpt, K, softplus, impl):
        return _backward_impl(
            dy, dh_last, u, delta, A, Bt, Ct, Dskip, bias, ckpt, K, softplus, impl
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError(
            "double backward through the fused selective scan is not implemented; "
            "use backend='reference' or 'pscan' for higher-order derivatives"
        )

    @staticmethod
    def vmap(info, in_dims, dy, dh_last, u, delta, A, Bt, Ct, Dskip, bias, ckpt, K, softplus, impl):
        S = info.batch_size
        names = ("dy", "dh", "u", "delta", "A", "B", "C", "Dskip", "bias", "ckpt")
        dims = dict(zip(names, in_dims, strict=False))
        A_was_2d = (A.dim() - (dims["A"] is not None)) == 2
        D_was_1d = Dskip is not None and (Dskip.dim() - (dims["Dskip"] is not None)) == 1
        b_was_1d = bias is not None and (bias.dim() - (dims["bias"] is not None)) == 1
        out = FusedScanBwdFn.apply(
            _fold(dy, dims["dy"], S),
            None if dh_last is None else _fold(dh_last, dims["dh"], S),
            _fold(u, dims["u"], S),
            _fold(delta, dims["delta"], S),
            _fold_A(A, dims["A"], S),
            _fold(Bt, dims["B"], S),
            _fold(Ct, dims["C"], S),
            _fold_param(Dskip, dims["Dskip"], S, 1),
            _fold_param(bias, dims["bias"], S, 1),
            _fold(ckpt, dims["ckpt"], S),
            K,
            softplus,
            impl,
        )
        du, ddelta, dA, dBt, dCt, dD, dbias, dh0 = (
            None if t is None else _unfold(t, S) for t in out
        )
        if A_was_2d:
            dA = dA.squeeze(1)  # (S, D, N)
        if D_was_1d:
            dD = dD.squeeze(1)  # (S, D)
        if b_was_1d:
            dbias = dbias.squeeze(1)  # (S, D)
        grads = (du, ddelta, dA, dBt, dCt, dD, dbias, dh0)
        return grads, tuple(None if t is None else 0 for t in grads)


def fused_scan_core(
    u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, h0: Tensor | None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, Dskip: Tensor | None = None,
    delta_bias: Tensor | None = None, delta_softplus: bool = False, impl: str | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Bare fused recurrence (+ Δ transform, + Dskip x_t) -> (y (Bk, D, L), h_L (Bk, D, N)).

    u, delta (Bk, D, L) (delta before bias / softplus); A (D, N); Bt, Ct (Bk, G, L, N)
    time-major; h0 (Bk, D, N) or None; Dskip, delta_bias (D,) or None; impl "c" / "numba" /
    None (= default_impl())."""
    impl = default_impl() if impl is None else impl
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")

    def c(t):
        return None if t is None else t.contiguous()

    y, h_last, _ = FusedScanFn.apply(
        c(u), c(delta), c(A), c(Bt), c(Ct), c(Dskip), c(delta_bias), c(h0),
        int(checkpoint_every), bool(delta_softplus), impl,
    )  # fmt: skip
    return y, h_last
