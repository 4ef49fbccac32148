"""The mixer registry: every name builds its class; bad names / options are UserErrors."""

from __future__ import annotations

import pytest

from ssmlab.errors import UserError
from ssmlab.layers.attention import LinearAttention, LocalAttention, SoftmaxAttention
from ssmlab.layers.base import Mixer
from ssmlab.layers.gla import GLA
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.mamba_dt import MambaDeltaT
from ssmlab.layers.registry import MIXERS, build_mixer, mixer_names, mixer_options
from ssmlab.layers.retnet import RetNet
from ssmlab.layers.s4d import S4D
from ssmlab.layers.s6 import S6, MambaBlock


def test_names_map_to_classes():
    assert MIXERS == {"s6": S6, "mamba": MambaBlock, "s4d": S4D, "mamba2": Mamba2,
                      "mamba_dt": MambaDeltaT, "softmax": SoftmaxAttention,
                      "linear": LinearAttention, "local": LocalAttention, "retnet": RetNet,
                      "gla": GLA}
    assert mixer_names() == sorted(MIXERS)
    assert all(issubclass(c, Mixer) for c in MIXERS.values())


def test_every_mixer_accepts_a_backend_option():
    for name in mixer_names():
        assert "backend" in mixer_options(name), name


def test_build_passes_options():
    m = build_mixer("local", 8, window=5, n_heads=2)
    assert isinstance(m, LocalAttention) and m.window == 5 and m.n_heads == 2


def test_unknown_name_and_option_are_user_errors():
    with pytest.raises(UserError, match="unknown mixer 'transformer'"):
        build_mixer("transformer", 8)
    with pytest.raises(UserError, match=r"no option\(s\) \['window'\]"):
        build_mixer("mamba", 8, window=4)


def test_mixer_name_type_lists_the_registry():
    from typing import get_args

    from ssmlab.layers.registry import MixerName

    assert sorted(get_args(MixerName)) == mixer_names()
