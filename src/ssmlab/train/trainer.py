"""The trainer: one loop for full-batch GD (the theory papers), SGD and Adam (the empirical ones).

A *step* is one optimizer update. With `batch_size=None` an epoch is one full-batch step (the
filtering paper's GD); otherwise an epoch is one shuffled pass over the training set. Online
tasks (fresh prompts every step, the ICL paper's Algorithm 1) pass a sampler instead of tensors.

Recorded every `eval_every` steps into `history`: step, train_loss, train_error (computed on the
batch *before* the update, i.e. at iterate t, which is exact for full-batch GD), lr, and test
loss/error when test data are given; probes run every `probe_every` steps (and once more on the
final iterate when its step is a multiple of `probe_every`) and may return scalars or small lists.
Divergence (non-finite loss or loss > `diverge_loss`) stops the run with status "diverged" and
the step: a result, not a crash. The divergence row is a full history row (train_loss,
train_error, lr, test metrics), so every per-step list in `history` stays aligned with "step".
An update that blows up on the very last step is caught by the final evaluation and reported as
diverged at step `steps`.

With minibatches (`batch_size` set) or online data, train_error and steps_to_converge refer to
the current batch (the only error available without an extra pass), not the full training set.
`trainable_parameters` sets requires_grad=False on frozen parameters, so a model reused with a
smaller `frozen` list keeps the earlier ones frozen: build a fresh model per run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.train.losses import LossName, error_rate, loss_fn

Batch = tuple[Tensor, Tensor]
Sampler = Callable[[int], Batch]  # step -> (inputs, labels), for online data
Probe = Callable[[nn.Module, int], dict[str, Any]]


# Ranges of TrainConfig (sanity limits, not recommendations; what a machine can hold is the
# memory estimate's job). Step counts: 10**8 updates is years of CPU time at the sizes here,
# and admits the callers' "no epoch limit" sentinel epochs=10**6 and eval_every=10**6.
MAX_STEPS = 10**8
MAX_BATCH = 2**24
MAX_LR = 1e6  # admits deliberately divergent steps (the trainer's divergence tests use 1e6)
MAX_WEIGHT_DECAY = 100.0
MAX_GRAD_CLIP = 1e6
MAX_PATIENCE = 10**6
# A float32 loss above ~3.4e38 is inf, already caught as non-finite.
MAX_LOSS = 1e38
MAX_FROZEN = 256


class TrainConfig(StrictModel):
    """Optimisation settings. Defaults are the filtering paper's: hinge loss, full-batch GD.

    Every number has a range (the module constants above): sizes and counts >= 1 (epochs and
    max_steps may be 0: no update), rates > 0, the plateau threshold (relative, as
    ReduceLROnPlateau's default mode) in [0, 1], error rates in [0, 1]."""

    optimizer: Literal["gd", "sgd", "adam", "adamw"] = "gd"
    lr: float = Field(0.1, gt=0, le=MAX_LR)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=MAX_WEIGHT_DECAY)
    loss: LossName = "hinge"
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH, description="None = full batch")
    epochs: int = Field(100, ge=0, le=MAX_STEPS,
                        description="passes over the data (= steps for full batch)")
    max_steps: int | None = Field(None, ge=0, le=MAX_STEPS, description="stop after this many updates")
    grad_clip: float | None = Field(None, gt=0, le=MAX_GRAD_CLIP,
                                    description="clip the global gradient norm")
    schedule: Literal["constant", "plateau", "cosine"] = "constant"
    plateau_factor: float = Field(0.9, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0, le=MAX_PATIENCE)
    plateau_threshold: float = Field(0.01, ge=0, le=1, description="relative improvement")
    eval_every: int = Field(1, ge=1, le=MAX_STEPS, description="record metrics every k steps")
    probe_every: int = Field(1, ge=1, le=MAX_STEPS)
    converge_error: float | None = Field(
        0.0, ge=0, le=1, description="steps_to_converge = first step with train error <= this"
    )
    converge_loss: float | None = Field(
        None, ge=0, le=MAX_LOSS,
        description="and (if set) train loss <= this; e.g. 0 = every hinge margin >= 1"
    )
    stop_on_converge: bool = False
    diverge_loss: float = Field(1e6, gt=0, le=MAX_LOSS)
    frozen: tuple[str, ...] = Field((), max_length=MAX_FROZEN,
                                    description="parameter-name prefixes not trained")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.optimizer == "gd" and self.batch_size is not None:
            raise ValueError("optimizer 'gd' is full-batch: leave batch_size unset or use 'sgd'")
        return self


