"""The core idioms in the selectivity folder (issue 15): names are Literals, the init is seeded
without leaking into the global RNG, no "no limit" sentinel, one not-ok note."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import torch

from ssmlab.errors import UserError
from ssmlab.layers.registry import MixerName
from ssmlab.papers.selectivity.experiments import approximation, memory
from ssmlab.papers.selectivity.experiments.common import MIXERS, TrainSpec, block_kwargs, build_lm
from ssmlab.papers.selectivity.experiments.induction import Induction, InductionExpConfig
from ssmlab.papers.selectivity.model import token_lm
from ssmlab.records import RunRecord
from ssmlab.runner.registry import load_registry, resolve_config
from ssmlab.seeding import seeded, split_seed

REG = load_registry()


def test_lm_mixers_are_the_registry_and_s4d_block_and_block_kwargs_builds_each():
    assert set(MIXERS) == set(get_args(MixerName)) | {"s4d_block"}
    for m in MIXERS:
        block_kwargs(m, 4, 4, 2, 32)


def test_name_literals_match_the_tables():
    assert tuple(memory.MODELS) == get_args(memory.ModelName)
    assert approximation.MODELS == get_args(approximation.ModelName)


@pytest.mark.parametrize("exp_id, override, choices", [
    ("selectivity/recall", "mixers=[mamba, mambba]", "'mamba_dt'"),
    ("selectivity/induction", "mixer=s7", "'s4d_block'"),
    ("selectivity/memory", "mixer=lstm", "'gla'"),
    ("selectivity/memory", "models=[mamba_PE]", "'s4d_pe'"),
    ("selectivity/approximation", "models=[s4]", "'s6_trained'"),
    ("selectivity/approximation", "s4d_init=complex", "'real'"),
])
def test_a_mistyped_name_is_a_config_error_naming_field_and_choices(exp_id, override, choices):
    with pytest.raises(UserError) as e:
        resolve_config(REG[exp_id], "quick", overrides=[override])
    field = override.split("=")[0]
    assert field in str(e.value) and choices in str(e.value)


def test_build_lm_is_seeded_and_leaves_the_global_rng_alone():
    with seeded(123):
        before = torch.random.get_rng_state()
        a = build_lm("mamba", 8, 8, 4, 16, seed=3)
        assert torch.equal(torch.random.get_rng_state(), before)
    # the same weights as the former bare global seed
    with seeded(split_seed(3, "init")):
        name, kw = block_kwargs("mamba", 4, 4, 2, 16)
        b = token_lm(8, 8, name, mixer_kwargs=kw, max_len=16)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_s4d_fit_init_is_seeded_and_leaves_the_global_rng_alone():
    cfg = approximation.ApproximationConfig(target={"pieces": 4, "grid": 64}, n_states=(4,),
                                            steps=2)
    target = torch.linspace(0, 1, 64)
    with seeded(7):
        before = torch.random.get_rng_state()
        k1 = approximation.fit_s4d(target, 4, cfg, seed=1)
        assert torch.equal(torch.random.get_rng_state(), before)
    k2 = approximation.fit_s4d(target, 4, cfg, seed=1)
    assert (k1 == k2).all()


@pytest.mark.parametrize("n_train, batch, steps", [(32, 16, 7), (32, 64, 5), (2048, 64, 300),
                                                   (10, 3, 1)])
def test_train_spec_runs_exactly_steps_updates(n_train, batch, steps):
    """No epoch limit (epochs=None, not a sentinel): max_steps is the run's length."""
    tc = TrainSpec(n_train=n_train, batch_size=batch, steps=steps).train_config()
    per_epoch = -(-n_train // batch)
    assert tc.epochs is None and tc.total_steps(per_epoch) == steps


def test_not_ok_runs_are_noted(tmp_path: Path):
    cfg = InductionExpConfig(sizes=(8,))
    runs = [RunRecord("selectivity/induction", "h", {"mixer": m, "d_model": 8}, s, "ok",
                      {"test_acc": 1.0}, {}, {}) for m in ("mamba", "mamba_dt") for s in (0, 1)]
    runs.append(RunRecord("selectivity/induction", "h", {"mixer": "mamba", "d_model": 8}, 2,
                          "diverged", {}, {}, {}, reason="diverged at step 3"))
    (c,) = Induction().analyze(cfg, runs, tmp_path)
    assert c.verdict == "PASS" and "1 diverged" in c.note and "step 3" in c.note


def test_claims_are_specs_only():
    """No hand-built Claim(...) left: every verdict comes from a ClaimSpec and the evaluator."""
    import ssmlab.papers.selectivity as pkg

    root = Path(pkg.__file__).parent
    offenders = [p.name for p in root.rglob("*.py") if "Claim(" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("exp_id", ["selectivity/approximation", "selectivity/constructions",
                                    "selectivity/memory", "selectivity/recall",
                                    "selectivity/induction", "builtin/mixers"])
@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_specs_declare_ref_and_tolerance_source(exp_id, profile):
    import ssmlab.papers.builtin.experiments.mixers  # noqa: F401  (registers builtin/mixers)
    from ssmlab.experiment import REGISTRY
    from ssmlab.runner.registry import resolve_config

    cls = REGISTRY[exp_id]
    specs = cls().specs(resolve_config(cls, profile=profile))
    assert specs
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    for s in specs:
        assert s.ref.strip() and s.tolerance_source.strip() and s.diagnosis is not None
        if s.figure is not None:
            assert s.figure == "main"
