"""Benchmark of ssmlab.ops.gated_linear's fast paths, to place "auto"'s switch.

Prints a Markdown table: median ms of forward + backward (float32, one torch thread, gradients
for q, k, v and the log-decays) of the chunked algorithm (chunk 16 and 64) and the recurrent
path (fused linear recurrence), per (B, H, L, K, V, decay kind), and what "auto" runs. Shapes:
the ICL paper's prompts through GLA / RetNet stacks (L = 21), a middle length and long
sequences. The machine is shared: read the ratios of one row.

Usage: python benchmarks/gated_linear.py [--repeats 10]
"""

from __future__ import annotations

import torch
from timing import median_ms, start_table

from ssmlab.ops.gated_linear import auto_backend, gated_linear_chunked, gated_linear_recurrent

SHAPES = [(64, 4, 21, 4, 8, "channel"), (64, 4, 21, 8, 8, "scalar"), (8, 4, 256, 16, 32, "channel"),
          (8, 4, 1024, 16, 32, "channel"), (8, 4, 1024, 64, 64, "scalar")]


def ms(fn, args, repeats: int, **kw) -> float:
    return median_ms(lambda: fn(*args, **kw).square().sum().backward(), repeats, warmup=2)


def main() -> None:
    repeats = start_table(__doc__, ["B", "H", "L", "K", "V", "decay", "chunked Q=16 ms",
                                    "chunked Q=64 ms", "recurrent ms", "auto"])
    for B, H, L, K, V, kind in SHAPES:
        q, k = (torch.randn(B, H, L, K, requires_grad=True) for _ in range(2))
        v = torch.randn(B, H, L, V, requires_grad=True)
        g = -torch.rand(B, H, L, *((K,) if kind == "channel" else ())).requires_grad_()
        t16 = ms(gated_linear_chunked, (q, k, v, g), repeats, chunk_size=16)
        t64 = ms(gated_linear_chunked, (q, k, v, g), repeats, chunk_size=64)
        tr = ms(gated_linear_recurrent, (q, k, v, g), repeats)
        print(f"| {B} | {H} | {L} | {K} | {V} | {kind} | {t16:.1f} | {t64:.1f} | {tr:.1f} | "
              f"{auto_backend(q, g)} |")


if __name__ == "__main__":
    main()
