"""Fused CPU selective scan: autograd and vmap wrappers around the Numba kernels (kernels.py).

The core op is the bare recurrence
    h_t = exp(Δ_t A) ⊙ h_{t-1} + Δ_t x_t B_t,     y_t = C_t · h_t
on kernel layouts; D, z, delta_bias and softplus live in PyTorch around it (selective_scan in
__init__.py), where autograd differentiates them exactly.

`FusedScanFn` works time-major, the layout of the kernels (k = kernel batch):
    uT, deltaT (Bk, L, D);  At (N, D) shared or (Ba, N, D) with Bk % Ba == 0, batch b uses
    At[b // (Bk / Ba)];  Bt, Ct (Bk, G, L, N);  h0T (Bk, N, D) or None (zeros)
    -> yT (Bk, L, D), h_lastT (Bk, N, D), ckpt (Bk, ceil(L/K), N, D) (saved for the backward).
`fused_scan_core` takes mamba_ssm's channel-major layout and transposes around it (cheap: the
transposed tensors are N times smaller than the work).

vmap rule (why A may carry a batch axis): under torch.func.vmap over S samples every input is
moved to a leading sample axis (unbatched ones are expanded) and the sample axis is folded into
the kernel batch, (S, Bk) -> S·Bk; At becomes (S·Ba, N, D), which the kernel indexes by
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


def _a3(At: Tensor) -> Tensor:
    """At as (Ba, N, D)."""
    return At.unsqueeze(0) if At.dim() == 2 else At


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
    uT: Tensor, dT: Tensor, At: Tensor, Bt: Tensor, Ct: Tensor, h0T: Tensor | None, K: int
) -> tuple[Tensor, Tensor, Tensor]:
    Bk, L, Dc = uT.shape
    N = At.shape[-2]
    G = Bt.shape[1]
    CH, _ = _chunking(Bk, G, Dc // G)
    nblk = -(-L // K)
    yT = uT.new_empty(Bk, L, Dc)  # (B, L, D)
    hlT = uT.new_empty(Bk, N, Dc)  # (B, N, D)
    ckpt = uT.new_empty(Bk, nblk, N, Dc)  # (B, L/K, N, D)
    h0_ = uT.new_zeros(Bk, N, Dc) if h0T is None else h0T
    with kernel_threads():
        kernels.scan_forward(
            to_numpy(uT), to_numpy(dT), to_numpy(_a3(At)), to_numpy(Bt), to_numpy(Ct),
            to_numpy(h0_), K, CH, yT.numpy(), hlT.numpy(), ckpt.numpy(),
        )  # fmt: skip
    return yT, hlT, ckpt


def _backward_impl(
    dyT: Tensor, dhlT: Tensor, uT: Tensor, dT: Tensor, At: Tensor, Bt: Tensor, Ct: Tensor,
    ckpt: Tensor, K: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    Bk, L, Dc = uT.shape
    A3 = _a3(At)
    Ba, N, _ = A3.shape
    G = Bt.shape[1]
    CH, P = _chunking(Bk, G, Dc // G)
    duT = torch.empty_like(uT)  # (B, L, D)
    ddT = torch.empty_like(uT)  # (B, L, D)
    dA_k = uT.new_empty(Bk, N, Dc)  # (B, N, D)
    dh0T = uT.new_empty(Bk, N, Dc)  # (B, N, D)
    dB_p = uT.new_zeros(Bk, G, P, L, N)  # (B, G, P, L, N)
    dC_p = uT.new_zeros(Bk, G, P, L, N)  # (B, G, P, L, N)
    with kernel_threads():
        kernels.scan_backward(
            to_numpy(dyT), to_numpy(dhlT), to_numpy(uT), to_numpy(dT), to_numpy(A3),
            to_numpy(Bt), to_numpy(Ct), to_numpy(ckpt), K, CH, P,
            duT.numpy(), ddT.numpy(), dA_k.numpy(), dh0T.numpy(), dB_p.numpy(), dC_p.numpy(),
        )  # fmt: skip
    dBt = dB_p[:, :, 0] if P == 1 else dB_p.sum(2)  # (B, G, L, N)
    dCt = dC_p[:, :, 0] if P == 1 else dC_p.sum(2)  # (B, G, L, N)
    if At.dim() == 2:
        dAt = dA_k.sum(0)  # (N, D)
    else:
        dAt = dA_k.view(Ba, Bk // Ba, N, Dc).sum(1)  # (Ba, N, D)
    return duT, ddT, dAt, dBt, dCt, dh0T


def _fold(x: Tensor, bdim: int | None, S: int) -> Tensor:
    """Move the vmapped axis to the front (expanding unbatched x) and merge it with axis 1."""
    x = x.expand(S, *x.shape) if bdim is None else x.movedim(bdim, 0)
    return x.reshape(S * x.shape[1], *x.shape[2:])


def _fold_A(At: Tensor, bdim: int | None, S: int) -> Tensor:
    """(N, D) or (Ba, N, D) [+ vmapped axis] -> (S·Ba, N, D), per-sample blocks, sample-major."""
    At = At.expand(S, *At.shape) if bdim is None else At.movedim(bdim, 0)
    if At.dim() == 3:
        At = At.unsqueeze(1)  # (S, 1, N, D)
    return At.reshape(-1, *At.shape[2:])


def _unfold(x: Tensor, S: int) -> Tensor:
    return x.view(S, x.shape[0] // S, *x.shape[1:])


class FusedScanFn(Function):
    """(uT, deltaT, At, Bt, Ct, h0T, K) -> (yT, h_lastT, ckpt), time-major (module doc)."""

    @staticmethod
    def forward(uT, dT, At, Bt, Ct, h0T, K):
        return _forward_impl(uT, dT, At, Bt, Ct, h0T, K)

    @staticmethod
    def setup_context(ctx, inputs, output):
        uT, dT, At, Bt, Ct, h0T, K = inputs
        ckpt = output[2]
        ctx.mark_non_differentiable(ckpt)
        ctx.save_for_backward(uT, dT, At, Bt, Ct, ckpt)
        ctx.K = K
        ctx.has_h0 = h0T is not None

    @staticmethod
    def backward(ctx, dyT, dhlT, _dckpt):
        uT, dT, At, Bt, Ct, ckpt = ctx.saved_tensors
        duT, ddT, dAt, dBt, dCt, dh0T = FusedScanBwdFn.apply(
            dyT, dhlT, uT, dT, At, Bt, Ct, ckpt, ctx.K
        )
        return duT, ddT, dAt, dBt, dCt, (dh0T if ctx.has_h0 else None), None

    @staticmethod
    def vmap(info, in_dims, uT, dT, At, Bt, Ct, h0T, K):
        S = info.batch_size
        u_d, d_d, A_d, B_d, C_d, h_d, _ = in_dims
        args = (
            _fold(uT, u_d, S),
            _fold(dT, d_d, S),
            _fold_A(At, A_d, S),
            _fold(Bt, B_d, S),
            _fold(Ct, C_d, S),
            None if h0T is None else _fold(h0T, h_d, S),
            K,
        )
        yT, hlT, ckpt = FusedScanFn.apply(*args)
        return (_unfold(yT, S), _unfold(hlT, S), _unfold(ckpt, S)), (0, 0, 0)


class FusedScanBwdFn(Function):
    """The reverse pass as its own Function, so that torch.func can vmap the backward."""

    @staticmethod
    def forward(dyT, dhlT, uT, dT, At, Bt, Ct, ckpt, K):
        return _backward_impl(dyT, dhlT, uT, dT, At, Bt, Ct, ckpt, K)

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
    def vmap(info, in_dims, dyT, dhlT, uT, dT, At, Bt, Ct, ckpt, K):
        S = info.batch_size
        names = ("dy", "dh", "u", "delta", "A", "B", "C", "ckpt")
        dims = dict(zip(names, in_dims, strict=False))
        A_was_2d = (At.dim() - (dims["A"] is not None)) == 2
        out = FusedScanBwdFn.apply(
            _fold(dyT, dims["dy"], S),
            _fold(dhlT, dims["dh"], S),
            _fold(uT, dims["u"], S),
            _fold(dT, dims["delta"], S),
            _fold_A(At, dims["A"], S),
            _fold(Bt, dims["B"], S),
            _fold(Ct, dims["C"], S),
            _fold(ckpt, dims["ckpt"], S),
            K,
        )
        duT, ddT, dAt, dBt, dCt, dh0T = (_unfold(t, S) for t in out)
        if A_was_2d:
            dAt = dAt.squeeze(1)  # (S, N, D)
        return (duT, ddT, dAt, dBt, dCt, dh0T), (0, 0, 0, 0, 0, 0)


def fused_scan_core(
    u: Tensor, delta: Tensor, A: Tensor, Bt: Tensor, Ct: Tensor, h0: Tensor | None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Bare fused recurrence -> (y (Bk, D, L), h_L (Bk, D, N)).

    u, delta (Bk, D, L); A (D, N); Bt, Ct (Bk, G, L, N) time-major; h0 (Bk, D, N) or None."""
    yT, hlT, _ = FusedScanFn.apply(
        u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(),
        A.transpose(-1, -2).contiguous(), Bt.contiguous(), Ct.contiguous(),
        None if h0 is None else h0.transpose(-1, -2).contiguous(), int(checkpoint_every),
    )  # fmt: skip
    return yT.transpose(1, 2).contiguous(), hlT.transpose(1, 2)
