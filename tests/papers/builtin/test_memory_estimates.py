"""The memory estimates against reality: one run of an experiment's largest cell in a fresh
process, its peak RSS increase (ru_maxrss after the run minus after imports and config
resolution) compared with `memory_bytes`. The estimate must be of the right order of magnitude
(within a factor 3 either way: allocator slack, lazily imported torch machinery and Numba's
compiled kernels make exact agreement impossible, but an estimate that misses what the code
materialises is off by far more)."""

from __future__ import annotations

import pytest
from memkit import measure

CASES = [  # (experiment, its largest cell, overrides that shorten training but keep the sizes)
    ("generalization/length_majority", {"T": 400}, ["T_values=[25, 400]", "training.epochs=2"]),
    ("selectivity/recall", {"mixer": "mamba", "d_model": 32, "d_state": 8},
     ["train.steps=20", "mixers=[mamba]", "grid=[[32, 8]]"]),
    ("selectivity/constructions", {"part": "mqar"}, []),
    ("builtin/mixers", {"mixer": "s6"}, ["train.max_steps=20", "mixers=[s6]"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("exp_id, cell, overrides", CASES, ids=[c[0] for c in CASES])
def test_estimate_is_the_right_order_of_magnitude(exp_id, cell, overrides):
    r = measure(exp_id, cell, *overrides)
    assert r["status"] in ("ok", "diverged")
    ratio = r["estimate"] / r["measured"]
    assert 1 / 3 <= ratio <= 3, r
