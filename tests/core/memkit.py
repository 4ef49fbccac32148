"""Helpers for the memory-estimate tests of every paper: the estimate of a config, the check that
an in-range but far too large config is refused, and (slow tests) the peak RSS of one real run in
a fresh process against its estimate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ssmlab.errors import UserError
from ssmlab.memory import check_memory
from ssmlab.runner.registry import load_registry, resolve_config


def estimate(exp_id: str, *overrides: str) -> int:
    """`memory_bytes` of the quick config with these overrides (a positive int)."""
    cls = load_registry()[exp_id]
    est = cls().memory_bytes(resolve_config(cls, "quick", overrides=list(overrides)))
    assert isinstance(est, int) and est > 0
    return est


def assert_grows(exp_id: str, override: str) -> None:
    assert estimate(exp_id, override) > estimate(exp_id)


def assert_refused(exp_id: str, *too_large: str) -> None:
    """The quick profile fits the machine (SSMLAB_MEMORY_LIMIT, set by the caller) and the
    in-range config `too_large` is refused with the estimate."""
    check_memory(exp_id, estimate(exp_id), 1)
    with pytest.raises(UserError, match=rf"^{exp_id}: estimated peak memory .* exceeds"):
        check_memory(exp_id, estimate(exp_id, *too_large), 1)


MEASURE = r"""
import json, resource, sys
import torch
from ssmlab.runner.registry import load_registry, resolve_config
from ssmlab.runner.worker import seed_everything
exp_id, cell, over = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
cls = load_registry()[exp_id]
cfg = resolve_config(cls, "quick", overrides=over)
params = next(c for c in cls().cells(cfg) if all(c.get(k) == v for k, v in cell.items()))
torch.set_num_threads(1)
seed_everything(0)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
res = cls().run(cfg, params, 0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"status": res.status, "measured": (peak - base) * 1024,
                  "estimate": cls().memory_bytes(cfg)}))
"""


def measure(exp_id: str, cell: dict, *overrides: str) -> dict:
    """One run of the grid cell matching `cell` in a fresh process: its status, its peak RSS
    increase after imports and config (bytes) and the config's estimate."""
    out = subprocess.run([sys.executable, "-c", MEASURE, exp_id, json.dumps(cell), *overrides],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
