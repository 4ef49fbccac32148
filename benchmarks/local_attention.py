"""Benchmark of local (sliding-window) attention's exact paths, to place `auto`'s switch.

Prints a Markdown table: median ms of forward + backward (float32, one torch thread, d_model 64,
one head) of LocalAttention's "banded" (unfold windows, O(L·w)) and "dense" (SDPA with the band
as a boolean mask, O(L²)) paths, and the path "auto" takes, over sequence lengths and windows
(batch shrinking with L so each cell holds about 2048 tokens). The machine is shared: read the
ratios of one row rather than absolute times.

Usage: python benchmarks/local_attention.py [--repeats 10]
"""

from __future__ import annotations

import torch
from timing import median_ms, start_table

from ssmlab.layers.attention import LocalAttention

SHAPES = [(32, 64), (128, 16), (256, 8), (512, 4), (1024, 2)]  # (L, B)
WINDOWS = (3, 16, 64)


def ms(m: LocalAttention, x: torch.Tensor, repeats: int) -> float:
    return median_ms(lambda: m(x).sum().backward(), repeats, warmup=2)


def main() -> None:
    repeats = start_table(__doc__, ["L", "B", "w", "banded ms", "dense ms", "banded / dense", "auto"])
    for L, B in SHAPES:
        x = torch.randn(B, L, 64, requires_grad=True)
        for w in WINDOWS:
            if w > L:
                continue
            t = {p: ms(LocalAttention(64, window=w, backend=p), x, repeats)
                 for p in ("banded", "dense")}
            auto = LocalAttention(64, window=w).path(L)
            print(f"| {L} | {B} | {w} | {t['banded']:.1f} | {t['dense']:.1f} | "
                  f"{t['banded'] / t['dense']:.2f} | {auto} |")


if __name__ == "__main__":
    main()