@dataclass
class TrainResult:
    status: Literal["ok", "diverged"] = "ok"
    steps: int = 0
    diverged_at: int | None = None
    steps_to_converge: int | None = None
    seconds: float = 0.0
    history: dict[str, list] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)


class TrainSetupError(UserError, ValueError):
    """Bad training set-up (unknown frozen prefix, nothing to train). A UserError for the CLI and
    a ValueError for callers written against the first version of the trainer."""


def trainable_names(model: nn.Module, frozen: Iterable[str]) -> list[str]:
    """Names of the parameters `train` updates: requires_grad and not under a frozen prefix.

    Raises TrainSetupError for a prefix that matches no parameter (a typo would otherwise train
    everything silently) and for a model with nothing left to train."""
    frozen = tuple(frozen)
    named = list(model.named_parameters())
    unknown = [p for p in frozen if not any(n.startswith(p) for n, _ in named)]
    if unknown:
        names = sorted({n.split(".")[0] for n, _ in named})
        raise TrainSetupError(f"frozen prefixes {unknown} match no parameter; parameters: {names}")
    out = [n for n, p in named if p.requires_grad and not (frozen and n.startswith(frozen))]
    if not out:
        raise TrainSetupError(
            f"no trainable parameters left (frozen={list(frozen)}, "
            f"parameters: {[n for n, _ in named]})"
        )
    return out


def converged(cfg: TrainConfig, loss: float, error: float) -> bool:
    """The convergence criterion: every criterion that is set holds (none set: never)."""
    checks = [(cfg.converge_error, error), (cfg.converge_loss, loss)]
    active = [(limit, v) for limit, v in checks if limit is not None]
    return bool(active) and all(v <= limit for limit, v in active)


def trainable_parameters(model: nn.Module, frozen: Iterable[str]) -> list[nn.Parameter]:
    """The parameters to optimise; frozen ones get requires_grad=False (see trainable_names)."""
    frozen = tuple(frozen)
    keep = set(trainable_names(model, frozen))
    params = []
    for name, p in model.named_parameters():
        if frozen and name.startswith(frozen):
            p.requires_grad_(False)
        elif name in keep:
            params.append(p)
    return params


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer in ("gd", "sgd"):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _batches(data: Batch, batch_size: int | None, gen: torch.Generator) -> Iterable[Batch]:
    X, y = data
    n = X.shape[0]
    if batch_size is None or batch_size >= n:
        yield X, y
        return
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch_size):
        idx = perm[i : i + batch_size]
        yield X[idx], y[idx]


@torch.no_grad()
def evaluate(model: nn.Module, data: Batch, loss: LossName, batch_size: int = 4096) -> dict[str, float]:
    """Mean loss and error over a dataset, in chunks (eval mode restored afterwards)."""
    was = model.training
    model.eval()
    X, y = data
    tot_l = tot_e = 0.0
    for i in range(0, X.shape[0], batch_size):
        out = model(X[i : i + batch_size])
        k = min(batch_size, X.shape[0] - i)
        tot_l += float(loss_fn(loss, out, y[i : i + batch_size])) * k
        tot_e += float(error_rate(loss, out, y[i : i + batch_size])) * k
    model.train(was)
    n = max(X.shape[0], 1)
    return {"loss": tot_l / n, "error": tot_e / n}


