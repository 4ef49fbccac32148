"""Sequence mixers (B, L, d_model) -> (B, L, d_model): S6, Mamba block, S4D, Mamba-2 (SSD),
Mamba-ΔT, softmax / linear / local attention.

Every mixer returns its implied causal L×L matrix (`attention_matrix`) and its `core` (values and
core output) so that `core.output == attention_matrix @ core.values`. Import from the submodules
(`from ssmlab.layers.s6 import MambaBlock`) or build by name with
`ssmlab.layers.registry.build_mixer`.
"""
