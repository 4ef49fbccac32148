"""builtin/mixers on every mixer of the registry (issue 13): tiny runs through the config and the
experiment's own `run`; a mixer outside the paper's set is a variant."""

from __future__ import annotations

import math
from typing import get_args

import pytest

from ssmlab.layers.registry import MixerName
from ssmlab.runner.registry import load_registry, resolve_config

# d_model 32: Mamba-2's default headdim 64 must divide expand·d_model
TINY = ["seq_len=4", "n_tokens=2", "d_model=32", "n_layers=1", "n_train=16", "n_test=8",
        "train.max_steps=2", "train.batch_size=8", "train.eval_every=1"]


@pytest.mark.parametrize("mixer", get_args(MixerName))
def test_builtin_mixers_runs_with_every_mixer(mixer: str) -> None:
    cls = load_registry()["builtin/mixers"]
    cfg = resolve_config(cls, "quick", overrides=[f"mixers=[{mixer}]", *TINY])
    exp = cls()
    (params,) = exp.cells(cfg)
    r = exp.run(cfg, params, seed=0)
    assert r.status == "ok", r.reason
    assert all(math.isfinite(v) for v in r.metrics.values()), r.metrics
    assert exp.variant(cfg) == ("" if mixer in ("s6", "s4d", "linear") else f"mixers={mixer}")
