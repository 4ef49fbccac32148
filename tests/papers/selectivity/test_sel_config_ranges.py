"""Ranges, grids and memory of the selectivity experiments (issue 10, defect 2).

Every bad user value must stop at `resolve_config` as a one-line UserError naming the field;
every estimate must grow with the sizes it depends on, and an in-range config too large for the
machine must be refused by `ssmlab.memory.check_memory`."""

from __future__ import annotations

import pytest
from configkit import rejected
from memkit import assert_grows, assert_refused

from ssmlab.errors import UserError
from ssmlab.memory import LIMIT_ENV, check_memory
from ssmlab.papers.selectivity.experiments.common import block_parameters
from ssmlab.papers.selectivity.model import count_parameters
from ssmlab.runner.registry import load_registry, resolve_config

REG = load_registry()
SEL = sorted(k for k in REG if k.startswith("selectivity/"))

TRAIN_BAD = [  # the TrainSpec of the trained experiments
    ("train.lr=0", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.lr=1e9", "train.lr"),
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=true", "train.batch_size"),
    ("train.steps=0", "train.steps"), ("train.steps=-1", "train.steps"),
    ("train.steps=100000000", "train.steps"), ("train.grad_clip=.inf", "train.grad_clip"),
    ("train.n_train=0", "train.n_train"), ("train.n_test=100000000", "train.n_test"),
]

BAD = {
    "selectivity/constructions": [
        ("seeds=0", "seeds"), ("grid=0", "grid"), ("grid=-1", "grid"), ("grid=1000", "grid"),
        ("grid=1048576", "grid"), ("grid=true", "grid"), ("haar_tol=.nan", "haar_tol"),
        ("haar_tol=0", "haar_tol"), ("vocab_size=5", "vocab_size"),
        ("vocab_size=100000", "vocab_size"), ("seq_lens=[]", "seq_lens"),
        ("seq_lens=[32, 32]", "seq_lens"), ("seq_lens=[33]", "seq_lens"),
        ("seq_lens=[2]", "seq_lens"), ("seq_lens=[131072]", "seq_lens"),
        ("n_test=0", "n_test"),
    ],
    "selectivity/approximation": [
        ("n_states=[]", "n_states"), ("n_states=[4, 4]", "n_states"), ("n_states=[0]", "n_states"),
        ("n_states=[100000]", "n_states"), ("n_states=[.inf]", "n_states"),
        ("models=[]", "models"), ("models=[s4d, s4d]", "models"), ("models=[lstm]", "models"),
        ("construction_step=0", "construction_step"), ("steps=-1", "steps"),
        ("lr=.inf", "lr"), ("lr=0", "lr"), ("s4d_dt=0", "s4d_dt"), ("s4d_init=complex", "s4d_init"),
        ("fit_min_n=1", "fit_min_n"), ("s4d_slope=.nan", "s4d_slope"),
        ("s4d_slope_tol=0", "s4d_slope_tol"), ("floor=-1", "floor"),
        ("target.grid=1000", "grid"), ("target.grid=0", "target.grid"),
        ("target.pieces=0", "target.pieces"), ("target.min_gap=1", "target.min_gap"),
        ("n_states=[2, 5]", "n_states"),  # cross-field: S4D-Lin needs even N
        ("target.pieces=2048", "pieces"),  # cross-field: more pieces than cells
    ],
    "selectivity/memory": TRAIN_BAD + [
        ("seq_lens=[]", "seq_lens"), ("seq_lens=[16, 16]", "seq_lens"),
        ("seq_lens=[0]", "seq_lens"), ("seq_lens=[100000]", "seq_lens"),
        ("models=[mamba, mamba]", "models"), ("models=[lstm]", "models"),
        ("d_model=0", "d_model"), ("d_model=100000", "d_model"), ("d_state=true", "d_state"),
        ("solve_acc=0", "solve_acc"), ("drop=.nan", "drop"), ("level_tol=-0.1", "level_tol"),
        ("data.vocab_size=1", "data.vocab_size"), ("data.n=0", "data.n"),
        ("data.n=20", "data.n"),  # cross-field: x_n must exist at the smallest T
    ],
    "selectivity/recall": TRAIN_BAD + [
        ("grid=[]", "grid"), ("grid=[[8, 8], [8, 8]]", "grid"), ("grid=[[0, 8]]", "grid"),
        ("grid=[[8, -1]]", "grid"), ("grid=[[8, 8, 8]]", "grid"), ("grid=[[100000, 8]]", "grid"),
        ("mixers=[]", "mixers"), ("mixers=[mamba, mamba]", "mixers"), ("mixers=[lstm]", "mixers"),
        ("expand=0", "expand"), ("d_conv=1", "d_conv"), ("success_acc=1.5", "success_acc"),
        ("data.seq_len=31", "seq_len"), ("data.seq_len=0", "data.seq_len"),
        ("data.power_a=.nan", "data.power_a"), ("data.vocab_size=5", "data.vocab_size"),
        ("data.num_kv_pairs=20", "num_kv_pairs"),  # cross-field: keys / values of the vocabulary
        ("data.seq_len=12", "seq_len=12 too short"),  # cross-field: 4·P <= seq_len (P = 4)
        ("grid=[[6, 8]]", "grid"),  # cross-field: mamba2's headdim 8 must divide 2·d_model
    ],
    "selectivity/induction": TRAIN_BAD + [
        ("sizes=[]", "sizes"), ("sizes=[8, 8]", "sizes"), ("sizes=[0]", "sizes"),
        ("sizes=[5000]", "sizes"), ("mixer=lstm", "mixer"), ("baseline=mamba_dt", "baseline"),
        ("d_state=0", "d_state"), ("tol=-1", "tol"), ("data.seq_len=3", "data.seq_len"),
        ("data.vocab_size=2", "data.vocab_size"), ("data.seq_len=1000000", "data.seq_len"),
    ],
}

CASES = [(e, o, f) for e in SEL for o, f in BAD[e]]


def test_every_experiment_has_a_table():
    assert sorted(BAD) == SEL


@pytest.mark.parametrize("exp_id, override, field", CASES,
                         ids=[f"{e.split('/')[1]}:{o}" for e, o, _ in CASES])
def test_bad_values_are_one_line_user_errors_naming_the_field(exp_id, override, field):
    msg = rejected(REG[exp_id], override)
    assert field in msg, msg


def test_cross_field_rules_that_need_two_values():
    rec = REG["selectivity/recall"]
    # 4·P <= L: 5 pairs fit at L = 20, not at L = 16; 8 pairs never (vocab 16 has 7 keys)
    cfg = resolve_config(rec, "quick", overrides=["data.num_kv_pairs=5", "data.seq_len=20"])
    assert cfg.data.num_kv_pairs == 5
    with pytest.raises(UserError, match="seq_len=16 too short"):
        resolve_config(rec, "quick", overrides=["data.num_kv_pairs=5", "data.seq_len=16"])
    with pytest.raises(UserError, match="num_kv_pairs=8"):
        resolve_config(rec, "quick", overrides=["data.num_kv_pairs=8", "data.seq_len=64"])
    # mamba2's width rule applies only when mamba2 runs; expand changes it
    resolve_config(rec, "quick", overrides=["mixers=[mamba, s4d_block]", "grid=[[6, 8]]"])
    resolve_config(rec, "quick", overrides=["expand=4", "grid=[[6, 8]]"])
    ind = REG["selectivity/induction"]
    with pytest.raises(UserError, match="mamba2"):
        resolve_config(ind, "quick", overrides=["mixer=mamba2", "sizes=[6]"])
    resolve_config(ind, "quick", overrides=["mixer=mamba2", "sizes=[8]"])
    # S4D-Lin's even state sizes: real init or no S4D lifts the rule
    app = REG["selectivity/approximation"]
    resolve_config(app, "quick", overrides=["n_states=[3, 5]", "s4d_init=real"])
    resolve_config(app, "quick", overrides=["n_states=[3, 5]", "models=[s6_construction]"])


@pytest.mark.parametrize("exp_id", SEL)
def test_profiles_stay_valid(exp_id):
    cls = REG[exp_id]
    for profile in cls.profiles:
        cfg = resolve_config(cls, profile)
        assert cls.Config.model_validate(cfg.model_dump()) == cfg
        assert len(cls().cells(cfg)) == len({str(c) for c in cls().cells(cfg)})


# ----------------------------------------------------------------------------- memory

@pytest.mark.parametrize("mixer", ["mamba", "mamba2", "s4d_block", "mamba_dt"])
@pytest.mark.parametrize("d_model, d_state", [(8, 8), (32, 2), (64, 16)])
def test_block_parameter_count_matches_the_built_blocks(mixer, d_model, d_state):
    """The estimate's parameter count is the real one (within 5%)."""
    from ssmlab.papers.selectivity.experiments.common import block_kwargs
    from ssmlab.papers.selectivity.model import build_block

    name, kw = block_kwargs(mixer, d_state, 4, 2, 32)
    real = count_parameters(build_block(name, d_model, **kw))
    assert abs(block_parameters(mixer, d_model, d_state, 4, 2) - real) <= 0.05 * real


GROWS = {
    "selectivity/constructions": ["grid=4096", "seq_lens=[32, 128, 2048]", "n_test=512",
                                  "vocab_size=34"],
    "selectivity/approximation": ["target.grid=8192", "n_states=[2, 4, 8, 16, 32, 64, 512]"],
    "selectivity/memory": ["seq_lens=[16, 32, 256]", "d_model=64", "d_state=32",
                           "train.n_train=8192", "data.vocab_size=4096"],
    "selectivity/recall": ["data.seq_len=256", "grid=[[8, 8], [128, 8]]", "expand=4",
                           "train.n_train=8192", "data.vocab_size=1024"],
    "selectivity/induction": ["data.seq_len=256", "sizes=[8, 64]", "d_state=32",
                              "train.n_train=8192"],
}


@pytest.mark.parametrize("exp_id, override", [(e, o) for e in SEL for o in GROWS[e]])
def test_memory_estimate_grows_with_the_sizes(exp_id, override):
    assert_grows(exp_id, override)


TOO_BIG = {  # in range, but far beyond the machine's memory (SSMLAB_MEMORY_LIMIT below)
    "selectivity/constructions": ["grid=65536"],
    "selectivity/approximation": ["target.grid=65536", "n_states=[2, 1024]"],  # ~4 GiB
    "selectivity/memory": ["seq_lens=[16, 65536]", "d_model=4096", "train.n_train=100000"],
    "selectivity/recall": ["data.seq_len=65536", "grid=[[4096, 1024]]"],
    "selectivity/induction": ["data.seq_len=65536", "sizes=[4096]", "d_state=1024"],
}


@pytest.mark.parametrize("exp_id", SEL)
def test_a_config_too_large_for_the_machine_is_refused(exp_id, monkeypatch):
    # the approximation's largest in-range run needs ~4 GiB: refused on a 1 GiB machine
    monkeypatch.setenv(LIMIT_ENV, "1G" if exp_id == "selectivity/approximation" else "64G")
    assert_refused(exp_id, *TOO_BIG[exp_id])


def test_construction_weights_count_where_they_are_built(monkeypatch):
    """The S4D MQAR construction's width grows like |V|²/4: at |V| = 4096 its weights alone
    need ~1 TiB, in the constructions run and in the recall analysis (construction_sizes)."""
    monkeypatch.setenv(LIMIT_ENV, "64G")
    for exp_id, override in (("selectivity/constructions", "vocab_size=4096"),
                             ("selectivity/recall", "data.vocab_size=4096")):
        cls = REG[exp_id]
        cfg = resolve_config(cls, "quick", overrides=[override])
        with pytest.raises(UserError, match="exceeds"):
            check_memory(exp_id, cls().memory_bytes(cfg), 1)
