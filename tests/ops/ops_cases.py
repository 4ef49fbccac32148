"""Shared input builders for tests/ops (float64 by default, small shapes, readable case ids)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ScanCase:
    """One selective-scan configuration; `id` is what pytest prints."""

    id: str
    batch: int
    channels: int
    states: int
    length: int
    groups: int | None = None  # None: B, C are (B, N, L); else (B, G, N, L)
    with_D: bool = False
    with_z: bool = False
    with_bias: bool = False
    softplus: bool = False
    with_h0: bool = False
    last_state: bool = False
    checkpoint_every: int = 64


def scan_inputs(case: ScanCase, dtype=torch.float64, seed: int = 0) -> dict:
    """Random inputs for `case` (A negative, Δ of order 1), all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    Bs, Dc, N, L = case.batch, case.channels, case.states, case.length

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_(True)

    bshape = (Bs, N, L) if case.groups is None else (Bs, case.groups, N, L)
    delta = torch.rand(Bs, Dc, L, generator=g, dtype=dtype)
    if not case.softplus:
        delta = delta + 0.05  # Δ > 0 without softplus
    kw = dict(
        u=rnd(Bs, Dc, L),
        delta=delta.requires_grad_(True),
        A=(-torch.rand(Dc, N, generator=g, dtype=dtype) * 2 - 0.1).requires_grad_(True),
        B=rnd(*bshape),
        C=rnd(*bshape),
        D=rnd(Dc) if case.with_D else None,
        z=rnd(Bs, Dc, L) if case.with_z else None,
        delta_bias=rnd(Dc, scale=0.5) if case.with_bias else None,
        delta_softplus=case.softplus,
        return_last_state=case.last_state,
        h0=rnd(Bs, Dc, N) if case.with_h0 else None,
    )
    return kw


def tensor_args(kw: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in kw.items() if isinstance(v, torch.Tensor)}


def scalar_loss(out, seed: int = 1) -> torch.Tensor:
    """A loss that weights every output entry differently (so no gradient is trivially equal)."""
    outs = out if isinstance(out, tuple) else (out,)
    total = 0.0
    for i, o in enumerate(outs):
        w = torch.linspace(-1.0, 2.0, o.numel(), dtype=o.dtype).view_as(o)
        total = total + (w * o).sum() + 0.1 * (i + 1) * (o**2).sum()
    return total
