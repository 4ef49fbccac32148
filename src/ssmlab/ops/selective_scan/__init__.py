"""Selective scan (Mamba S6): reference loop and fast CPU paths with one signature.

Glossary (code name -> Mamba paper symbol, Gu & Dao 2023, Alg. 2; shapes as mamba_ssm):
    u (B, D, L) x;  delta (B, D, L) Δ before bias/softplus;  A (D, N) A;
    B, C (B, N, L) or grouped (B, G, N, L) B_t, C_t;  D (D,) skip;  z (B, D, L) gate;
    delta_bias (D,);  h0 (B, D, N) initial state.

    Δ = softplus(delta + delta_bias) (each part optional),   Ā_t = exp(Δ_t A)   (ZOH),
    h_t = Ā_t ⊙ h_{t-1} + Δ_t x_t B_t   (Euler for B, as mamba_ssm),
    y_t = (C_t · h_t + D x_t) · silu(z_t).

Backends (explicit; see docs/ops.md):
    "fused"     fused CPU kernel, one pass over L per (batch, channel), checkpointed reverse
                pass; float32/float64; gradients for every input; works under torch.func
                (vmap, grad, vmap(grad)). Single backward only (no double backward). Runs the
                C kernel (scan_kernel.c, built with the system C compiler on first use, see
                cscan.py) and, where no compiler is available, the Numba kernel (kernels.py),
                saying so once on stderr.
    "fused_c"   the C kernel only (error if it cannot be built);
    "fused_numba"  the Numba kernel only.
    "pscan"     Blelloch parallel scan in PyTorch (baseline; any device; memory O(B·D·L·N)).
    "reference" the sequential loop of reference.py (the specification; slow).
    "auto"      "fused" for CPU tensors, "pscan" for any other device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.selective_scan import cscan
from ssmlab.ops.selective_scan.fused import DEFAULT_CHECKPOINT_EVERY, default_impl, fused_scan_core
from ssmlab.ops.selective_scan.pscan import pscan_scan_core
from ssmlab.ops.selective_scan.reference import expand_groups, prepare_delta, selective_scan_ref

BACKENDS = ("auto", "fused", "fused_c", "fused_numba", "pscan", "reference")
FUSED = {"fused": None, "fused_c": "c", "fused_numba": "numba"}  # backend -> kernel impl

__all__ = ["BACKENDS", "selective_scan", "selective_scan_ref", "resolve_backend"]


def resolve_backend(backend: str, u: Tensor) -> str:
    """Map a backend name to the one that runs; raise OpsInputError if it cannot run here."""
    if backend not in BACKENDS:
        raise OpsInputError(
            f"unknown selective-scan backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if backend == "auto":
        return "fused" if u.device.type == "cpu" else "pscan"
    if backend in FUSED and u.device.type != "cpu":
        raise OpsInputError(
            f"backend {backend!r} is a CPU kernel but the inputs are on {u.device}; "
            "move them to the CPU or use backend='pscan'"
        )
    if backend == "fused_c" and cscan.load() is None:
        raise OpsInputError(
            f"backend 'fused_c' is unavailable: {cscan.status()}; use backend='fused_numba'"
        )
    return backend


def _shape_error(name: str, got: tuple[int, ...], want: str) -> OpsInputError:
    return OpsInputError(f"selective_scan: {name} has shape {tuple(got)}, expected {want}")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias, h0) -> None:
    if u.dim() != 3:
        raise _shape_error("u", u.shape, "(B, D, L)")
    Bsz, Dch, L = u.shape
    if delta.shape != u.shape:
        raise _shape_error("delta", delta.shape, f"{tuple(u.shape)} like u")
    if A.dim() != 2 or A.shape[0] != Dch:
        raise _shape_error("A", A.shape, f"({Dch}, N)")
    N = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        if M.dim() == 3:
            ok = tuple(M.shape) == (Bsz, N, L)
        elif M.dim() == 4:
            ok = M.shape[0] == Bsz and tuple(M.shape[2:]) == (N, L) and Dch % M.shape[1] == 0
        else:
            ok = False
        if not ok:
            raise _shape_error(
                name, M.shape, f"({Bsz}, {N}, {L}) or ({Bsz}, G, {N}, {L}) with G | {Dch}"
            )
    if D is not None and tuple(D.shape) != (Dch,):
        raise _shape_error("D", D.shape, f"({Dch},)")
    if z is not None and z.shape != u.shape:
        raise _shape_error("z", z.shape, f"{tuple(u.shape)} like u")
    if delta_bias is not None and tuple(delta_bias.shape) != (Dch,):
        raise _shape_error("delta_bias", delta_bias.shape, f"({Dch},)")
    if h0 is not None and tuple(h0.shape) != (Bsz, Dch, N):
        raise _shape_error("h0", h0.shape, f"({Bsz}, {Dch}, {N})")


def _check_fused_dtypes(*tensors: Tensor | None) -> None:
    dtypes = {t.dtype for t in tensors if t is not None}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (torch.float32, torch.float64):
        raise OpsInputError(
            "the fused backends need every tensor in one dtype, float32 or float64; got "
            f"{sorted(str(d) for d in dtypes)}: cast them, or use backend='reference'"
        )


def _grouped(M: Tensor, G: int) -> Tensor:
    """(B, N, L) or (B, g, N, L) -> (B, G, N, L) with G a multiple of g."""
    if M.dim() == 3:
        M = M.unsqueeze(1)
    if M.shape[1] != G:
        M = M.repeat_interleave(G // M.shape[1], dim=1)
    return M


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
    return_last_state: bool = False,
    h0: Tensor | None = None,
    backend: str = "auto",
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba_ssm's selective_scan_fn semantics -> y (B, D, L) [, h_L (B, D, N)].

    Same arguments and result as `selective_scan_ref` (the specification), plus `backend`
    (module doc; default "auto" = the fused CPU kernel: C, or Numba without a compiler) and
    `checkpoint_every` (fused backends only: the reverse pass keeps one state per this many
    steps, memory O(B·D·N·L/K); default 64).
    """
    name = resolve_backend(backend, u)
    _check_inputs(u, delta, A, B, C, D, z, delta_bias, h0)
    if name == "reference":
        return selective_scan_ref(
            u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
            return_last_state=return_last_state, h0=h0,
        )  # fmt: skip
    Dch = u.shape[1]
    if name in FUSED:
        _check_fused_dtypes(u, delta, A, B, C, D, z, delta_bias, h0)
        if int(checkpoint_every) < 1:
            raise OpsInputError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        gB = 1 if B.dim() == 3 else B.shape[1]
        gC = 1 if C.dim() == 3 else C.shape[1]
        G = math.lcm(gB, gC)  # divides D since both do
        Bt = _grouped(B, G).transpose(-1, -2)  # (B, G, L, N)
        Ct = _grouped(C, G).transpose(-1, -2)  # (B, G, L, N)
        impl = FUSED[name] or default_impl()
        y, h_last = fused_scan_core(
            u, delta, A, Bt, Ct, h0, checkpoint_every, Dskip=D, delta_bias=delta_bias,
            delta_softplus=delta_softplus, impl=impl,
        )  # fmt: skip
    else:
        dt = prepare_delta(delta, delta_bias, delta_softplus)  # (B, D, L)
        y, h_last = pscan_scan_core(u, dt, A, expand_groups(B, Dch), expand_groups(C, Dch), h0)
        if D is not None:
            y = y + D[None, :, None] * u  # (B, D, L)
    if z is not None:
        y = y * F.silu(z)  # (B, D, L)
    return (y, h_last) if return_last_state else y
