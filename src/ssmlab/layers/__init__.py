"""Sequence mixers (B, L, d_model) -> (B, L, d_model): S6, Mamba block, S4D, Mamba-2 (SSD),
Mamba-ΔT, RetNet, GLA, softmax / linear / local attention.

Every mixer returns its implied causal L×L matrix (`attention_matrix`) and its `core` (values and
core output) so that `core.output == attention_matrix @ core.values`. Build one by name with
`build_mixer("mamba", d_model=16)` or import the class:

    from ssmlab.layers import MambaBlock, S6, S4D, Mamba2, build_mixer
"""

from ssmlab.layers.attention import LinearAttention, LocalAttention, SoftmaxAttention
from ssmlab.layers.base import Mixer, MixerCore
from ssmlab.layers.gla import GLA
from ssmlab.layers.mamba2 import Mamba2
from ssmlab.layers.mamba_dt import MambaDeltaT
from ssmlab.layers.norms import GatedRMSNorm, RMSNorm
from ssmlab.layers.registry import MIXERS, build_mixer, mixer_names, mixer_options
from ssmlab.layers.retnet import RetNet
from ssmlab.layers.s4d import S4D
from ssmlab.layers.s6 import S6, MambaBlock

__all__ = [
    "GLA", "MIXERS", "GatedRMSNorm", "LinearAttention", "LocalAttention", "Mamba2", "MambaBlock",
    "MambaDeltaT", "Mixer", "MixerCore", "RMSNorm", "RetNet", "S4D", "S6", "SoftmaxAttention",
    "build_mixer", "mixer_names", "mixer_options",
]
