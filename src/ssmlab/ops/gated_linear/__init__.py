"""Gated linear attention (RetNet, GLA; also linear attention and Mamba-2's SSD as special cases):
reference loop, chunked algorithm, and the implied causal matrix.

    q, k (B, H, L, K), v (B, H, L, V), log_decay (B, H, L) [scalar per head and step] or
    (B, H, L, K) [one per key channel], h0 (B, H, K, V)
    S_t = diag(exp(log_decay_t)) S_{t-1} + k_tᵀ v_t,    o_t = scale · q_t S_t
    o_t = Σ_{s ≤ t} M_{t,s} v_s,   M_{t,s} = scale Σ_k q_t[k] k_s[k] exp(Σ_{j=s+1..t} log_decay_j[k])

RetNet: log_decay = log γ_h for every step (a fixed scalar per head). GLA: log_decay = log α_t
(data-dependent, per key channel). log_decay = 0: causal linear attention. Decays should be ≤ 1
(log_decay ≤ 0): the chunked path's exponents are then all ≤ 0 (no overflow, see chunked.py).

Backends: "chunked" (PyTorch, any device, autograd through plain ops), "recurrent" (every
state entry as one scalar recurrence on ssmlab.ops.linear_recurrence's fused CPU kernel: O(B·H·K·V·L)
work, no in-chunk (Q, Q) decays; recurrent.py), "reference" (the loop of reference.py). "auto" =
"recurrent" for a per-key-channel decay with L ≤ RECURRENT_MAX_L on the CPU, else "chunked":
measured by benchmarks/gated_linear.py (one thread, forward + backward), the recurrent path is 3-6x
faster at the ICL prompts' size (B 64, H 4, L 21, K 4, V 8: 11 vs 64 ms), about even at L = 256
(two runs: 0.75x and 1.3x), the chunked one 1.7-3x faster at L = 1024 and 4x or more for scalar
decays (RetNet, Mamba-2) at any length.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssmlab.ops.errors import OpsInputError
from ssmlab.ops.gated_linear.chunked import DEFAULT_CHUNK_SIZE, gated_linear_chunked
from ssmlab.ops.gated_linear.recurrent import gated_linear_recurrent
from ssmlab.ops.gated_linear.reference import gated_linear_ref
from ssmlab.ops.segsum import causal_mask, segsum

BACKENDS = ("auto", "chunked", "recurrent", "reference")
RECURRENT_MAX_L = 128  # "auto" takes the recurrent path up to this length (per-channel decays)

__all__ = ["BACKENDS", "DEFAULT_CHUNK_SIZE", "RECURRENT_MAX_L", "auto_backend",
           "gated_linear_attention", "gated_linear_chunked", "gated_linear_matrix",
           "gated_linear_recurrent", "gated_linear_ref"]


def _check(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor, h0: Tensor | None) -> None:
    if q.dim() != 4:
        raise OpsInputError(f"gated_linear: q has shape {tuple(q.shape)}, expected (B, H, L, K)")
    Bsz, H, L, K = q.shape
    if tuple(k.shape) != tuple(q.shape):
        raise OpsInputError(f"gated_linear: k has shape {tuple(k.shape)}, expected {tuple(q.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != (Bsz, H, L):
        raise OpsInputError(
            f"gated_linear: v has shape {tuple(v.shape)}, expected ({Bsz}, {H}, {L}, V)")
    if tuple(log_decay.shape) not in ((Bsz, H, L), (Bsz, H, L, K)):
        raise OpsInputError(
            f"gated_linear: log_decay has shape {tuple(log_decay.shape)}, expected "
            f"{(Bsz, H, L)} (scalar per head) or {(Bsz, H, L, K)} (per key channel)")
    if h0 is not None and tuple(h0.shape) != (Bsz, H, K, v.shape[3]):
        raise OpsInputError(
            f"gated_linear: h0 has shape {tuple(h0.shape)}, expected {(Bsz, H, K, v.shape[3])}")


def gated_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    log_decay: Tensor,
    scale: float = 1.0,
    h0: Tensor | None = None,
    return_last_state: bool = False,
    backend: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Tensor | tuple[Tensor, Tensor]:
    """o (B, H, L, V) [and S_L (B, H, K, V)]; backend "auto": `auto_backend`."""
    if backend not in BACKENDS:
        raise OpsInputError(
            f"unknown gated_linear backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    _check(q, k, v, log_decay, h0)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise OpsInputError(f"gated_linear: chunk_size must be an int >= 1, got {chunk_size!r}")
    kw = dict(scale=scale, h0=h0, return_last_state=return_last_state)
    name = auto_backend(q, log_decay) if backend == "auto" else backend
    if name == "reference":
        return gated_linear_ref(q, k, v, log_decay, **kw)
    if name == "recurrent":
        if q.device.type != "cpu":
            raise OpsInputError("gated_linear: backend 'recurrent' is a CPU kernel; move the "
                                "tensors to the CPU or use backend='chunked'")
        return gated_linear_recurrent(q, k, v, log_decay, **kw)
    return gated_linear_chunked(q, k, v, log_decay, chunk_size=chunk_size, **kw)


def auto_backend(q: Tensor, log_decay: Tensor) -> str:
    """What "auto" runs: "recurrent" for a per-key-channel decay, L ≤ RECURRENT_MAX_L, on the
    CPU; "chunked" otherwise (module docstring)."""
    per_channel = log_decay.dim() == 4
    short = q.shape[2] <= RECURRENT_MAX_L
    return "recurrent" if per_channel and short and q.device.type == "cpu" else "chunked"


def gated_linear_matrix(q: Tensor, k: Tensor, log_decay: Tensor, scale: float = 1.0) -> Tensor:
    """The implied causal matrix M (B, H, L, L), [..., t, s] (row = output position), vectorised:

        M_{t,s} = scale Σ_k q_t[k] k_s[k] exp(Σ_{j=s+1..t} log_decay_j[k])   (s ≤ t), 0 above.

    Segment sums are masked with -inf before exp (no inf / NaN, not even in gradients). Memory
    O(B·H·L²) for a scalar decay, O(B·H·K·L²) for a per-channel one."""
    if q.dim() != 4 or tuple(k.shape) != tuple(q.shape):
        raise OpsInputError(f"gated_linear_matrix: q {tuple(q.shape)} and k {tuple(k.shape)} "
                            "must both be (B, H, L, K)")
    Bsz, H, L, K = q.shape
    if tuple(log_decay.shape) not in ((Bsz, H, L), (Bsz, H, L, K)):
        raise OpsInputError(f"gated_linear_matrix: log_decay has shape "
                            f"{tuple(log_decay.shape)}, expected {(Bsz, H, L)} or {(Bsz, H, L, K)}")
    mask = causal_mask(L, q.device)  # (L, L)
    if log_decay.dim() == 3:
        decay = torch.exp(segsum(log_decay).masked_fill(~mask, float("-inf")))  # (B, H, L, L)
        return scale * (q @ k.transpose(-1, -2)) * decay
    seg = segsum(log_decay.transpose(-1, -2)).masked_fill(~mask, float("-inf"))  # (B, H, K, L, L)
    return scale * torch.einsum("bhtk,bhsk,bhkts->bhts", q, k, torch.exp(seg))
