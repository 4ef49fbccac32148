"""Ranges, grids and memory of the generalization experiments (issue 10, defect 2).

Every bad user value must stop at `resolve_config` as a one-line UserError naming the field
(never a traceback from a worker, never a run that allocates hundreds of GiB); every estimate
must grow with the sizes it depends on, and an in-range config too large for the machine must
be refused by `ssmlab.memory.check_memory`."""

from __future__ import annotations

import pytest
from configkit import rejected
from memkit import assert_grows, assert_refused

from ssmlab.errors import UserError
from ssmlab.memory import LIMIT_ENV
from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
GEN = sorted(k for k in REG if k.startswith("generalization/"))

# Bad values every generalization config shares: (override, field the message must name).
COMMON_BAD = [
    ("seeds=0", "seeds"),
    ("seeds=1001", "seeds"),
    ("seeds=true", "seeds"),
    ("task.n_train=0", "task.n_train"),
    ("task.n_train=-1", "task.n_train"),
    ("task.n_train=100000000", "task.n_train"),
    ("task.n_test=true", "task.n_test"),
    ("task.window=0", "task.window"),
    ("task.vocab_size=2", "task.vocab_size"),
    ("task.data_seed=-1", "task.data_seed"),
    ("task.flip_prob=1.5", "task.flip_prob"),
    ("model.d=0", "model.d"),
    ("model.d=100000", "model.d"),
    ("model.N=-1", "model.N"),
    ("model.N=true", "model.N"),
    ("model.s_A=.nan", "model.s_A"),
    ("model.s_A=.inf", "model.s_A"),
    ("model.s_A=-.inf", "model.s_A"),
    ("model.s_A=50", "model.s_A"),
    ("model.a_spread=-1", "model.a_spread"),
    ("model.scan_backend=fussed", "model.scan_backend"),  # a typo: a config error, not a failed run
    ("model.path=scna", "model.path"),
    ("training.epochs=0", "training.epochs"),
    ("training.epochs=10000000", "training.epochs"),
    ("training.batch_size=0", "training.batch_size"),
    ("training.lr=0", "training.lr"),
    ("training.lr=.inf", "training.lr"),
    ("training.lr=1e9", "training.lr"),
    ("training.weight_decay=-1", "training.weight_decay"),
    ("training.grad_clip=.nan", "training.grad_clip"),
    ("training.plateau_patience=-1", "training.plateau_patience"),
    ("training.plateau_threshold=2", "training.plateau_threshold"),
    ("training.collapse_min_std=0.7", "training.collapse_min_std"),
    ("training.diverge_loss=.inf", "training.diverge_loss"),
    ("training.blowup_loss=0", "training.blowup_loss"),
]

# Per experiment: grids (huge, negative, duplicate, empty), tolerances and cross-field rules.
SPECIFIC_BAD = {
    "generalization/length_majority": [
        ("T_values=[0]", "T_values"), ("T_values=[-1, 25]", "T_values"),
        ("T_values=[25, 100000]", "T_values"), ("T_values=[25, 200, 25]", "T_values"),
        ("T_values=[]", "T_values"), ("T_values=[.nan]", "T_values"),
        ("T_values=[true]", "T_values"), ("gap_slope_tol=0", "gap_slope_tol"),
        ("gap_slope_tol=.inf", "gap_slope_tol"), ("paper_tol=2", "paper_tol"),
    ],
    "generalization/length_listops": [
        ("T_values=[100, 100]", "T_values"), ("T_values=[]", "T_values"),
        ("T_values=[70000]", "T_values"),
        ("task.window=150", "task.window"),  # cross-field: the window must fit below every T
        ("T_values=[3, 100]", "task.window"),  # the same rule from the other side
    ],
    "generalization/length_imdb": [
        ("T_values=[100, 100]", "T_values"), ("T_values=[]", "T_values"),
        ("T_values=[0]", "T_values"), ("task.vocab_size=10000000", "task.vocab_size"),
    ],
    "generalization/stability": [
        ("T_values=[]", "T_values"), ("T_values=[50, 50]", "T_values"),
        ("T_values=[100000]", "T_values"), ("sA_values=[0.1, 0.1]", "sA_values"),
        ("sA_values=[.nan]", "sA_values"), ("sA_values=[11]", "sA_values"),
        ("sweep_T_sA=.inf", "sweep_T_sA"), ("sweep_T_sA=-20", "sweep_T_sA"),
        ("sweep_sA_T=0", "sweep_sA_T"), ("sweep_sA_T=1000000", "sweep_sA_T"),
        ("sweep_sA_seeds=0", "sweep_sA_seeds"), ("sweep_sA_seeds=5000", "sweep_sA_seeds"),
        ("sA_end_tol=-0.1", "sA_end_tol"),
    ],
    "generalization/bound_vs_T": [
        ("T_values=[]", "T_values"), ("T_values=[50, 50]", "T_values"),
        ("sA_values=[]", "sA_values"), ("sA_values=[0.0, 0.0]", "sA_values"),
        ("sA_values=[-.inf]", "sA_values"), ("gap_slope_tol=-1", "gap_slope_tol"),
    ],
    "generalization/attention": [
        ("T=1", "T"), ("T=100000", "T"), ("T=.nan", "T"), ("example=-1", "example"),
        ("rel_tol=0", "rel_tol"), ("rel_tol=.inf", "rel_tol"),
        ("example=1000", "example"),  # cross-field: the example indexes the test set
    ],
}

