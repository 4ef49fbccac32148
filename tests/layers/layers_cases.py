"""Shared tiny configurations for the mixer tests (float64, shapes kept small: 2-core budget)."""

from __future__ import annotations

import torch

from ssmlab.layers.registry import build_mixer

D_MODEL = 8

# One small configuration per registry name; extra variants exercise the options.
MIXER_CASES: dict[str, tuple[str, dict]] = {
    "s6": ("s6", dict(d_state=4)),
    "mamba": ("mamba", dict(d_state=4, d_conv=3)),
    "s4d-real": ("s4d", dict(d_state=4)),
    "s4d-lin-zoh": ("s4d", dict(d_state=6, init="lin", discretization="zoh")),
    "s4d-recurrent": ("s4d", dict(d_state=4, mode="recurrent")),
    "mamba2": ("mamba2", dict(d_state=4, headdim=4)),
    "mamba2-groups-nonorm": ("mamba2", dict(d_state=3, headdim=2, ngroups=2, rmsnorm=False)),
    "mamba_dt": ("mamba_dt", dict(d_state=4)),
    "mamba_dt-delta": ("mamba_dt", dict(d_state=4, input_scaling="delta")),
    "softmax": ("softmax", dict(n_heads=2)),
    "softmax-ref": ("softmax", dict(n_heads=2, backend="reference")),
    "linear": ("linear", dict(n_heads=2)),
    "linear-elu-norm": ("linear", dict(n_heads=2, feature_map="elu+1", normalize=True)),
    "linear-relu-quadratic": ("linear", dict(feature_map="relu", mode="quadratic")),
    "local": ("local", dict(n_heads=2, window=3)),
    "retnet": ("retnet", dict(n_heads=2)),
    "retnet-norotary-rms-nogate-chunk4": ("retnet", dict(n_heads=4, rotary=False, norm="rms",
                                                         output_gate=False, value_factor=1,
                                                         chunk_size=4)),
    "gla": ("gla", dict(n_heads=2)),
    "gla-nonorm-chunk4": ("gla", dict(n_heads=2, expand_k=1.0, gate_low_rank_dim=3,
                                      norm="none", chunk_size=4)),
}


def make_mixer(case: str, seed: int = 0, **overrides) -> torch.nn.Module:
    name, kwargs = MIXER_CASES[case]
    torch.manual_seed(seed)
    return build_mixer(name, D_MODEL, **{**kwargs, **overrides}).double()


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)



def gated_linear_inputs(Bs: int, H: int, L: int, K: int, V: int, per_channel: bool,
                        dtype=torch.float64, seed: int = 0, with_h0: bool = True) -> dict:
    """Random inputs of ssmlab.ops.gated_linear, all requiring grad: log-decays in (-∞, 0) of
    order -0.7 (logsigmoid of a standard normal), per head (B, H, L) or per key channel
    (B, H, L, K)."""
    g = torch.Generator().manual_seed(seed)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=dtype).requires_grad_(True)

    gshape = (Bs, H, L, K) if per_channel else (Bs, H, L)
    log_decay = torch.nn.functional.logsigmoid(torch.randn(*gshape, generator=g, dtype=dtype))
    return dict(q=r(Bs, H, L, K), k=r(Bs, H, L, K), v=r(Bs, H, L, V),
                log_decay=log_decay.requires_grad_(True),
                h0=r(Bs, H, K, V) if with_h0 else None)


def weighted_loss(*outs: torch.Tensor) -> torch.Tensor:
    """A loss weighting every output entry differently (no gradient is trivially equal)."""
    total = 0.0
    for i, o in enumerate(outs):
        w = torch.linspace(-1.0, 2.0, o.numel(), dtype=o.dtype).view_as(o)
        total = total + (w * o).sum() + 0.1 * (i + 1) * (o**2).sum()
    return total
