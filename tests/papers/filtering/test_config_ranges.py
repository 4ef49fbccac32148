"""Every number of a filtering config has a range and every grid is bounded and duplicate-free:
bad `--set` values (0, -1, huge sizes, .nan, .inf, true, repeated or empty grids, inconsistent
fields) are one-line UserErrors naming the field, never a run that fails or allocates."""

from __future__ import annotations

import json
import math

import pytest
from configkit import rejected

from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
EXPERIMENTS = sorted(k for k in REG if k.startswith("filtering/"))


# (experiment, overrides, words the one-line message must contain)
CASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("filtering/alignment", ("n_train=0",), ("n_train", "greater than or equal to 2")),
    ("filtering/alignment", ("n_test=-1",), ("n_test",)),
    ("filtering/alignment", ("data.L=1000000",), ("data.L", "less than or equal")),
    ("filtering/alignment", ("data.d=0",), ("data.d",)),
    ("filtering/alignment", ("data.tau=.nan",), ("data.tau",)),
    ("filtering/alignment", ("gd.lr=0",), ("gd.lr", "greater than 0")),
    ("filtering/alignment", ("gd.lr=.inf",), ("gd.lr",)),
    ("filtering/alignment", ("model.width=true",), ("model.width",)),
    ("filtering/alignment", ("gd.max_steps=100000000",), ("gd.max_steps",)),
    ("filtering/alignment", ("gd.error_target=1",), ("gd.error_target",)),
    ("filtering/alignment", ("model.state_size=0",), ("model.state_size",)),
    ("filtering/alignment", ("rho_min=2",), ("rho_min",)),
    ("filtering/alignment", ("data.alpha_c=0.5",), ("data", "alpha_r", "alpha_c")),
    ("filtering/convergence", ("lengths=[8, 8]",), ("lengths", "listed twice")),
    ("filtering/convergence", ("lrs=[]",), ("lrs", "at least 1")),
    ("filtering/convergence", ("lengths=[2]",), ("lengths.0",)),
    ("filtering/convergence", ("lrs=[0.0]",), ("lrs.0",)),
    ("filtering/convergence", ("alpha_rs=[0.5, 1.5]",), ("alpha_rs.1",)),
    ("filtering/convergence", ("alpha_rs=[0.25]",), ("alpha_rs", "0.25", "alpha_c")),
    ("filtering/convergence", ("data.alpha_c=0.375", "alpha_rs=[0.5]", "lengths=[16, 4]"),
     ("lengths value 4", "round(alpha_c*L)=2")),
    ("filtering/convergence", ("lrs=" + json.dumps([0.1 * i + 0.1 for i in range(65)]),),
     ("lrs", "at most 64")),
    ("filtering/convergence", ("gap_tol=-1",), ("gap_tol",)),
    ("filtering/locality", ("deltas_close=[]",), ("deltas_close",)),
    ("filtering/locality", ("deltas_close=[1, 2, 1]",), ("deltas_close", "listed twice")),
    ("filtering/locality", ("deltas_close=[0]",), ("deltas_close.0",)),
    ("filtering/locality", ("deltas_close=[6]",), ("deltas_close", "delta_far")),
    ("filtering/locality", ("data.delta_far=8",), ("data", "delta_far", "L=8")),
    ("filtering/locality", ("history_every=0",), ("history_every",)),
    ("filtering/locality", ("irr_ratio=-1",), ("irr_ratio",)),
    ("filtering/lucky", ("n_probe=300",), ("n_probe", "n_train_stack")),
    ("filtering/lucky", ("stack.depth=0",), ("stack.depth",)),
    ("filtering/lucky", ("stack.d_state=100000",), ("stack.d_state",)),
    ("filtering/lucky", ("stack.expand=1000",), ("stack.expand",)),
    ("filtering/lucky", ("lucky_tol=2",), ("lucky_tol",)),
    ("filtering/gate_ablation", ("datasets=[]",), ("datasets",)),
    ("filtering/gate_ablation", ("datasets=[majority, majority]",), ("datasets", "twice")),
    ("filtering/gate_ablation", ("datasets=[images]",), ("datasets.0",)),
    ("filtering/gate_ablation", ("majority.alpha_r=0.375",), ("majority", "alpha_r")),
    ("filtering/gate_ablation", ("locality.delta_close=6",), ("locality", "delta_close")),
    ("filtering/gate_ablation", ("min_gain=1.5",), ("min_gain",)),
    ("filtering/attention", ("window=17",), ("window=17", "data.L=16")),
    ("filtering/attention", ("window=0",), ("window",)),
    ("filtering/attention", ("sample_sizes=[100, 100]",), ("sample_sizes", "twice")),
    ("filtering/attention", ("sample_sizes=[1]",), ("sample_sizes.0",)),
    ("filtering/attention", ("sample_sizes=[]",), ("sample_sizes",)),
    ("filtering/attention", ("models=[transformer]",), ("models.0",)),
    # a typo is a validation error listing the choices, never a skipped run
    ("filtering/attention", ("models=[mamab]",), ("models.0", "'mamba', 'local', 'softmax'",
                                                  "softmax_bidir")),
    ("filtering/attention", ("chance_tol=0.6",), ("chance_tol",)),
    ("filtering/transformer", ("transformer=local",), ("transformer",)),
    ("filtering/transformer", ("datasets=[majority, majority]",), ("datasets", "twice")),
    ("filtering/transformer", ("learn_threshold=0.4",), ("learn_threshold",)),
    ("filtering/transformer", ("n_train=1",), ("n_train",)),
    ("filtering/length", ("lengths=[8, 8]",), ("lengths", "listed twice")),
    ("filtering/length", ("lengths=[8]",), ("lengths", "at least 2")),
    ("filtering/length", ("lengths=[4, 16]",), ("lengths: L=4", "6 relevant", "2 confusing")),
    ("filtering/length", ("n_confusing=6",), ("n_relevant", "n_confusing")),
    ("filtering/length", ("n_relevant=0",), ("n_relevant",)),
    ("filtering/length", ("slope_tol=-1",), ("slope_tol",)),
    ("filtering/samples", ("sample_sizes=[4, 4]",), ("sample_sizes", "listed twice")),
    ("filtering/samples", ("dims=[2, 8]",), ("dims.0",)),
    ("filtering/samples", ("alpha_rs=[0.25, 0.5]",), ("alpha_rs value 0.25", "alpha_c")),
    ("filtering/samples", ("target_accuracy=0.5",), ("target_accuracy",)),
    ("filtering/scan_orders", ("data.H=1000",), ("data.H",)),
    ("filtering/scan_orders", ("data.W=1",), ("data.W",)),
    ("filtering/scan_orders", ("orders=[hilbert, hilbert]",), ("orders", "twice")),
    ("filtering/scan_orders", ("orders=[spiral]",), ("orders.0",)),
    ("filtering/scan_orders", ("orders=[]",), ("orders",)),
    ("filtering/scan_orders", ("pooling=max",), ("pooling",)),
    ("filtering/scan_orders", ("depth=0",), ("depth",)),
    ("filtering/scan_orders", ("data.far_min=15",), ("data", "far_min=15", "diameter")),
    ("filtering/scan_orders", ("data.H=256", "data.W=256", "data.far_min=480"),
     ("data", "far_min=480", "far enough")),
    ("filtering/scan_orders_fmnist", ("classes=[0, 0]",), ("classes", "twice")),
    ("filtering/scan_orders_fmnist", ("classes=[10]",), ("classes.0",)),
    ("filtering/scan_orders_fmnist", ("classes=[-1, 2]",), ("classes.0",)),
    ("filtering/scan_orders_fmnist", ("classes=[3]",), ("classes", "at least 2")),
    ("filtering/scan_orders_fmnist", ("patch=3",), ("patch=3", "pad_to=32")),
    ("filtering/scan_orders_fmnist", ("patch=0",), ("patch",)),
    ("filtering/scan_orders_fmnist", ("pad_to=27",), ("pad_to",)),
    ("filtering/scan_orders_fmnist", ("n_train=60001",), ("n_train",)),
    ("filtering/scan_orders_fmnist", ("n_test=10001",), ("n_test",)),
    ("filtering/scan_orders_fmnist", ("d_state=0",), ("d_state",)),
]


