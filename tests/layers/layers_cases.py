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
}


def make_mixer(case: str, seed: int = 0, **overrides) -> torch.nn.Module:
    name, kwargs = MIXER_CASES[case]
    torch.manual_seed(seed)
    return build_mixer(name, D_MODEL, **{**kwargs, **overrides}).double()


def randn(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)

