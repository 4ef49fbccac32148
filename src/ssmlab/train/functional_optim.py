"""Functional (pure) optimizer updates for seed-stacked parameters: GD / SGD-momentum, Adam, AdamW.

Why: `ssmlab.train.ensemble` trains S seeds at once with torch.func, so the optimizer must be a
pure function `(params, grads, state, hyper) -> (params, state)` that vmap can batch over the seed
dim. Each rule below is written for ONE seed and transcribes torch.optim's single-tensor CPU code
path (torch 2.x, maximize=False, nesterov=False, dampening=0, amsgrad=False), so a one-seed run
matches `torch.optim.SGD/Adam/AdamW` to float rounding (tests/train/test_functional_optim.py).

Glossary (code -> torch.optim / paper symbol):
  lr -> η (per seed: a 0-d tensor inside vmap, so seeds may have their own schedule),
  momentum -> μ, weight_decay -> λ, m / v -> exp_avg / exp_avg_sq, t -> the 1-based step count,
  buf -> SGD's momentum_buffer.

Hyper-parameters that depend on the step (Adam's bias corrections) are computed in float64 on
the Python side, as torch.optim does, and enter the update as per-seed scalars.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.func import vmap

Params = dict[str, Tensor]
State = dict[str, dict[str, Tensor]]
OptName = Literal["gd", "sgd", "adam", "adamw"]
BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, which make_optimizer uses
EPS = 1e-8


def init_state(name: OptName, params: Params, momentum: float = 0.0) -> State:
    """Zero optimizer state shaped like `params` (stacked or not). Zero momentum buffers equal
    torch's 'buf = grad on the first step' exactly, because μ·0 + g == g in floating point."""
    if name in ("gd", "sgd"):
        return {"buf": {k: torch.zeros_like(p) for k, p in params.items()}} if momentum else {}
    return {
        "m": {k: torch.zeros_like(p) for k, p in params.items()},
        "v": {k: torch.zeros_like(p) for k, p in params.items()},
    }


def sgd_update(
    params: Params, grads: Params, state: State, lr: Tensor, momentum: float, weight_decay: float
) -> tuple[Params, State]:
    """One seed's SGD step: d = g + λp; buf = μ·buf + d (if μ); p = p - η·(buf or d)."""
    new_p: Params = {}
    new_buf: Params = {}
    for k, p in params.items():
        d = grads[k]
        if weight_decay != 0:
            d = d + weight_decay * p
        if momentum != 0:
            d = state["buf"][k] * momentum + d
            new_buf[k] = d
        new_p[k] = p - lr * d
    return new_p, ({"buf": new_buf} if momentum != 0 else {})


def adam_update(
    params: Params,
    grads: Params,
    state: State,
    step_size: Tensor,
    bc2_sqrt: float,
    decay: Tensor,
    weight_decay: float,
    decoupled: bool,
) -> tuple[Params, State]:
    """One seed's Adam(W) step at 1-based step t.

    step_size = η / (1 - β1^t), bc2_sqrt = sqrt(1 - β2^t) and decay = 1 - η·λ (AdamW only) are
    computed by the caller in float64, like torch.optim. Adam adds λp to the gradient; AdamW
    multiplies p by `decay` first."""
    b1, b2 = BETAS
    new_p: Params = {}
    new_m: Params = {}
    new_v: Params = {}
    for k, p in params.items():
        g = grads[k]
        if weight_decay != 0:
            if decoupled:
                p = p * decay
            else:
                g = g + weight_decay * p
        m = torch.lerp(state["m"][k], g, 1 - b1)
        v = state["v"][k] * b2 + (1 - b2) * g * g
        denom = v.sqrt() / bc2_sqrt + EPS
        new_p[k] = p - step_size * (m / denom)
        new_m[k], new_v[k] = m, v
    return new_p, {"m": new_m, "v": new_v}


class FunctionalOptimizer:
    """The update rule of `TrainConfig.optimizer`, applied to seed-stacked params (S, *shape).

    `step(params, grads, state, lrs, t)` returns the new params and state for every seed; the
    caller masks seeds that must not move (diverged / stopped). lrs: one float per seed (the
    schedule may differ per seed, e.g. plateau); t: the 1-based update count (all running seeds
    share it, because a seed that stops never restarts).
    """

    def __init__(self, name: OptName, momentum: float = 0.0, weight_decay: float = 0.0):
        self.name, self.momentum, self.weight_decay = name, momentum, weight_decay
        if name in ("gd", "sgd"):
            self._v = vmap(sgd_update, in_dims=(0, 0, 0, 0, None, None))
        else:
            self._v = vmap(adam_update, in_dims=(0, 0, 0, 0, None, 0, None, None))

    def init(self, params: Params) -> State:
        return init_state(self.name, params, self.momentum)

    def step(
        self, params: Params, grads: Params, state: State, lrs: list[float], t: int
    ) -> tuple[Params, State]:
        ref = next(iter(params.values()))
        as_t = lambda xs: torch.tensor(xs, dtype=ref.dtype, device=ref.device)  # noqa: E731
        if self.name in ("gd", "sgd"):
            return self._v(params, grads, state, as_t(lrs), self.momentum, self.weight_decay)
        b1, b2 = BETAS
        bc1 = 1 - b1**t
        bc2_sqrt = (1 - b2**t) ** 0.5
        step_size = as_t([lr / bc1 for lr in lrs])
        decay = as_t([1 - lr * self.weight_decay for lr in lrs])
        return self._v(
            params, grads, state, step_size, bc2_sqrt, decay, self.weight_decay,
            self.name == "adamw",
        )
