"""Scalar-decay selective scan (Mamba-2 / SSD): reference loop and chunked SSD algorithm.

    x (B, L, H, P), dt (B, L, H), A (H,) negative, B, C (B, L, G, N), D (H,), h0 (B, H, P, N)
    h_t = exp(Δ_t a_h) h_{t-1} + Δ_t x_t B_t^T,   y_t = h_t C_t + D x_t,   Δ = softplus(dt + bias)?

Backends: "scan" (the selective scan's fused CPU kernel over the H·P channels, scan.py; what
"auto" runs on the CPU), "chunked" (the chunked SSD algorithm; PyTorch, any device, autograd and
vmap through plain ops; what "auto" runs elsewhere), "reference" (the loop). See reference.py,
chunked.py and scan.py for the equations; benchmarks/ssd.py for the timings that set "auto".
"""

from __future__ import annotations

from torch import Tensor

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.ssd.chunked import DEFAULT_CHUNK_SIZE, ssd_chunked
from ssmlab.ops.ssd.reference import ssd_ref
from ssmlab.ops.ssd.scan import ssd_scan

BACKENDS = ("auto", "chunked", "reference", "scan")

__all__ = ["BACKENDS", "auto_backend", "ssd", "ssd_chunked", "ssd_ref", "ssd_scan"]


def _check(x, dt, A, B, C, D, dt_bias, h0, chunk_size) -> None:
    if x.dim() != 4:
        raise OpsInputError(f"ssd: x has shape {tuple(x.shape)}, expected (B, L, H, P)")
    Bsz, L, H, P = x.shape
    if tuple(dt.shape) != (Bsz, L, H):
        raise OpsInputError(f"ssd: dt has shape {tuple(dt.shape)}, expected {(Bsz, L, H)}")
    if tuple(A.shape) != (H,):
        raise OpsInputError(f"ssd: A has shape {tuple(A.shape)}, expected ({H},) (one per head)")
    for name, M in (("B", B), ("C", C)):
        if M.dim() != 4 or tuple(M.shape[:2]) != (Bsz, L) or H % M.shape[2]:
            raise OpsInputError(
                f"ssd: {name} has shape {tuple(M.shape)}, expected ({Bsz}, {L}, G, N) with G | {H}"
            )
    if B.shape != C.shape:
        raise OpsInputError(f"ssd: B {tuple(B.shape)} and C {tuple(C.shape)} must match")
    N = B.shape[3]
    for name, v, want in (("D", D, (H,)), ("dt_bias", dt_bias, (H,)), ("h0", h0, (Bsz, H, P, N))):
        if v is not None and tuple(v.shape) != want:
            raise OpsInputError(f"ssd: {name} has shape {tuple(v.shape)}, expected {want}")
    if int(chunk_size) < 1:
        raise OpsInputError(f"ssd: chunk_size must be >= 1, got {chunk_size}")


def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    h0: Tensor | None = None,
    return_last_state: bool = False,
    backend: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor | tuple[Tensor, Tensor]:
    """SSD scan -> y (B, L, H, P) [and h_L (B, H, P, N)]; backend "auto": `auto_backend`."""
    if backend not in BACKENDS:
        raise OpsInputError(f"unknown ssd backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check(x, dt, A, B, C, D, dt_bias, h0, chunk_size)
    kw = dict(
        D=D, dt_bias=dt_bias, dt_softplus=dt_softplus, h0=h0, return_last_state=return_last_state
    )
    name = auto_backend(x) if backend == "auto" else backend
    if name == "reference":
        return ssd_ref(x, dt, A, B, C, **kw)
    if name == "scan":
        if x.device.type != "cpu":
            raise OpsInputError(f"ssd: backend 'scan' is a CPU kernel but the inputs are on "
                                f"{x.device}; move them to the CPU or use backend='chunked'")
        return ssd_scan(x, dt, A, B, C, **kw)
    return ssd_chunked(x, dt, A, B, C, chunk_size=chunk_size, **kw)


def auto_backend(x: Tensor) -> str:
    """What "auto" runs: "scan" on the CPU (the fused kernel), "chunked" elsewhere."""
    return "scan" if x.device.type == "cpu" else "chunked"
