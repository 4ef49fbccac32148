"""Any mixer (issue 13): tolerance, gates and placement run with every mixer of the registry in
the gated model's place (`model.mixer`), through the runner (in process, serial) at a tiny
size: every run finishes with finite metrics, and every claim carries the variant string, so
the report keeps it apart from the paper's verdicts."""

from __future__ import annotations

import math

import pytest
import torch

import ssmlab.papers.icl_outliers  # noqa: F401  (registers)
from ssmlab.config import build_config
from ssmlab.errors import UserError
from ssmlab.experiment import REGISTRY
from ssmlab.layers.registry import MIXERS
from ssmlab.runner.registry import resolve_config
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep

DATA = ["data.d=12", "data.M1=3", "data.M2=4", "data.V=3", "l_tr=6", "l_ts=6", "n_test=16"]
TINY = {
    "icl_outliers/tolerance": DATA + ["alphas=[0.0, 0.5, 0.8]", "sgd.steps=3",
                                      "sgd.batch_size=8", "sgd.lr=0.05"],
    "icl_outliers/gates": DATA + ["fit_ranks=4", "sgd.steps=3", "sgd.batch_size=8",
                                  "sgd.lr=0.05"],
    "icl_outliers/placement": DATA + ["model.n_layers=2", "sgd.steps=2", "sgd.batch_size=8",
                                      "seeds_by_model={}"],
}


def expected_variant(eid: str, mixer: str) -> str:
    """The Mamba stack is the paper's own model in the multi-layer placement experiment."""
    return "" if eid == "icl_outliers/placement" and mixer == "mamba" else f"model.mixer={mixer}"


@pytest.mark.parametrize("mixer", sorted(MIXERS))
@pytest.mark.parametrize("eid", sorted(TINY))
def test_experiment_runs_with_every_mixer(eid, mixer, tmp_path):
    torch.set_num_threads(1)
    res = run_sweep(eid, profile="quick", overrides=TINY[eid] + [f"model.mixer={mixer}"],
                    seeds=1, results=tmp_path, executor="serial")
    assert res.statuses == {"ok": res.total} and res.total >= 1, res.statuses
    with Store.open(tmp_path, create=False) as store:
        runs = store.runs(eid)
    assert len(runs) == res.total
    for r in runs:
        bad = {k: v for k, v in r.metrics.items() if not math.isfinite(v)}
        assert not bad, (r.params, bad)
    assert res.claims and {c.variant for c in res.claims} == {expected_variant(eid, mixer)}


def test_variant_is_empty_for_the_paper_set_up():
    for eid in TINY:
        E = REGISTRY[eid]
        assert E().variant(resolve_config(E, "quick")) == ""
        assert E().variant(resolve_config(E, "paper")) == ""


@pytest.mark.parametrize("eid", ["icl_outliers/attention", "icl_outliers/iterations"])
def test_paper_only_experiments_refuse_another_mixer(eid):
    """W_B^T W_C and the theorems' step counts exist only for the paper's model."""
    with pytest.raises(UserError, match="model.mixer=gla"):
        build_config(REGISTRY[eid].Config, {"model": {"mixer": "gla"}})


def test_a_misspelt_mixer_is_a_config_error():
    with pytest.raises(UserError, match="model.mixer"):
        resolve_config(REGISTRY["icl_outliers/tolerance"], "quick", overrides=["model.mixer=glaa"])


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_query_weights_of_a_stack_are_read_shares(mixer):
    """A generic mixer's gate: the query's row of the implied matrix, normalised; chunking the
    prompts does not change it; the paper's model keeps its own gates."""
    from ssmlab.papers.icl_outliers import probes
    from ssmlab.papers.icl_outliers.model import ICLMamba, icl_stack

    g = torch.Generator().manual_seed(0)
    P = torch.randn(5, 7, 13, generator=g)
    net = icl_stack(12, mixer, n_layers=1, d_model=32, seed=1)
    W = probes.query_weights(net, P)
    assert W.shape == (5, 7) and (W >= 0).all()
    torch.testing.assert_close(W.sum(-1), torch.ones(5))
    old, probes.QUERY_WEIGHT_CHUNK = probes.QUERY_WEIGHT_CHUNK, 2
    try:
        torch.testing.assert_close(probes.query_weights(net, P), W)
    finally:
        probes.QUERY_WEIGHT_CHUNK = old
    paper = ICLMamba(12, 7, seed=1)
    assert torch.equal(probes.query_weights(paper, P), paper.gates(P))
    with pytest.raises(UserError):
        probes.query_weights(icl_stack(12, mixer, n_layers=2, d_model=32), P)
