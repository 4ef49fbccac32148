"""Memory estimates of the icl_outliers experiments: they grow with every size field, a config that
is in range but far too large for the machine is refused before anything runs, and (slow) the
estimate matches the peak RSS of a real run within a factor of 2."""

from __future__ import annotations

import pytest
from memkit import assert_refused, estimate, measure

from ssmlab.memory import LIMIT_ENV, check_memory
from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
EXPERIMENTS = sorted(k for k in REG if k.startswith("icl_outliers/"))


# (experiment, one override that makes a size larger than the quick profile's)
GROWS = [
    ("icl_outliers/tolerance", "n_test=4000"),
    ("icl_outliers/tolerance", "l_ts=40"),
    ("icl_outliers/tolerance", "data.d=60"),
    ("icl_outliers/tolerance", "l_tr=200"),  # the state size m = l_tr + 1
    ("icl_outliers/tolerance", "sgd.batch_size=65536"),
    ("icl_outliers/family", "n_test=4000"),
    ("icl_outliers/family", "l_ts=40"),
    ("icl_outliers/family", "model.d_model=64"),
    ("icl_outliers/multihead", "n_test=4000"),
    ("icl_outliers/multihead", "l_ts=40"),
    ("icl_outliers/multihead", "d_model=64"),
    ("icl_outliers/multihead", "sgd.batch_size=65536"),
    ("icl_outliers/iterations", "l_trs=[10, 20, 40, 160]"),
    ("icl_outliers/iterations", "holdout=100000"),
    ("icl_outliers/iterations", "data.d=60"),
    ("icl_outliers/gates", "n_test=4000"),
    ("icl_outliers/gates", "l_ts=40"),
    ("icl_outliers/gates", "data.d=60"),
    ("icl_outliers/attention", "n_probe=100000"),
    ("icl_outliers/attention", "l_tr=40"),
    ("icl_outliers/attention", "sgd.batch_size=65536"),
    ("icl_outliers/placement", "n_test=4000"),
    ("icl_outliers/placement", "l_ts=40"),
    ("icl_outliers/placement", "model.n_layers=6"),
    ("icl_outliers/placement", "model.d_model=64"),
    ("icl_outliers/placement", "model.mixer_kwargs.mamba.expand=4"),
    ("icl_outliers/placement", "sgd.batch_size=65536"),
    ("icl_outliers/poisoning", "data.T=128"),
    ("icl_outliers/poisoning", "data.n_train=60000"),
    ("icl_outliers/poisoning", "model.d_model=64"),
    ("icl_outliers/poisoning", "model.depth=4"),
    ("icl_outliers/poisoning", "train.batch_size=65536"),
]


@pytest.mark.parametrize("exp_id, override", GROWS)
def test_estimate_grows_with_the_sizes(exp_id, override):
    assert estimate(exp_id, override) > estimate(exp_id)


def test_estimate_scales_with_the_test_set():
    """The test prompts (n, l + 1, d + 1) and the stacks' activations on all of them at once
    dominate a large run: beyond the fixed runtime the estimate is linear in n_test."""
    def e(n: int) -> int:
        return estimate("icl_outliers/placement", f"n_test={n}")

    assert (e(80000) - e(40000)) / (e(40000) - e(20000)) == pytest.approx(2, rel=0.05)


def test_recurrent_linear_attention_state_is_counted():
    """mode='recurrent' materialises (n, H, L, P, P + 1) running states: per test prompt far
    more than the quadratic form's (n, H, L, L) scores at d_model = 32, L = 21."""
    def per_prompt(*mode: str) -> int:
        def e(n: int) -> int:
            return estimate("icl_outliers/placement", "models=[linear]", f"n_test={n}", *mode)
        return e(8000) - e(4000)

    assert per_prompt("model.mixer_kwargs.linear.mode=recurrent") > 3 * per_prompt()


# (experiment, overrides of a config inside every range whose run cannot fit 16 GiB)
TOO_LARGE = {
    "icl_outliers/tolerance": ("n_test=1000000", "l_ts=16384"),
    "icl_outliers/multihead": ("n_test=1000000", "l_ts=16384"),
    "icl_outliers/family": ("n_test=1000000", "l_ts=16384"),
    "icl_outliers/iterations": ("holdout=1000000", "l_trs=[16384]"),
    "icl_outliers/gates": ("n_test=1000000", "l_ts=4096", "fit_ranks=8"),
    "icl_outliers/attention": ("n_probe=1000000", "l_tr=16384"),
    "icl_outliers/placement": ("n_test=1000000", "model.d_model=4096"),
    "icl_outliers/poisoning": ("data.T=4096", "model.d_model=4096"),
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
    ("icl_outliers/tolerance", {"model": "mamba"},
     ("n_test=20000", "alphas=[0.0, 0.5]", "rules=[flipped]", "sgd.steps=50")),
    ("icl_outliers/placement", {"model": "mamba"}, ("n_test=4000", "sgd.steps=20")),
])
def test_estimate_matches_the_peak_rss_of_a_run(exp_id, cell, overrides):
    """Sizes where the run's tensors (≥ 200 MiB) dwarf the allocator's noise; the baseline is
    taken after imports and the config, so the run pays the lazy imports of its first
    optimiser step and the Numba kernels, as a fresh worker's first run does."""
    r = measure(exp_id, cell, *overrides)
    assert r["status"] == "ok"
    assert 0.5 <= r["measured"] / r["estimate"] <= 2.0, r
