"""The task protocol (ssmlab.data.task): every paper's Sampler is pure, its two parts draw from
disjoint streams, and `split` is exactly the two `sample` calls."""

import pytest
import torch

from ssmlab.data import Sampler, Split, split
from ssmlab.papers.filtering.data import LocalityConfig, MajorityConfig
from ssmlab.papers.filtering.locality2d import LocalityGridConfig
from ssmlab.papers.selectivity.data.induction import InductionConfig
from ssmlab.papers.selectivity.data.keep_nth import KeepNthConfig
from ssmlab.papers.selectivity.data.mqar import MQARConfig

SAMPLERS = {
    "filtering majority": MajorityConfig(L=12, d=8),
    "filtering locality": LocalityConfig(L=12, d=8),
    "filtering locality 2-D": LocalityGridConfig(),
    "selectivity keep_nth": KeepNthConfig(),
    "selectivity mqar": MQARConfig(),
    "selectivity induction": InductionConfig(),
}


def _inputs(part) -> torch.Tensor:
    return part.X if hasattr(part, "X") else part.inputs


@pytest.mark.parametrize("name", SAMPLERS)
def test_split_is_both_parts_pure_and_disjoint(name):
    s: Sampler = SAMPLERS[name]
    data = split(s, 3, 10, 6)
    assert isinstance(data, Split)
    train, test = data  # unpacks as (train, test)
    assert _inputs(train).shape[0] == 10 and _inputs(test).shape[0] == 6
    assert torch.equal(_inputs(train), _inputs(s.sample(10, 3, "train")))  # pure
    assert torch.equal(_inputs(test), _inputs(s.sample(6, 3, "test")))
    # the test part is another stream, not a prefix of the train one
    assert not torch.equal(_inputs(s.sample(6, 3, "train")), _inputs(test))
    assert not torch.equal(_inputs(split(s, 4, 10, 6).train), _inputs(train))  # the seed matters


def test_split_carries_meta():
    data = split(MQARConfig(), 0, 4, 4, vocab_size=8192)
    assert data.meta == {"vocab_size": 8192}
