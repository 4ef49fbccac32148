"""SSD as a selective scan: Mamba-2's recurrence run by the fused CPU kernel of
ssmlab.ops.selective_scan.

With a scalar decay per head, h_t = exp(Δ_t a_h) h_{t-1} + Δ_t x_t B_tᵀ is Mamba's selective
scan over the H·P channels d = h·P + p: each channel of head h gets u = x[..., h, p],
Δ = Δ[..., h] and A[d, n] = a_h for every state n; the G groups of B and C are selective_scan's
groups (channel d reads group d // (H·P / G) = h // (H / G), Mamba-2's head-to-group map). So the
whole computation is the fused kernel's, with exact gradients through its backward and autograd
of the reshapes (a, Δ and D collect their channels' gradients); vmap goes through
selective_scan's rule.

Why: on the CPU the chunked SSD algorithm spends its time on einsum copies of the (Q, Q) in-chunk
decay and attention tensors; at the sizes of the selectivity paper's MQAR models (B 64, L 32,
H·P 128, N 16) the scan is several times faster forward + backward (benchmarks/ssd.py).
"""

from __future__ import annotations

from torch import Tensor

from ssmlab.ops.selective_scan import selective_scan


def ssd_scan(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """y (B, L, H, P) [and h_L (B, H, P, N)]; the arguments of ssmlab.ops.ssd.ssd (checked
    there), run by selective_scan's fused CPU kernel."""
    Bsz, L, H, P = x.shape
    N = B.shape[3]
    u = x.permute(0, 2, 3, 1).reshape(Bsz, H * P, L)  # (B, HP, L)
    delta = dt.transpose(1, 2).repeat_interleave(P, dim=1)  # (B, HP, L)
    A_ch = A.repeat_interleave(P)[:, None].expand(H * P, N)  # (HP, N)
    out = selective_scan(
        u, delta, A_ch, B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1),  # (B, G, N, L)
        D=None if D is None else D.repeat_interleave(P),
        delta_bias=None if dt_bias is None else dt_bias.repeat_interleave(P),
        delta_softplus=dt_softplus, return_last_state=True,
        h0=None if h0 is None else h0.reshape(Bsz, H * P, N), backend="fused",
    )  # fmt: skip
    y = out[0].view(Bsz, H, P, L).permute(0, 3, 1, 2)  # (B, L, H, P)
    return (y, out[1].view(Bsz, H, P, N)) if return_last_state else y
