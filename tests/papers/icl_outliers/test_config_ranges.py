"""Every number of an icl_outliers config has a range and every grid is bounded and
duplicate-free: bad `--set` values (0, -1, huge sizes, .nan, .inf, true, repeated or empty grids,
inconsistent fields) are one-line UserErrors naming the field, never a run that fails or
allocates."""

from __future__ import annotations

import math

import pytest
from configkit import rejected

from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
EXPERIMENTS = sorted(k for k in REG if k.startswith("icl_outliers/"))


# (experiment, overrides, words the one-line message must contain)
CASES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("icl_outliers/tolerance", ("l_tr=0",), ("l_tr", "greater than or equal to 1")),
    ("icl_outliers/tolerance", ("l_ts=-1",), ("l_ts",)),
    ("icl_outliers/tolerance", ("l_ts=100000",), ("l_ts", "less than or equal")),
    ("icl_outliers/tolerance", ("n_test=0",), ("n_test",)),
    ("icl_outliers/tolerance", ("n_test=.nan",), ("n_test",)),
    ("icl_outliers/tolerance", ("sgd.lr=.inf",), ("sgd.lr",)),
    ("icl_outliers/tolerance", ("sgd.batch_size=true",), ("sgd.batch_size",)),
    ("icl_outliers/tolerance", ("sgd.batch_size=100000000",), ("sgd.batch_size",)),
    ("icl_outliers/tolerance", ("sgd.lr_by_model.linear=0",), ("sgd.lr_by_model.linear",)),
    ("icl_outliers/tolerance", ("sgd.lr_by_model.rnn=0.1",), ("sgd.lr_by_model",)),
    ("icl_outliers/tolerance", ("alphas=[0.1, 0.1]",), ("alphas", "twice")),
    ("icl_outliers/tolerance", ("alphas=[0.101, 0.104]",), ("alphas", "2 decimals")),
    ("icl_outliers/tolerance", ("alphas=[1.5]",), ("alphas.0",)),
    ("icl_outliers/tolerance", ("alphas=[]",), ("alphas",)),
    ("icl_outliers/tolerance", ("rules=[flipped, flipped]",), ("rules", "twice")),
    ("icl_outliers/tolerance", ("rules=[inverted]",), ("rules.0",)),
    ("icl_outliers/tolerance", ("models=[mamba, mamba]",), ("models", "twice")),
    ("icl_outliers/tolerance", ("models=[]",), ("models",)),
    ("icl_outliers/tolerance", ("model.n_layers=3",), ("model.n_layers=3", "one-layer")),
    ("icl_outliers/tolerance", ("model.n_layers=0",), ("model.n_layers",)),
    ("icl_outliers/tolerance", ("data.count=bernoulli", "placement=farthest"),
     ("data.count", "placement")),
    ("icl_outliers/tolerance", ("data.M1=20",), ("data", "M1 + M2 + V", "d = 30")),
    ("icl_outliers/tolerance", ("data.d=100000",), ("data.d",)),
    ("icl_outliers/tolerance", ("data.p_a=1",), ("data.p_a",)),
    ("icl_outliers/tolerance", ("data.beta=0",), ("data.beta",)),
    ("icl_outliers/tolerance", ("data.kappa_test=1000",), ("data.kappa_test",)),
    ("icl_outliers/tolerance", ("data.train_shifts=[1, 1]",), ("data", "train_shifts")),
    ("icl_outliers/tolerance", ("data.train_shifts=[0]",), ("data.train_shifts.0",)),
    ("icl_outliers/tolerance", ("err_tol=0",), ("err_tol",)),
    ("icl_outliers/multihead", ("heads=[2, 4]",), ("heads[0] must be 1",)),
    ("icl_outliers/multihead", ("heads=[1, 5]",), ("n_heads 5", "d_model 32")),
    ("icl_outliers/multihead", ("n_test=0",), ("n_test",)),
    ("icl_outliers/iterations", ("M1s=[3, 3]",), ("M1s", "twice")),
    ("icl_outliers/iterations", ("M1s=[2]",), ("M1s.0",)),
    ("icl_outliers/iterations", ("M1s=[20]",), ("M1s value 20", "d = 30")),
    ("icl_outliers/iterations", ("p_as=[1.0]",), ("p_as.0",)),
    ("icl_outliers/iterations", ("p_as=[0.2, 0.2]",), ("p_as", "twice")),
    ("icl_outliers/iterations", ("l_trs=[]",), ("l_trs",)),
    ("icl_outliers/iterations", ("l_trs=[0]",), ("l_trs.0",)),
    ("icl_outliers/iterations", ("resolution=0",), ("resolution",)),
    ("icl_outliers/iterations", ("holdout=0",), ("holdout",)),
    ("icl_outliers/iterations", ("sgd_scaling.steps=0",), ("sgd_scaling.steps",)),
    ("icl_outliers/iterations", ("target_loss=.inf",), ("target_loss",)),
    ("icl_outliers/gates", ("fit_ranks=15",), ("fit_ranks=15", "14 clean")),
    ("icl_outliers/gates", ("fit_ranks=1",), ("fit_ranks",)),
    ("icl_outliers/gates", ("alpha=1.5",), ("alpha",)),
    ("icl_outliers/gates", ("model.n_layers=2",), ("model.n_layers=2",)),
    ("icl_outliers/gates", ("data.count=bernoulli", "placement=closest"), ("data.count",)),
    ("icl_outliers/family", ("members=[gla, gla]",), ("members", "twice")),
    ("icl_outliers/family", ("members=[s4]",), ("members.0",)),
    ("icl_outliers/family", ("model.mixer=gla",), ("model.mixer=gla", "members")),
    ("icl_outliers/family", ("share_alpha=0.5",), ("share_alpha",)),
    ("icl_outliers/family", ("l_ts=1",), ("share_alpha", "no clean example")),
    ("icl_outliers/family", ("alphas=[0.101, 0.104]",), ("alphas", "2 decimals")),
    ("icl_outliers/family", ("model.n_layers=2",), ("model.n_layers=2",)),
    ("icl_outliers/family", ("n_test=0",), ("n_test",)),
    ("icl_outliers/attention", ("models=[stack, stack]",), ("models", "twice")),
    ("icl_outliers/attention", ("stack.n_layers=1",), ("stack.n_layers=1",)),
    ("icl_outliers/attention", ("growth=1",), ("growth",)),
    ("icl_outliers/attention", ("eps_ratio=2",), ("eps_ratio",)),
    ("icl_outliers/attention", ("n_probe=0",), ("n_probe",)),
    ("icl_outliers/attention", ("probe_every=0",), ("probe_every",)),
    ("icl_outliers/attention", ("model.n_layers=2",), ("model.n_layers=2",)),
    ("icl_outliers/attention", ("model.m=0",), ("model.m",)),
    ("icl_outliers/placement", ("data.count=bernoulli",), ("data.count", "placement")),
    ("icl_outliers/placement", ("models=[mamba, linear, mamba]",), ("models", "twice")),
    ("icl_outliers/placement", ("model.mixer_kwargs.mamba.d_state=100000",),
     ("mixer_kwargs.mamba.d_state", "1..1024")),
    ("icl_outliers/placement", ("model.mixer_kwargs.mamba.expand=0",),
     ("mixer_kwargs.mamba.expand",)),
    ("icl_outliers/placement", ("model.mixer_kwargs.mamba.bogus=1",),
     ("mixer_kwargs.mamba.bogus", "no option")),
    ("icl_outliers/placement", ("model.mixer_kwargs.mamba.dt_min=1e300",),
     ("mixer_kwargs.mamba.dt_min",)),
    ("icl_outliers/placement", ("model.mixer_kwargs.rnn.n_heads=1",), ("model.mixer_kwargs",)),
    # a mistyped model name is a config error naming the field and the choices, never a
    # skipped run
    ("icl_outliers/placement", ("models=[mamba, mambaa]",), ("models.1", "'softmax'")),
    ("icl_outliers/tolerance", ("models=[lineer]",), ("models.0", "'linear'")),
    ("icl_outliers/placement", ("model.d_model=1",), ("model.d_model",)),
    ("icl_outliers/placement", ("tol_points=0",), ("tol_points",)),
    ("icl_outliers/placement", ("alpha=-0.1",), ("alpha",)),
    ("icl_outliers/poisoning", ("poison_rate=1.5",), ("poison_rate",)),
    ("icl_outliers/poisoning", ("phrase_len=0",), ("phrase_len",)),
    ("icl_outliers/poisoning", ("baselines=[]",), ("baselines",)),
    ("icl_outliers/poisoning", ("baselines=[linear, linear]",), ("baselines", "twice")),
    ("icl_outliers/poisoning", ("model.mixer=mamba3",), ("model.mixer", "'gla'")),
    ("icl_outliers/poisoning", ("model.mixer=linear",), ("also a baseline",)),
    ("icl_outliers/poisoning", ("model.mixer_kwargs.mamba.bogus=1",),
     ("mixer_kwargs.mamba.bogus", "no option")),
    ("icl_outliers/poisoning", ("position=middle",), ("position",)),
    ("icl_outliers/poisoning", ("data.T=0",), ("data.T",)),
    ("icl_outliers/tolerance", ("model.mixer=gla2",), ("model.mixer", "'paper'")),
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
    ("icl_outliers/tolerance", ("alphas=[0.1, 0.11]", "data.count=bernoulli")),
    ("icl_outliers/iterations", ("M1s=[3, 17]",)),  # M1 + M2 + V = d
    ("icl_outliers/gates", ("fit_ranks=14",)),  # every clean example of the context
    ("icl_outliers/placement", ("model.mixer_kwargs.mamba.d_state=1024",
                                "model.mixer_kwargs.linear.mode=recurrent")),
])
def test_values_at_the_edges_are_accepted(exp_id, overrides):
    """The cross-field rules refuse only what cannot run: values on their edges pass."""
    cfg = resolve_config(REG[exp_id], "quick", overrides=list(overrides))
    assert cfg.model_dump() != resolve_config(REG[exp_id], "quick").model_dump()
    assert math.isfinite(REG[exp_id]().memory_bytes(cfg))
