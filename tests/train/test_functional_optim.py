"""The functional update rules match torch.optim step for step (float64, one seed and S seeds
with their own learning rates)."""

from __future__ import annotations

import pytest
import torch

from ssmlab.train.functional_optim import FunctionalOptimizer
from ssmlab.train.trainer import TrainConfig, make_optimizer

CASES = [
    ("gd", 0.0, 0.0),
    ("sgd", 0.9, 0.0),
    ("sgd", 0.5, 0.01),
    ("adam", 0.0, 0.0),
    ("adam", 0.0, 0.05),
    ("adamw", 0.0, 0.05),
]


@pytest.mark.parametrize("name,momentum,wd", CASES)
def test_matches_torch_optim(name, momentum, wd):
    g = torch.Generator().manual_seed(0)
    S, steps = 3, 6
    lrs = [0.1, 0.03, 0.2]
    shapes = {"a": (4, 3), "b": (5,)}
    P0 = {k: torch.randn(S, *s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
    grads = [{k: torch.randn(S, *s, generator=g, dtype=torch.float64) for k, s in shapes.items()}
             for _ in range(steps)]

    # torch.optim, one optimizer per seed, fed the same gradients
    ref = []
    for s in range(S):
        ps = [P0[k][s].clone().requires_grad_(True) for k in shapes]
        cfg = TrainConfig(optimizer=name, lr=lrs[s], momentum=momentum, weight_decay=wd)
        opt = make_optimizer(cfg, ps)
        for t in range(steps):
            for p, k in zip(ps, shapes, strict=True):
                p.grad = grads[t][k][s].clone()
            opt.step()
        ref.append([p.detach() for p in ps])

    fo = FunctionalOptimizer(name, momentum, wd)
    P, state = dict(P0), fo.init(P0)
    for t in range(steps):
        P, state = fo.step(P, grads[t], state, lrs, t + 1)
    for s in range(S):
        for p_ref, k in zip(ref[s], shapes, strict=True):
            torch.testing.assert_close(P[k][s], p_ref, rtol=1e-13, atol=1e-13)
    assert not torch.equal(P["a"], P0["a"])  # it moved
