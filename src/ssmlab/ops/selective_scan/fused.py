"""Fused CPU selective scan: autograd and vmap wrappers around the Numba kernels (kernels.py).

The core op is the bare recurrence
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,     y_t = C_t · h_t
on kernel layouts; D, z, delta_bias and softplus live in PyTorch around it (selective_scan in
__init__.py), where autograd differentiates them exactly.

`FusedScanFn` takes the layouts of the kernels (k = kernel batch):
    u, delta (Bk, D, L);  A (D, N) shared or (Ba, D, N) with Bk % Ba == 0, batch b uses
    A[b // (Bk / Ba)];  Bt, Ct (Bk, G, L, N) time-major;  h0 (Bk, D, N) or None (zeros)
    -> y (Bk, D, L), h_last (Bk, D, N), ckpt (Bk, ceil(L/K), N, D) (saved for the backward).
Only B and C are transposed (by the caller): they are D/G times smaller than u.

vmap rule (why A may carry a batch axis): under torch.func.vmap over S samples every input is
moved to a leading sample axis (unbatched ones are expanded) and the sample axis is folded into
the kernel batch, (S, Bk) -> S·Bk; A becomes (S·Ba, D, N), which the kernel indexes by
b // (Bk / Ba), so a vmapped A (seed ensembles with per-seed parameters) costs nothing extra.
The backward is itself an autograd.Function with the same rule, which is what torch.func needs
for vmap(grad(f)): the grad transform calls our backward on batched tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd import Function

from ssmlab.ops._numba import kernel_threads, n_kernel_threads, to_numpy
from ssmlab.ops.selective_scan import kernels

DEFAULT_CHECKPOINT_EVERY = 64
MAX_CHANNEL_CHUNK = 64  # SIMD lanes hold channels; 64 = 4 AVX-512 / 8 AVX2 float32 vectors


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


def _forward_impl(
    u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, h0: Tensor | None, K: int
) -> tuple[Tensor, Tensor, Tensor]:
    Bk, Dc, L = u.shape
    N = A.shape[-1]
    G = Bt.shape[1]
    CH, _ = _chunking(Bk, G, Dc // G)
    nblk = -(-L // K)
    y = u.new_empty(Bk, Dc, L)  # (B, D, L)
    h_last = u.new_empty(Bk, Dc, N)  # (B, D, N)
    ckpt = u.new_empty(Bk, nblk, N, Dc)  # (B, L/K, N, D)
    h0_ = u.new_zeros(Bk, Dc, N) if h0 is None else h0
    with kernel_threads():
        kernels.scan_forward(
            to_numpy(u), to_numpy(delta), to_numpy(_a3(A)), to_numpy(Bt), to_numpy(Ct),
            to_numpy(h0_), K, CH, y.numpy(), h_last.numpy(), ckpt.numpy(),
        )  # fmt: skip
    return y, h_last, ckpt


def _backward_impl(
    dy: Tensor, dh_last: Tensor, u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor,
    ckpt: Tensor, K: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    Bk, Dc, L = u.shape
    A3 = _a3(A)
    Ba, _, N = A3.shape
    G = Bt.shape[1]
    CH, P = _chunking(Bk, G, Dc // G)
    du = torch.empty_like(u)  # (B, D, L)
    ddelta = torch.empty_like(u)  # (B, D, L)
    dA_k = u.new_empty(Bk, Dc, N)  # (B, D, N)
    dh0 = u.new_empty(Bk, Dc, N)  # (B, D, N)
    dB_p = u.new_zeros(Bk, G, P, L, N)  # (B, G, P, L, N)
    dC_p = u.new_zeros(Bk, G, P, L, N)  # (B, G, P, L, N)
    with kernel_threads():
        kernels.scan_backward(
            to_numpy(dy), to_numpy(dh_last), to_numpy(u), to_numpy(delta), to_numpy(A3),
            to_numpy(Bt), to_numpy(Ct), to_numpy(ckpt), K, CH, P,
            du.numpy(), ddelta.numpy(), dA_k.numpy(), dh0.numpy(), dB_p.numpy(), dC_p.numpy(),
        )  # fmt: skip
    dBt = dB_p[:, :, 0] if P == 1 else dB_p.sum(2)  # (B, G, L, N)
    dCt = dC_p[:, :, 0] if P == 1 else dC_p.sum(2)  # (B, G, L, N)
    if A.dim() == 2:
        dA = dA_k.sum(0)  # (D, N)
    else:
        dA = dA_k.view(Ba, Bk // Ba, Dc, N).sum(1)  # (Ba, D, N)
    return du, ddelta, dA, dBt, dCt, dh0


def _fold(x: Tensor, bdim: int | None, S: int) -> Tensor:
    """Move the vmapped axis to the front (expanding unbatched x) and merge it with axis 1."""
    x = x.expand(S, *x.shape) if bdim is None else x.movedim(bdim, 0)
    return x.reshape(S * x.shape[1], *x.shape[2:])


def _fold_A(A: Tensor, bdim: int | None, S: int) -> Tensor:
    """(D, N) or (Ba, D, N) [+ vmapped axis] -> (S·Ba, D, N), per-sample blocks, sample-major."""
    A = A.expand(S, *A.shape) if bdim is None else A.movedim(bdim, 0)
    if A.dim() == 3:
        A = A.unsqueeze(1)  # (S, 1, D, N)
    return A.reshape(-1, *A.shape[2:])


def _unfold(x: Tensor, S: int) -> Tensor:
    return x.view(S, x.shape[0] // S, *x.shape[1:])


class FusedScanFn(Function):
    """(u, delta, A, Bt, Ct, h0, K) -> (y, h_last, ckpt) on kernel layouts (module doc)."""

    @staticmethod
    def forward(u, delta, A, Bt, Ct, h0, K):
        return _forward_impl(u, delta, A, Bt, Ct, h0, K)

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, delta, A, Bt, Ct, h0, K = inputs
        ckpt = output[2]
        ctx.mark_non_differentiable(ckpt)
        ctx.save_for_backward(u, delta, A, Bt, Ct, ckpt)
        ctx.K = K
        ctx.has_h0 = h0 is not None

    @staticmethod
    def backward(ctx, dy, dh_last, _dckpt):
        u, delta, A, Bt, Ct, ckpt = ctx.saved_tensors
        du, ddelta, dA, dBt, dCt, dh0 = FusedScanBwdFn.apply(
            dy, dh_last, u, delta, A, Bt, Ct, ckpt, ctx.K
        )
        return du, ddelta, dA, dBt, dCt, (dh0 if ctx.has_h0 else None), None

    @staticmethod
    def vmap(info, in_dims, u, delta, A, Bt, Ct, h0, K):
        S = info.batch_size
        u_d, d_d, A_d, B_d, C_d, h_d, _ = in_dims
        args = (
            _fold(u, u_d, S),
            _fold(delta, d_d, S),
            _fold_A(A, A_d, S),
            _fold(Bt, B_d, S),
            _fold(Ct, C_d, S),
            None if h0 is None else _fold(h0, h_d, S),
            K,
        )
        y, h_last, ckpt = FusedScanFn.apply(*args)
        return (_unfold(y, S), _unfold(h_last, S), _unfold(ckpt, S)), (0, 0, 0)


class FusedScanBwdFn(Function):
    """The reverse pass as its own Function, so that torch.func can vmap the backward."""

    @staticmethod
    def forward(dy, dh_last, u, delta, A, Bt, Ct, ckpt, K):
        return _backward_impl(dy, dh_last, u, delta, A, Bt, Ct, ckpt, K)

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
    def vmap(info, in_dims, dy, dh_last, u, delta, A, Bt, Ct, ckpt, K):
        S = info.batch_size
        names = ("dy", "dh", "u", "delta", "A", "B", "C", "ckpt")
        dims = dict(zip(names, in_dims, strict=False))
        A_was_2d = (A.dim() - (dims["A"] is not None)) == 2
        out = FusedScanBwdFn.apply(
            _fold(dy, dims["dy"], S),
            _fold(dh_last, dims["dh"], S),
            _fold(u, dims["u"], S),
            _fold(delta, dims["delta"], S),
            _fold_A(A, dims["A"], S),
            _fold(Bt, dims["B"], S),
            _fold(Ct, dims["C"], S),
            _fold(ckpt, dims["ckpt"], S),
            K,
        )
        du, ddelta, dA, dBt, dCt, dh0 = (_unfold(t, S) for t in out)
        if A_was_2d:
            dA = dA.squeeze(1)  # (S, D, N)
        return (du, ddelta, dA, dBt, dCt, dh0), (0, 0, 0, 0, 0, 0)


def fused_scan_core(
    u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, h0: Tensor | None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Bare fused recurrence -> (y (Bk, D, L), h_L (Bk, D, N)).

    u, delta (Bk, D, L); A (D, N); Bt, Ct (Bk, G, L, N) time-major; h0 (Bk, D, N) or None."""
    y, h_last, _ = FusedScanFn.apply(
        u.contiguous(), delta.contiguous(), A.contiguous(), Bt.contiguous(), Ct.contiguous(),
        None if h0 is None else h0.contiguous(), int(checkpoint_every),
    )  # fmt: skip
    return y, h_last
