"""Benchmark of the Mamba-ΔT scan: the fused op vs the materialised path it replaced, and
Mamba's selective scan at the same sizes.

Prints a Markdown table of median wall times (ms, float32), forward and forward+backward, for:
    materialised   what MambaDeltaT._ssm did before ssmlab.ops.delta_t_scan: (B, d, N, L) decays
                   exp(Λ Δ) and drives u ⊗ B, ssmlab.ops.linear_recurrence (fused), then the
                   einsum with C;
    fused ΔT       ssmlab.ops.delta_t_scan (backend "fused", checkpoint_every 64);
    Mamba S6       ssmlab.ops.selective_scan (backend "fused": Mamba's scan, Δ per channel,
                   softplus inside) on the same B, L, d, N,
at the sizes of the selectivity paper's induction experiment (paper profile): batch 64
(TrainSpec), seq_len 64, d_model in {4, 8, 16, 32, 64} with expand 2 (d = 2·d_model), d_state 8;
plus one long case L = 1024 (d_model 32). Inputs: u, B, C ~ N(0, 1), Δ = softplus(N(0, 1) - 1),
Λ = -exp(U(0, 1)); forward+backward = forward, then the gradients of every input of a weighted
sum. Each cell: one warm-up call (compiles / loads the Numba kernels), then the median of
`--repeats` timed calls. The machine may be shared: read the ratios of one run.

Usage: OMP_NUM_THREADS=1 python benchmarks/delta_t.py [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from timing import median_ms

from ssmlab.ops.delta_t_scan import delta_t_scan
from ssmlab.ops.linear_recurrence import linear_recurrence
from ssmlab.ops.selective_scan import selective_scan

BATCH, SEQ_LEN, D_STATE, EXPAND = 64, 64, 8, 2
D_MODELS = (4, 8, 16, 32, 64)
LONG = (BATCH, 1024, 32)  # (B, L, d_model)
PATHS = ("materialised", "fused", "mamba")
LABEL = {"materialised": "materialised (old)", "fused": "fused ΔT", "mamba": "Mamba S6"}


def _dt_inputs(Bs: int, L: int, d: int, N: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f32 = torch.float32
    u = torch.randn(Bs, L, d, generator=g, dtype=f32)
    delta = F.softplus(torch.randn(Bs, L, N, generator=g, dtype=f32) - 1)
    A = -torch.exp(torch.rand(d, N, generator=g, dtype=f32))
    Bin = torch.randn(Bs, L, N, generator=g, dtype=f32)
    C = torch.randn(Bs, L, N, generator=g, dtype=f32)
    return [u, delta, A, Bin, C]


def _mamba_inputs(Bs: int, L: int, d: int, N: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f32 = torch.float32
    return [
        torch.randn(Bs, d, L, generator=g, dtype=f32),  # u (B, D, L)
        torch.randn(Bs, d, L, generator=g, dtype=f32) - 1,  # delta before softplus
        -torch.exp(torch.rand(d, N, generator=g, dtype=f32)),  # A (D, N)
        torch.randn(Bs, N, L, generator=g, dtype=f32),  # B (B, N, L)
        torch.randn(Bs, N, L, generator=g, dtype=f32),  # C (B, N, L)
    ]


def materialised(u, delta, A, Bin, C):
    """MambaDeltaT._ssm before the fused op (B, L, d) -> (B, L, d)."""
    dT = delta.transpose(1, 2)  # (B, N, L)
    a = torch.exp(A[None, :, :, None] * dT[:, None])  # (B, d, N, L)
    b = u.transpose(1, 2)[:, :, None, :] * Bin.transpose(1, 2)[:, None]  # (B, d, N, L)
    h = linear_recurrence(a, b, backend="fused")  # (B, d, N, L)
    return torch.einsum("bdnl,bnl->bld", h, C.transpose(1, 2))  # (B, L, d)


def _call(path: str, t: list[torch.Tensor]) -> torch.Tensor:
    if path == "materialised":
        return materialised(*t)
    if path == "fused":
        return delta_t_scan(*t, backend="fused")
    return selective_scan(*t, delta_softplus=True, backend="fused")


def _time(path: str, Bs: int, L: int, d: int, N: int, grad: bool, repeats: int) -> float:
    make = _mamba_inputs if path == "mamba" else _dt_inputs
    t = [x.requires_grad_(grad) for x in make(Bs, L, d, N)]

    def once() -> None:
        y = _call(path, t)
        if grad:
            w = torch.ones_like(y)
            torch.autograd.grad((y * w).sum(), t)

    return median_ms(once, repeats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="d_model 4 and 32 only, no long case")
    args = p.parse_args(argv)
    cases = [(BATCH, SEQ_LEN, dm) for dm in ((4, 32) if args.quick else D_MODELS)]
    if not args.quick:
        cases.append(LONG)
    print(f"torch threads {torch.get_num_threads()}, float32, N = {D_STATE}, median of "
          f"{args.repeats}; ms")
    print()
    head = ["B", "L", "d_model", "d"]
    for mode in ("fwd", "f+b"):
        head += [f"{LABEL[p]} {mode}" for p in PATHS] + [f"old / fused {mode}",
                                                         f"fused / Mamba {mode}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for Bs, L, dm in cases:
        d = EXPAND * dm
        row = [str(Bs), str(L), str(dm), str(d)]
        for grad in (False, True):
            ms = {p: _time(p, Bs, L, d, D_STATE, grad, args.repeats) for p in PATHS}
            row += [f"{ms[p]:.2f}" for p in PATHS]
            row += [f"{ms['materialised'] / ms['fused']:.1f}×", f"{ms['fused'] / ms['mamba']:.2f}×"]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