CASES = [(e, o, f) for e in GEN for o, f in COMMON_BAD + SPECIFIC_BAD[e]]


def test_every_experiment_has_a_table():
    assert sorted(SPECIFIC_BAD) == GEN


@pytest.mark.parametrize("exp_id, override, field", CASES,
                         ids=[f"{e.split('/')[1]}:{o}" for e, o, _ in CASES])
def test_bad_values_are_one_line_user_errors_naming_the_field(exp_id, override, field):
    msg = rejected(REG[exp_id], override)
    assert field in msg, msg


def test_stability_window_rule_applies_to_listops_only():
    st = REG["generalization/stability"]
    resolve_config(st, "quick", overrides=["task.window=60"])  # majority ignores the window
    with pytest.raises(UserError, match="task.window"):
        resolve_config(st, "quick", overrides=["task_name=listops", "task.window=60"])
    # an empty s_A sweep is allowed (the T sweep alone), and then sweep_sA_T does not count
    cfg = resolve_config(st, "quick", overrides=["task_name=listops", "sA_values=[]",
                                                 "sweep_sA_T=10", "task.window=40"])
    assert cfg.sA_values == [] and len(st().cells(cfg)) == len(cfg.T_values)


@pytest.mark.parametrize("exp_id", GEN)
def test_profiles_stay_valid_at_the_edges(exp_id):
    """The ranges admit the profiles (defaults key stored results) and their boundary values."""
    cls = REG[exp_id]
    for profile in cls.profiles:
        cfg = resolve_config(cls, profile)
        assert cls.Config.model_validate(cfg.model_dump()) == cfg
    ok = ["seeds=1000", "model.s_A=-10", "model.s_A=10", "training.collapse_min_std=0.5"]
    cfg = resolve_config(cls, "quick", overrides=ok)
    assert (cfg.seeds, cfg.model.s_A) == (1000, 10.0)


# ----------------------------------------------------------------------------- memory

GROWS = {
    "generalization/length_majority": ["T_values=[25, 200, 1600]", "task.n_train=20000",
                                       "model.N=16", "training.batch_size=512"],
    "generalization/length_listops": ["T_values=[100, 200, 900]", "task.n_test=20000",
                                      "model.d=64"],
    "generalization/length_imdb": ["T_values=[100, 200, 3000]", "task.n_train=20000",
                                   "model.N=32"],
    "generalization/stability": ["sweep_sA_T=2000", "T_values=[50, 150, 3000]", "model.d=32"],
    "generalization/bound_vs_T": ["T_values=[50, 150, 3000]", "task.n_train=50000"],
    "generalization/attention": ["T=256", "model.d=64", "task.n_test=20000"],
}


@pytest.mark.parametrize("exp_id, override",
                         [(e, o) for e in GEN for o in GROWS[e]])
def test_memory_estimate_grows_with_the_sizes(exp_id, override):
    assert_grows(exp_id, override)


def test_scan_path_counts_its_states():
    """Backends that materialise every state (B, d, T, N) cost more than the fused kernel
    once the states outweigh the fused kernel's compiled code (~100 MiB)."""
    cls = REG["generalization/length_majority"]
    sizes = ["model.path=scan", "model.d=32", "model.N=32"]
    fused = cls().memory_bytes(resolve_config(cls, "quick", overrides=sizes))
    pscan = cls().memory_bytes(resolve_config(cls, "quick", overrides=[
        *sizes, "model.scan_backend=pscan"]))
    assert pscan > 2 * fused


TOO_BIG = {  # in range, but far beyond any machine's memory
    "generalization/length_majority": ["T_values=[65536]", "task.n_train=10000000"],
    "generalization/length_listops": ["T_values=[65536]", "task.n_train=1000000"],
    "generalization/length_imdb": ["T_values=[65536]", "model.d=4096", "model.N=1024"],
    "generalization/stability": ["T_values=[65536]", "model.d=1024", "model.N=1024"],
    "generalization/bound_vs_T": ["T_values=[65536]", "training.batch_size=100000",
                                  "task.n_train=1000000"],
    "generalization/attention": ["task.n_train=10000000", "model.d=4096", "model.N=1024"],
}


@pytest.mark.parametrize("exp_id", GEN)
def test_a_config_too_large_for_the_machine_is_refused(exp_id, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "64G")
    assert_refused(exp_id, *TOO_BIG[exp_id])
