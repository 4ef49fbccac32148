"""Strict configs, stable hashes and config resolution (profile <- file <- --set <- seeds)."""

from __future__ import annotations

import pytest

from ssmlab.config import build_config, config_hash
from ssmlab.errors import UserError
from ssmlab.papers.builtin.experiments.mixers import Mixers, MixersConfig
from ssmlab.runner.registry import get_experiment, resolve_config
from ssmlab.runner.sweep import cell_hash_of, cfg_key_of


def test_unknown_key_names_key_and_allowed_ones():
    with pytest.raises(UserError) as e:
        build_config(MixersConfig, {"bogus": 1})
    msg = str(e.value)
    assert "'bogus'" in msg and "allowed keys" in msg
    for k in ("d_model", "mixers", "seeds", "train"):
        assert k in msg


def test_unknown_nested_key_lists_the_sections_keys():
    with pytest.raises(UserError) as e:
        build_config(MixersConfig, {"train": {"lrr": 0.1}})
    msg = str(e.value)
    assert "'train.lrr'" in msg and "lr" in msg and "optimizer" in msg


def test_out_of_range_value_is_one_line():
    with pytest.raises(UserError) as e:
        build_config(MixersConfig, {"seeds": 0})
    assert "seeds" in str(e.value) and "\n" not in str(e.value)


def test_hash_is_stable_and_order_independent():
    # a literal: the hash must not change between runs, processes or versions of the code
    assert config_hash({"b": 1, "a": [1, 2.5, "x"]}) == config_hash({"a": [1, 2.5, "x"], "b": 1})
    assert config_hash({"a": 1}) == "015abd7f5cc5"
    cfg = resolve_config(Mixers, "quick")
    assert config_hash(cfg) == config_hash(resolve_config(Mixers, "quick"))
    assert config_hash(cfg) != config_hash(resolve_config(Mixers, "quick", overrides=["vocab=9"]))


def test_seed_count_does_not_change_run_keys():
    a, b = resolve_config(Mixers, "quick", seeds=2), resolve_config(Mixers, "quick", seeds=5)
    assert config_hash(a) != config_hash(b)  # the analysed config differs ...
    assert cfg_key_of(a) == cfg_key_of(b)  # ... but the runs are shared
    assert cell_hash_of(a, {"mixer": "s6"}) == cell_hash_of(b, {"mixer": "s6"})
    assert cell_hash_of(a, {"mixer": "s6"}) != cell_hash_of(a, {"mixer": "s4d"})


def test_resolution_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("vocab: 5\nd_model: 40\ntrain:\n  lr: 0.02\n")
    cfg = resolve_config(Mixers, "quick", f, ["d_model=48", "train.max_steps=7"], seeds=3)
    assert (cfg.vocab, cfg.d_model, cfg.seeds) == (5, 48, 3)
    # nested sections merge: the profile's other train settings survive
    assert (cfg.train.lr, cfg.train.max_steps, cfg.train.optimizer) == (0.02, 7, "adam")


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"profile": "huge"}, "unknown profile 'huge'"),
        ({"overrides": ["nokey=1"]}, "unknown config key 'nokey'"),
        ({"overrides": ["mixers=[s6, nope]"]}, "Input should be 's6'"),
        ({"overrides": ["novalue"]}, "key=value"),
        ({"seeds": 0}, "--seeds must be in 1..1000"),
        ({"config_file": "/nonexistent.yaml"}, "config file not found"),
    ],
    ids=["profile", "key", "mixer", "override-syntax", "seeds", "file"],
)
def test_bad_input_is_user_error(kwargs, needle):
    with pytest.raises(UserError, match=needle):
        resolve_config(Mixers, **kwargs)


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(UserError) as e:
        get_experiment("builtin/nope")
    assert "builtin/mixers" in str(e.value)
