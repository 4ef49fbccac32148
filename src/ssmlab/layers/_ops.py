"""The one place where layers/ call the scan ops, so that switching to a new op is one edit.

Each function forwards `backend` to the op in ssmlab.ops. Where an op has not landed yet, a small
reference loop here stands in for it, and only `backend="auto"` or `"reference"` are accepted
(anything else raises `UserError`: no silent fallback).
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from ssmlab.errors import UserError
from ssmlab.ops.selective_scan.reference import selective_scan_ref

_LOCAL_BACKENDS = ("auto", "reference")


def _op(module: str, name: str):
    """The op `ssmlab.ops.<module>.<name>` if it exists, else None."""
    try:
        mod = importlib.import_module(f"ssmlab.ops.{module}")
    except ImportError:
        return None
    return getattr(mod, name, None)


def _local_only(op_name: str, backend: str) -> None:
    if backend not in _LOCAL_BACKENDS:
        raise UserError(
            f"backend {backend!r} for {op_name} is not available: ssmlab.ops.{op_name} has no fast "
            f"path yet; use one of {_LOCAL_BACKENDS}"
        )


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Mamba's selective scan (ops.selective_scan), layout (B, D, L); see its reference."""
    fast = _op("selective_scan", "selective_scan")
    if fast is not None:
        return fast(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                    delta_softplus=delta_softplus, backend=backend)
    _local_only("selective_scan", backend)
    return selective_scan_ref(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                              delta_softplus=delta_softplus)


def _linear_recurrence_ref(a: Tensor, b: Tensor) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t, h_{-1} = 0, time on the last axis; a broadcasts against b."""
    shape = torch.broadcast_shapes(a.shape, b.shape)
    h = b.new_zeros(shape[:-1])  # (...)
    hs = []
    for a_t, b_t in zip(a.expand(shape).unbind(-1), b.expand(shape).unbind(-1), strict=True):
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, dim=-1)


def linear_recurrence(a: Tensor, b: Tensor, backend: str = "auto") -> Tensor:
    """Generic first-order linear recurrence (ops.linear_recurrence), time on the last axis:
    a, b broadcastable (..., L) -> h (..., L)."""
    fast = _op("linear_recurrence", "linear_recurrence")
    if fast is not None:
        return fast(a, b, backend=backend)
    _local_only("linear_recurrence", backend)
    return _linear_recurrence_ref(a, b)


def _ssd_ref(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> Tensor:
    """Mamba-2 scalar-decay scan, sequential (the SSD recurrence of Dao & Gu 2024, eq. (SSM)).

    x (B, L, H, P), dt (B, L, H) (already positive), A (H,), B, C (B, L, G, N) -> y (B, L, H, P):
        h_t = exp(Δ_t A) h_{t-1} + Δ_t x_t ⊗ B_t   (state (H, P, N)),   y_t = h_t C_t.
    Head h reads group h // (H / G).
    """
    H, G = x.shape[2], B.shape[2]
    if H % G:
        raise UserError(f"heads H={H} not divisible by groups G={G}")
    Bh = B.repeat_interleave(H // G, dim=2)  # (B, L, H, N)
    Ch = C.repeat_interleave(H // G, dim=2)  # (B, L, H, N)
    decay = torch.exp(dt * A)  # (B, L, H)
    h = x.new_zeros(x.shape[0], H, x.shape[3], B.shape[3])  # (B, H, P, N)
    ys = []
    for x_t, dt_t, a_t, B_t, C_t in zip(x.unbind(1), dt.unbind(1), decay.unbind(1),
                                        Bh.unbind(1), Ch.unbind(1), strict=True):
        h = a_t[..., None, None] * h + (dt_t[..., None] * x_t)[..., None] * B_t[:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", h, C_t))  # (B, H, P)
    return torch.stack(ys, dim=1)  # (B, L, H, P)


def ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, chunk_size: int = 64,
        backend: str = "auto") -> Tensor:
    """Mamba-2 SSD scan (ops.ssd): x (B, L, H, P), dt (B, L, H), A (H,), B, C (B, L, G, N)."""
    fast = _op("ssd", "ssd")
    if fast is not None:
        return fast(x, dt, A, B, C, chunk_size=chunk_size, backend=backend)
    _local_only("ssd", backend)
    return _ssd_ref(x, dt, A, B, C)
