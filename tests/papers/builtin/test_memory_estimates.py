"""The memory estimates against reality: one run of an experiment's largest cell in a fresh
process, its peak RSS increase (ru_maxrss after the run minus after imports and config
resolution) compared with `memory_bytes`. The estimate must be of the right order of magnitude
(within a factor 3 either way: allocator slack, lazily imported torch machinery and Numba's
compiled kernels make exact agreement impossible, but an estimate that misses what the code
materialises is off by far more)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from ssmlab.runner.registry import load_registry, resolve_config
exp_id, cell, overrides = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
cls = load_registry()[exp_id]
cfg = resolve_config(cls, "quick", overrides=overrides)
exp = cls()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = exp.run(cfg, cell, 0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"status": res.status, "measured": (after - before) * 1024,
                  "estimated": exp.memory_bytes(cfg)}))
"""

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
    out = subprocess.run([sys.executable, "-c", SCRIPT, exp_id, json.dumps(cell),
                          json.dumps(overrides)], capture_output=True, text=True, timeout=600,
                         check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["status"] in ("ok", "diverged")
    ratio = r["estimated"] / r["measured"]
    assert 1 / 3 <= ratio <= 3, r
