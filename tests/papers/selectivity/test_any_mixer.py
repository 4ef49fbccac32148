"""Any experiment on any mixer (issue 13): every selectivity experiment whose model is a stack of
mixers runs, through its config (`--set` overrides) and its own `run`, with every mixer of the
registry (and the paper's s4d_block), and says when it is a variant."""

from __future__ import annotations

import math
from typing import get_args

import pytest

from ssmlab.layers.registry import MixerName
from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
TINY = ["train.steps=2", "train.n_train=16", "train.n_test=8", "train.batch_size=8"]
# experiment -> (the override that swaps the claim's mixer, overrides that make it tiny)
STACKS = {
    "selectivity/induction": ("mixer={m}", ["sizes=[8]", "data.seq_len=16"]),
    "selectivity/memory": ("mixer={m}", ["models=[mamba_pe]", "seq_lens=[8]", "long_steps=null"]),
    "selectivity/recall": ("mixers=[{m}]", ["grid=[[8, 4]]", "data.seq_len=16",
                                            "data.num_kv_pairs=2"]),
}
PAPER_MIXER = {"selectivity/induction": "mamba_dt", "selectivity/memory": "mamba"}
CASES = [(e, m) for e in STACKS for m in (*get_args(MixerName), "s4d_block")]


@pytest.mark.parametrize("exp_id, mixer", CASES, ids=[f"{e.split('/')[1]}-{m}" for e, m in CASES])
def test_stack_experiment_runs_with_every_mixer(exp_id: str, mixer: str) -> None:
    swap, tiny = STACKS[exp_id]
    cls = REG[exp_id]
    # induction compares `mixer` with `baseline` (Mamba): Mamba itself against Mamba-ΔT
    extra = ["baseline=mamba_dt"] if exp_id == "selectivity/induction" and mixer == "mamba" else []
    cfg = resolve_config(cls, "quick", overrides=[swap.format(m=mixer), *TINY, *tiny, *extra])
    exp = cls()
    cells = exp.cells(cfg)
    assert any(c.get("mixer") == mixer for c in cells) or exp_id == "selectivity/memory"
    for params in cells:
        r = exp.run(cfg, {k: v for k, v in params.items() if not k.startswith("_")}, seed=0)
        assert r.status == "ok", r.reason
        assert r.metrics and all(math.isfinite(v) for v in r.metrics.values()), r.metrics
    variant = exp.variant(cfg)
    if exp_id == "selectivity/recall":
        assert variant == ("" if mixer in ("mamba2", "mamba", "s4d_block") else f"mixers={mixer}")
    elif extra:
        assert variant == "mixer=mamba, baseline=mamba_dt"
    else:
        assert variant == ("" if mixer == PAPER_MIXER[exp_id] else f"mixer={mixer}")
