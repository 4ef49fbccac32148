"""builtin/mixers: ranges, grids and memory (issue 10, defect 2). Bad values stop at
`resolve_config` as one-line UserErrors naming the field; the memory estimate grows with the
sizes and refuses an in-range config too large for the machine."""

from __future__ import annotations

import pytest
from configkit import rejected

from ssmlab.errors import UserError
from ssmlab.memory import LIMIT_ENV, check_memory
from ssmlab.papers.builtin.experiments.mixers import Mixers
from ssmlab.runner.registry import resolve_config

BAD = [
    ("seeds=0", "seeds"), ("seeds=1001", "seeds"), ("seed_offset=-1", "seed_offset"),
    ("seq_len=0", "seq_len"), ("seq_len=-1", "seq_len"), ("seq_len=1000000", "seq_len"),
    ("seq_len=.nan", "seq_len"), ("seq_len=true", "seq_len"),
    ("n_tokens=0", "n_tokens"), ("vocab=1", "vocab"), ("vocab=true", "vocab"),
    ("d_model=0", "d_model"), ("d_model=100000", "d_model"), ("n_layers=0", "n_layers"),
    ("n_train=0", "n_train"), ("n_train=100000000", "n_train"), ("n_test=-1", "n_test"),
    ("margin=.nan", "margin"), ("margin=1.5", "margin"),
    ("mixers=[]", "mixers"), ("mixers=[s6, s6]", "mixers"), ("mixers=[lstm]", "mixers"),
    ("train.lr=0", "train.lr"), ("train.lr=.inf", "train.lr"),
    ("train.batch_size=0", "train.batch_size"), ("train.max_steps=-1", "train.max_steps"),
    ("train.max_steps=1000000000000", "train.max_steps"),
    ("train.eval_every=0", "train.eval_every"), ("train.grad_clip=.nan", "train.grad_clip"),
    ("n_tokens=20", "n_tokens"),  # cross-field: the tokens to copy must fit in seq_len (16)
]


@pytest.mark.parametrize("override, field", BAD, ids=[o for o, _ in BAD])
def test_bad_values_are_one_line_user_errors_naming_the_field(override, field):
    msg = rejected(Mixers, override)
    assert field in msg, msg


@pytest.mark.parametrize("override", ["seq_len=256", "d_model=128", "n_layers=8",
                                      "n_train=50000", "train.batch_size=4096",
                                      "mixer_options.s6.d_state=64"])
def test_memory_estimate_grows_with_the_sizes(override):
    base = Mixers().memory_bytes(resolve_config(Mixers, "quick"))
    bigger = Mixers().memory_bytes(resolve_config(Mixers, "quick", overrides=[override]))
    assert isinstance(bigger, int) and bigger > base


def test_quadratic_attention_is_counted():
    """Linear attention in 'quadratic' mode materialises (B, H, L, L): at a long sequence it is
    the largest mixer, and the estimate says so."""
    long = ["seq_len=4096", "n_train=4096", "n_test=4096"]
    both = Mixers().memory_bytes(resolve_config(Mixers, "quick", overrides=long))
    no_attention = Mixers().memory_bytes(resolve_config(
        Mixers, "quick", overrides=[*long, "mixers=[s6, s4d]"]))
    assert both > 5 * no_attention


def test_a_config_too_large_for_the_machine_is_refused(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "64G")
    check_memory("builtin/mixers", Mixers().memory_bytes(resolve_config(Mixers, "quick")), 1)
    cfg = resolve_config(Mixers, "quick", overrides=["seq_len=100000", "n_train=100000"])
    with pytest.raises(UserError, match="exceeds"):
        check_memory("builtin/mixers", Mixers().memory_bytes(cfg), 1)
