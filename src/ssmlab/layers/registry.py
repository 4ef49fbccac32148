"""Mixer registry: configs name mixers by string.

    name        class                                         module
    "s6"        S6 (bare selective SSM)                       ssmlab.layers.s6
    "mamba"     MambaBlock (Mamba-1 block)                    ssmlab.layers.s6
    "s4d"       S4D (diagonal LTI SSM)                        ssmlab.layers.s4d
    "mamba2"    Mamba2 (SSD, scalar decay per head)           ssmlab.layers.mamba2
    "mamba_dt"  MambaDeltaT (Δ along the state dimension)     ssmlab.layers.mamba_dt
    "softmax"   SoftmaxAttention (causal)                     ssmlab.layers.attention
    "linear"    LinearAttention (causal)                      ssmlab.layers.attention
    "local"     LocalAttention (sliding window, causal)       ssmlab.layers.attention
    "retnet"    RetNet (multi-scale retention, fixed decay)   ssmlab.layers.retnet
    "gla"       GLA (gated linear attention, data-dependent)  ssmlab.layers.gla

`build_mixer(name, d_model, **kwargs)` checks the name and the keyword arguments against the
class's constructor and raises `UserError` naming the problem (never a TypeError traceback).
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from ssmlab.errors import UserError
from ssmlab.layers.attention import LinearAttention, LocalAttention, SoftmaxAttention
from ssmlab.layers.base import Mixer
from ssmlab.layers.gla import GLA
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.mamba_dt import MambaDeltaT
from ssmlab.layers.retnet import RetNet
from ssmlab.layers.s4d import S4D
from ssmlab.layers.s6 import S6, MambaBlock

MIXERS: dict[str, type[Mixer]] = {
    "s6": S6,
    "mamba": MambaBlock,
    "s4d": S4D,
    "mamba2": Mamba2,
    "mamba_dt": MambaDeltaT,
    "softmax": SoftmaxAttention,
    "linear": LinearAttention,
    "local": LocalAttention,
    "retnet": RetNet,
    "gla": GLA,
}


# The registry's names as a type, for configs: a misspelt mixer is a validation error naming the
# field and the choices (tests check that it lists exactly MIXERS' keys).
MixerName = Literal["s6", "mamba", "s4d", "mamba2", "mamba_dt", "softmax", "linear", "local",
                    "retnet", "gla"]


def mixer_names() -> list[str]:
    return sorted(MIXERS)


def mixer_class(name: str) -> type[Mixer]:
    try:
        return MIXERS[name]
    except KeyError:
        raise UserError(f"unknown mixer {name!r}; choose one of {mixer_names()}") from None


def mixer_options(name: str) -> list[str]:
    """The keyword arguments a mixer accepts besides d_model."""
    params = inspect.signature(mixer_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "d_model")]


def build_mixer(name: str, d_model: int, **kwargs: Any) -> Mixer:
    """Instantiate the mixer called `name` with width d_model and its own options."""
    allowed = mixer_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise UserError(f"mixer {name!r} has no option(s) {unknown}; allowed: {allowed}")
    return mixer_class(name)(d_model, **kwargs)
