"""Shared pieces of the icl_outliers experiments: training settings, model factory, online
training (Algorithm 1: SGD on freshly sampled prompts), evaluation helpers.

Seeds: the run seed s gives three disjoint streams (ssmlab.seeding): "train" drives the online
prompt sampler, "test" every evaluation set, "init" the model's random init (w, or the stacks'
weights). The patterns use the standard basis, so they do not depend on the seed.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.data.icl import ICLDataConfig, Patterns, Prompts, make_patterns, sample_train
from ssmlab.errors import UserError
from ssmlab.models.icl import ICLLinearTransformer, ICLMamba, ICLSoftmaxAttention, ICLStack
from ssmlab.seeding import split_seed
from ssmlab.train.trainer import TrainConfig, TrainResult, evaluate, train

ModelKind = Literal["mamba", "linear", "softmax"]
MODEL_LABELS = {"mamba": "Mamba", "linear": "linear Transformer", "softmax": "softmax Transformer"}


class ModelSpec(StrictModel):
    """Which network: the paper's one-layer models (n_layers = 1) or n-layer stacks."""

    n_layers: int = Field(1, ge=1, description="1 = the paper's Eq. 3 model; >1 = ICLStack")
    delta: float = Field(0.2, gt=0, le=0.2, description="init δ of W_B, W_C (paper 0.2)")
    m: int | None = Field(None, ge=1, description="state size m; None = l_tr + 1 (paper)")
    d_model: int = Field(32, ge=2, description="stack width (n_layers > 1 only)")
    mixer_kwargs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model mixer options for the stacks, e.g. "
        "{'linear': {'mode': 'quadratic'}}")


class SGDSpec(StrictModel):
    """Algorithm 1's optimiser; the paper does not publish η, B or the number of steps."""

    lr: float = Field(1.0, gt=0, description="SGD step η")
    batch_size: int = Field(64, ge=1, description="prompts per step B")
    steps: int = Field(2000, ge=1, description="SGD steps")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="'sgd' = Algorithm 1")
    lr_by_model: dict[str, float] = Field(
        default_factory=dict, description="per-model η overriding lr, e.g. {'linear': 0.1}"
    )

    def for_model(self, kind: str) -> SGDSpec:
        """This spec with the model's own η (lr_by_model) as lr."""
        if kind not in self.lr_by_model:
            return self
        return self.model_copy(update={"lr": self.lr_by_model[kind]})


def build_model(kind: str, data: ICLDataConfig, spec: ModelSpec, l_tr: int, seed: int) -> nn.Module:
    """The one-layer models of Sec. 3 (n_layers = 1) or a stack of registry mixers."""
    init = split_seed(seed, "init")
    if spec.n_layers == 1:
        m = spec.m if spec.m is not None else l_tr + 1
        if kind == "mamba":
            return ICLMamba(data.d, m, delta=spec.delta, seed=init)
        if kind == "linear":
            return ICLLinearTransformer(data.d, m, delta=spec.delta, seed=init)
        if kind == "softmax":
            return ICLSoftmaxAttention(data.d, m, delta=spec.delta)
    elif kind in ("mamba", "linear", "softmax"):
        return ICLStack(data.d, kind, n_layers=spec.n_layers, d_model=spec.d_model, seed=init,
                        mixer_kwargs=spec.mixer_kwargs.get(kind, {}))
    raise UserError(f"unknown model {kind!r}; one of mamba, linear, softmax")


def train_sampler(pat: Patterns, data: ICLDataConfig, B: int, l: int, seed: int):
    """Algorithm 1's batches: fresh training prompts each step, from the run's train stream."""
    g = torch.Generator().manual_seed(split_seed(seed, "train"))

    def sample(step: int) -> tuple[Tensor, Tensor]:
        pr = sample_train(pat, data, B, l, g)
        return pr.P, pr.z

    return sample


def eval_generator(seed: int, salt: int = 0) -> torch.Generator:
    """A generator in the run's test stream (salt separates evaluation sets of one run)."""
    return torch.Generator().manual_seed(split_seed(seed, "test") * 1009 + salt)


def train_config(sgd: SGDSpec, steps: int | None = None, eval_every: int | None = None,
                 probe_every: int = 1) -> TrainConfig:
    """Hinge loss, SGD on fresh prompts; metrics recorded ~20 times per run by default."""
    n = sgd.steps if steps is None else steps
    return TrainConfig(optimizer=sgd.optimizer, lr=sgd.lr, batch_size=sgd.batch_size, epochs=n,
                       max_steps=n, loss="hinge", eval_every=eval_every or max(n // 20, 1),
                       probe_every=probe_every, converge_error=None)


def fit(model: nn.Module, pat: Patterns, data: ICLDataConfig, sgd: SGDSpec, l_tr: int,
        seed: int, probes=(), probe_every: int = 1) -> TrainResult:
    """Train on fresh prompts for sgd.steps steps (hinge loss). `sgd` should already be the
    model's own (SGDSpec.for_model)."""
    return train(model, train_config(sgd, probe_every=probe_every),
                 train_sampler(pat, data, sgd.batch_size, l_tr, seed), probes=probes, seed=seed)


def steps_to_loss(model: nn.Module, pat: Patterns, data: ICLDataConfig, sgd: SGDSpec, l_tr: int,
                  seed: int, target: float, rel_resolution: float = 0.05, holdout: int = 256,
                  ) -> tuple[int | None, list[int], list[float]]:
    """SGD until the training-distribution hinge loss (on a fixed held-out set of `holdout`
    prompts from the test stream) is ≤ target, at most sgd.steps. The loss is checked after
    steps 1, 2, 3, ... and then on a geometric grid (next = max(t + 1, ceil(t (1 + r)))), so
    the step count has a relative resolution r at the cost of O(log T / r) evaluations.
    Returns (steps or None, checked steps, losses). Plain SGD has no state, so training in
    chunks is the same as one long run."""
    hold = sample_train(pat, data, holdout, l_tr, eval_generator(seed, 7))
    sampler = train_sampler(pat, data, sgd.batch_size, l_tr, seed)
    steps, losses = [0], [evaluate(model, (hold.P, hold.z), "hinge")["loss"]]
    done = 0
    while losses[-1] > target and done < sgd.steps:
        n = min(max(1, math.ceil(done * rel_resolution)), sgd.steps - done)
        res = train(model, train_config(sgd, steps=n), sampler, seed=seed)
        if res.status != "ok":
            return None, steps, losses
        done += n
        steps.append(done)
        losses.append(evaluate(model, (hold.P, hold.z), "hinge")["loss"])
    return (done if losses[-1] <= target else None), steps, losses


@torch.no_grad()
def error_rate(model: nn.Module, pr: Prompts) -> float:
    """0-1 error of sign(F) against the query's target."""
    model.eval()
    return float(((model(pr.P) > 0) != (pr.z > 0)).float().mean())


def patterns_for(data: ICLDataConfig) -> Patterns:
    return make_patterns(data, seed=0)


def failed_runs_note(runs, key: str = "model", only: str | None = None) -> str:
    """'mamba: 1 of 3 runs diverged (...)' for every cell value (or just `only`) with runs that
    are not ok."""
    parts = []
    for v in sorted({str(r.params.get(key)) for r in runs}):
        if only is not None and v != only:
            continue
        rs = [r for r in runs if str(r.params.get(key)) == v]
        bad = [r for r in rs if r.status != "ok"]
        if bad:
            parts.append(f"{v}: {len(bad)} of {len(rs)} runs {bad[0].status} ({bad[0].reason})")
    return "; ".join(parts)