@pytest.mark.parametrize("exp_id, overrides, words", CASES,
                         ids=[f"{e}:{' '.join(o)[:40]}" for e, o, _ in CASES])
def test_bad_override_is_a_one_line_error_naming_the_field(exp_id, overrides, words):
    msg = rejected(REG[exp_id], *overrides)
    for w in words:
        assert w in msg, (w, msg)


def test_every_experiment_has_cases():
    assert {e for e, _, _ in CASES} == set(EXPERIMENTS)


@pytest.mark.parametrize("exp_id, overrides", [
    ("filtering/convergence", ("lengths=[8, 16, 32, 64, 128]", "alpha_rs=[0.375]")),
    ("filtering/locality", ("deltas_close=[1, 2, 3, 4, 5]",)),
    ("filtering/attention", ("window=16", "sample_sizes=[50]")),
    ("filtering/scan_orders", ("data.far_min=14",)),  # the 8×8 diameter: two cell pairs
    ("filtering/scan_orders_fmnist", ("patch=8", "pad_to=64", "classes=[0, 9]")),
    ("filtering/lucky", ("n_probe=200",)),
])
def test_values_at_the_edges_are_accepted(exp_id, overrides):
    """The cross-field rules refuse only what cannot run: values on their edges pass."""
    cfg = resolve_config(REG[exp_id], "quick", overrides=list(overrides))
    assert cfg.model_dump() != resolve_config(REG[exp_id], "quick").model_dump()
    assert math.isfinite(REG[exp_id]().memory_bytes(cfg))