# A progress callback for callers that do not pass one: the CLI sets it around in-process
# (serial) runs to draw a training progress bar; None (the default) everywhere else.
PROGRESS_HOOK: ContextVar[Callable[[int, int], None] | None] = ContextVar(
    "ssmlab_train_progress", default=None)


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_data: Batch | Sampler,
    test_data: Batch | None = None,
    probes: Iterable[Probe] = (),
    regularizer: Callable[[nn.Module, Tensor, Tensor], Tensor] | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train `model` in place and return its history.

    regularizer(model, out, y) -> scalar added to the loss (e.g. the generalization paper's
    collapse-avoiding term). `seed` drives minibatch shuffling only; data and init are the
    caller's (pure functions of their own seeds).
    """
    if progress is None:
        progress = PROGRESS_HOOK.get()
    params = trainable_parameters(model, cfg.frozen)
    opt = make_optimizer(cfg, params)
    sched: Any = None
    if cfg.schedule == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            threshold=cfg.plateau_threshold,
        )
    gen = torch.Generator().manual_seed(seed)
    online = callable(train_data)
    if online:
        steps_per_epoch = 1
    elif cfg.batch_size is None:
        steps_per_epoch = 1
    else:
        steps_per_epoch = math.ceil(train_data[0].shape[0] / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))

    res = TrainResult()
    hist: dict[str, list] = {}

    def record(values: dict[str, Any]) -> None:
        for k, v in values.items():
            hist.setdefault(k, []).append(v)

    def _row(step: int, lval: float, err: float, lr: float) -> dict[str, Any]:
        row: dict[str, Any] = {"step": step, "train_loss": lval, "train_error": err, "lr": lr}
        if test_data is not None:
            ev = evaluate(model, test_data, cfg.loss)
            row |= {"test_loss": ev["loss"], "test_error": ev["error"]}
        return row

    def run_probes(step: int) -> None:
        model.eval()
        with torch.no_grad():
            row: dict[str, Any] = {"probe_step": step}
            for probe in probes:
                row.update(probe(model, step))
        record(row)
        model.train()

    t0 = time.perf_counter()
    step = 0
    probes = list(probes)
    model.train()
    while step < total and res.status == "ok":
        epoch_loss, epoch_n = 0.0, 0
        batches = [train_data(step)] if online else _batches(train_data, cfg.batch_size, gen)
        for X, y in batches:
            if step >= total:
                break
            if probes and step % cfg.probe_every == 0:
                run_probes(step)
            out = model(X)
            loss = loss_fn(cfg.loss, out, y)
            total_loss = loss + regularizer(model, out, y) if regularizer else loss
            lval = float(loss.detach())
            err = float(error_rate(cfg.loss, out.detach(), y))
            if not math.isfinite(float(total_loss.detach())) or lval > cfg.diverge_loss:
                res.status, res.diverged_at = "diverged", step
                record(_row(step, lval, err, opt.param_groups[0]["lr"]))
                break
            if res.steps_to_converge is None and converged(cfg, lval, err):
                res.steps_to_converge = step
            if step % cfg.eval_every == 0:
                record(_row(step, lval, err, opt.param_groups[0]["lr"]))
            if cfg.stop_on_converge and res.steps_to_converge is not None:
                break
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            if cfg.schedule == "cosine":
                sched.step()
            step += 1
            epoch_loss += lval * X.shape[0]
            epoch_n += X.shape[0]
            if progress is not None:
                progress(step, total)
        if cfg.stop_on_converge and res.steps_to_converge is not None:
            break
        if cfg.schedule == "plateau" and epoch_n:
            sched.step(epoch_loss / epoch_n)
    res.steps = step
    res.seconds = time.perf_counter() - t0
    res.history = hist
    if res.status == "ok":
        final: dict[str, float] = {}
        if not online:
            ev = evaluate(model, train_data, cfg.loss)
            final |= {"train_loss": ev["loss"], "train_error": ev["error"]}
        if test_data is not None:
            ev = evaluate(model, test_data, cfg.loss)
            final |= {"test_loss": ev["loss"], "test_error": ev["error"]}
        blew_up = not all(bool(torch.isfinite(p).all()) for p in params) or (
            "train_loss" in final
            and (not math.isfinite(final["train_loss"]) or final["train_loss"] > cfg.diverge_loss)
        )
        if blew_up:  # the last update diverged: nothing in the loop saw it
            res.status, res.diverged_at = "diverged", step
            if "train_loss" in final:
                record(_row(step, final["train_loss"], final["train_error"],
                            opt.param_groups[0]["lr"]))
        else:
            res.final = final
            last = hist.get("probe_step", [None])[-1]
            if probes and step % cfg.probe_every == 0 and last != step:
                run_probes(step)
    return res
