"""Benchmark of ssmlab.ops.ssd's paths on the CPU, to place "auto"'s choice.

Prints a Markdown table: median ms of forward + backward (float32, one torch thread, gradients for
x, dt, A, B, C, D) of the chunked SSD algorithm (chunk 64, capped at L) and the scan path (the
selective scan's fused kernel over the H·P channels), per (B, L, H, P, G, N), and what "auto" runs.
Shapes: the selectivity paper's MQAR models (L = 32, d_model 8 / 64: H·P = 16 / 128), the ICL
paper's prompts through a Mamba-2 stack (L = 21), a mid-length and a long sequence. The machine
is shared: read the ratios of one row.

Usage: python benchmarks/ssd.py [--repeats 10]
"""

from __future__ import annotations

import torch
from timing import median_ms, start_table

from ssmlab.ops.ssd import auto_backend, ssd

SHAPES = [(64, 32, 1, 16, 1, 2), (64, 32, 2, 64, 1, 16), (64, 21, 2, 16, 1, 16),
          (8, 256, 4, 32, 1, 16), (8, 1024, 8, 64, 1, 64)]


def step(ins: list[torch.Tensor], backend: str) -> None:
    x, dt, A, Bm, Cm, D = ins
    ssd(x, dt, A, Bm, Cm, D=D, dt_softplus=True, backend=backend).square().sum().backward()


def main() -> None:
    repeats = start_table(__doc__, ["B", "L", "H", "P", "G", "N", "chunked ms", "scan ms",
                                    "chunked / scan", "auto"])
    for B, L, H, P, G, N in SHAPES:
        ins = [torch.randn(B, L, H, P), torch.randn(B, L, H), -torch.rand(H) - 0.5,
               torch.randn(B, L, G, N), torch.randn(B, L, G, N), torch.randn(H)]
        for t in ins:
            t.requires_grad_(True)
        tc, ts = (median_ms(lambda b=b, ins=ins: step(ins, b), repeats, warmup=2)
                  for b in ("chunked", "scan"))
        x = ins[0]
        print(f"| {B} | {L} | {H} | {P} | {G} | {N} | {tc:.1f} | {ts:.1f} | {tc / ts:.1f}x | "
              f"{auto_backend(x)} |")


if __name__ == "__main__":
    main()
