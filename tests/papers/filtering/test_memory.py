"""Memory estimates of the filtering experiments: they grow with every size field, a config that
is in range but far too large for the machine is refused before anything runs, and (slow) the
estimate matches the peak RSS of a real run within a factor of 2."""

from __future__ import annotations

import pytest
from memkit import assert_refused, estimate, measure

from ssmlab.memory import LIMIT_ENV, check_memory
from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
EXPERIMENTS = sorted(k for k in REG if k.startswith("filtering/"))


# (experiment, one override that makes a size larger than the quick profile's)
GROWS = [
    ("filtering/alignment", "n_train=200"),
    ("filtering/alignment", "n_test=2000"),
    ("filtering/alignment", "data.L=32"),
    ("filtering/alignment", "data.d=64"),
    ("filtering/alignment", "model.width=64"),
    ("filtering/alignment", "gd.max_steps=40000"),
    ("filtering/convergence", "n_train=200"),
    ("filtering/convergence", "lengths=[8, 16, 32, 64]"),
    ("filtering/convergence", "data.d=64"),
    ("filtering/locality", "n_train=600"),
    ("filtering/locality", "data.L=16"),
    ("filtering/locality", "n_test=4000"),
    ("filtering/lucky", "n_train_stack=400"),
    ("filtering/lucky", "stack.depth=10"),
    ("filtering/lucky", "stack.expand=4"),
    ("filtering/lucky", "data.L=32"),
    ("filtering/gate_ablation", "n_train=400"),
    ("filtering/gate_ablation", "majority.L=32"),
    ("filtering/gate_ablation", "n_test=2000"),
    ("filtering/attention", "sample_sizes=[100, 800]"),
    ("filtering/attention", "data.L=32"),
    ("filtering/attention", "n_test=8000"),
    ("filtering/transformer", "n_train=800"),
    ("filtering/transformer", "locality.L=32"),
    ("filtering/transformer", "majority.L=32"),
    ("filtering/transformer", "n_test=8000"),
    ("filtering/length", "lengths=[8, 16, 64]"),
    ("filtering/length", "n_train=200"),
    ("filtering/length", "data.d=64"),
    ("filtering/samples", "sample_sizes=[2, 4, 8, 64]"),
    ("filtering/samples", "dims=[16, 32, 128]"),
    ("filtering/samples", "data.L=32"),
    ("filtering/scan_orders", "n_train=2000"),
    ("filtering/scan_orders", "data.H=16"),
    ("filtering/scan_orders", "d_model=64"),
    ("filtering/scan_orders", "depth=2"),
    ("filtering/scan_orders_fmnist", "n_train=2000"),
    ("filtering/scan_orders_fmnist", "patch=2"),
    ("filtering/scan_orders_fmnist", "d_model=64"),
    ("filtering/scan_orders_fmnist", "train_cfg.batch_size=128"),
]


@pytest.mark.parametrize("exp_id, override", GROWS)
def test_estimate_grows_with_the_sizes(exp_id, override):
    assert estimate(exp_id, override) > estimate(exp_id)


def test_estimate_scales_with_the_batch_held_in_memory():
    """Full-batch GD on the closed form holds (N, L, L) tensors: beyond the fixed runtime the
    estimate is linear in N and quadratic in L."""
    def e(n: int, L: int) -> int:
        return estimate("filtering/alignment", f"n_train={n}", "n_test=2", f"data.L={L}")

    assert (e(4000, 64) - e(2000, 64)) / (e(2000, 64) - e(1000, 64)) == pytest.approx(2, rel=0.02)
    assert (e(2000, 128) - e(2000, 64)) / (e(2000, 64) - e(2000, 32)) > 3  # linear: 2


# (experiment, overrides of a config inside every range whose run cannot fit 16 GiB)
TOO_LARGE = {
    "filtering/alignment": ("n_train=1000000", "data.L=4096"),
    "filtering/samples": ("sample_sizes=[2, 1000000]", "data.L=4096"),
    "filtering/length": ("n_train=100000", "lengths=[8, 16384]"),
    "filtering/convergence": ("n_train=100000", "lengths=[16384]", "alpha_rs=[0.5]"),
    "filtering/locality": ("n_train=1000000", "data.L=1024"),
    "filtering/lucky": ("n_train_stack=1000000", "stack.depth=64"),
    "filtering/gate_ablation": ("n_train=1000000", "majority.L=4096"),
    "filtering/attention": ("sample_sizes=[1000000]", "data.L=4096"),
    "filtering/transformer": ("n_train=1000000", "majority.L=4096"),
    "filtering/scan_orders": ("n_train=1000000", "data.H=256", "data.W=256"),
    "filtering/scan_orders_fmnist": ("n_train=60000", "pad_to=256", "patch=1",
                                     "d_model=4096"),
}


@pytest.mark.parametrize("exp_id", EXPERIMENTS)
def test_a_config_far_too_large_is_refused(exp_id, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "16G")
    for profile in REG[exp_id].profiles:  # every profile fits
        check_memory(exp_id, REG[exp_id]().memory_bytes(resolve_config(REG[exp_id], profile)), 1)
    assert_refused(exp_id, *TOO_LARGE[exp_id])  # in range: resolve_config accepted it


def test_every_experiment_has_growth_and_refusal_cases():
    assert {e for e, _ in GROWS} == set(EXPERIMENTS) == set(TOO_LARGE)


@pytest.mark.slow
@pytest.mark.parametrize("exp_id, cell, overrides", [
    ("filtering/alignment", {}, ("n_train=2000", "data.L=64", "gd.max_steps=5")),
    ("filtering/scan_orders", {"order": "hilbert"},
     ("n_train=2000", "n_test=2000", "train_cfg.epochs=1")),
])
def test_estimate_matches_the_peak_rss_of_a_run(exp_id, cell, overrides):
    """Sizes where the run's tensors (≥ 200 MiB) dwarf the allocator's noise; the baseline is
    taken after imports and the config, so the run pays the lazy imports of its first
    optimiser step and the Numba kernels, as a fresh worker's first run does."""
    r = measure(exp_id, cell, *overrides)
    assert r["status"] == "ok"
    assert 0.5 <= r["measured"] / r["estimate"] <= 2.0, r


def test_train_history_without_limits_or_rows():
    """eval_every=None: no per-step rows; epochs=None: max_steps bounds the run."""
    from ssmlab.papers.filtering.experiments.common import history_bytes, train_history_bytes
    from ssmlab.train.trainer import TrainConfig

    assert train_history_bytes(TrainConfig(eval_every=None), 100) == history_bytes(2, 6)
    tc = TrainConfig(optimizer="sgd", batch_size=10, epochs=None, max_steps=50, eval_every=5)
    assert train_history_bytes(tc, 1000) == history_bytes(50 // 5 + 2, 6)
    tc = TrainConfig(optimizer="sgd", batch_size=10, epochs=3, eval_every=5)
    assert train_history_bytes(tc, 95) == history_bytes(3 * 10 // 5 + 2, 6)
    for sets in (["train_cfg.epochs=null", "train_cfg.max_steps=40"],
                 ["train_cfg.eval_every=null"]):
        for exp in ("filtering/attention", "filtering/scan_orders"):
            assert REG[exp]().memory_bytes(resolve_config(REG[exp], "quick", overrides=sets)) > 0
