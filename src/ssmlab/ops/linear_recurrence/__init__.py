"""Generic diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t over the last axis.

For everything that is not the standard S6 scan: input-dependent decays along the state axis
(Mamba-ΔT), per-(channel, state) decays built by hand, gates that hard-reset (a_t = 0 exactly:
no logarithms are taken anywhere, so exact zeros and negative decays are fine).

    a, b   broadcastable, time on the last axis (…, L);   h0 broadcastable to (…) [optional]
    h      all states, shape broadcast(a, b)               (…, L)

Backends (explicit): "fused" (Numba, CPU, float32/float64/complex64/complex128, one pass per
row, prange over rows), "reference" (the loop of reference.py), "auto" = "fused" on CPU,
"reference" elsewhere.

Backward of the fused path: with g_t = dLoss/dh_t summed over the future,
    g_t = dh_t + a_{t+1}* g_{t+1}    (the same recurrence, reversed in time, decays shifted),
    da_t = g_t h_{t-1}*,  db_t = g_t,  dh0 = a_0* g_0
(* = complex conjugate, PyTorch's convention for complex gradients; a no-op for real inputs).
It is computed by the same autograd.Function, so double backward works, and the Function has a
vmap rule (the vmapped axis is just another leading axis), so torch.func.vmap / grad work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import Function

from ssmlab.ops._numba import kernel_threads, to_numpy
from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.linear_recurrence import kernels
from ssmlab.ops.linear_recurrence.reference import linear_recurrence_ref

BACKENDS = ("auto", "fused", "reference")

__all__ = ["BACKENDS", "linear_recurrence", "linear_recurrence_ref"]


def _run_kernel(a: Tensor, b: Tensor) -> Tensor:
    L = b.shape[-1]
    a2 = to_numpy(a.reshape(-1, L))  # (M, L)
    b2 = to_numpy(b.reshape(-1, L))  # (M, L)
    h = torch.empty(b.shape, dtype=b.dtype)  # (…, L)
    with kernel_threads():
        kernels.recurrence_rows(a2, b2, h.view(-1, L).numpy())
    return h


class LinearRecurrenceFn(Function):
    """h = scan(a, b) for a, b of one shape (…, L), h_{-1} = 0."""

    @staticmethod
    def forward(a: Tensor, b: Tensor) -> Tensor:
        return _run_kernel(a, b)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _ = inputs
        ctx.save_for_backward(a, output)

    @staticmethod
    def backward(ctx, dh: Tensor):
        a, h = ctx.saved_tensors
        a_next = F.pad(a[..., 1:], (0, 1)).conj()  # a_{t+1}*, (…, L)
        g = LinearRecurrenceFn.apply(a_next.flip(-1), dh.flip(-1)).flip(-1)  # (…, L)
        h_prev = F.pad(h[..., :-1], (1, 0)).conj()  # h_{t-1}*, (…, L)
        return g * h_prev, g

    @staticmethod
    def vmap(info, in_dims, a, b):
        a_d, b_d = in_dims
        a = a.movedim(a_d, 0) if a_d is not None else a.expand(info.batch_size, *a.shape)
        b = b.movedim(b_d, 0) if b_d is not None else b.expand(info.batch_size, *b.shape)
        return LinearRecurrenceFn.apply(a, b), 0


def linear_recurrence(
    a: Tensor, b: Tensor, h0: Tensor | None = None, backend: str = "auto"
) -> Tensor:
    """All states (…, L) of h_t = a_t ⊙ h_{t-1} + b_t (module doc); gradients for a, b, h0."""
    if backend not in BACKENDS:
        raise OpsInputError(
            f"unknown linear-recurrence backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if a.dim() == 0 or b.dim() == 0:
        raise OpsInputError("linear_recurrence: a and b need a time axis (the last one)")
    try:
        shape = torch.broadcast_shapes(a.shape, b.shape)
        if h0 is not None:
            torch.broadcast_shapes(h0.shape, shape[:-1])
    except RuntimeError as e:
        raise OpsInputError(f"linear_recurrence: shapes do not broadcast: {e}") from None
    if h0 is not None and torch.broadcast_shapes(h0.shape, shape[:-1]) != shape[:-1]:
        raise OpsInputError(
            f"linear_recurrence: h0 {tuple(h0.shape)} must broadcast to {tuple(shape[:-1])}"
        )
    name = backend
    if backend == "auto":
        name = "fused" if b.device.type == "cpu" else "reference"
    if name == "reference":
        return linear_recurrence_ref(a, b, h0)
    if b.device.type != "cpu" or a.device.type != "cpu":
        raise OpsInputError(
            "backend 'fused' is a CPU (Numba) kernel; move the tensors to the CPU or use "
            "backend='reference'"
        )
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    if dtype not in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        raise OpsInputError(
            f"backend 'fused' computes in float32, float64, complex64 or complex128, got {dtype}; "
            "cast the inputs"
        )
    a = a.to(dtype).expand(shape)
    b = b.to(dtype).expand(shape)
    if h0 is not None and shape[-1] > 0:
        # fold the initial state into the first drive: h_0 = a_0 h0 + b_0
        first = b[..., :1] + a[..., :1] * h0.to(dtype).unsqueeze(-1)
        b = torch.cat([first, b[..., 1:]], dim=-1)
    return LinearRecurrenceFn.apply(a, b)
