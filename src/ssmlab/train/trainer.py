"""The trainer: one loop for full-batch GD (the theory papers), SGD and Adam (the empirical ones).

`run_loop` is the only training loop in ssmlab. It owns every decision (probes, divergence,
convergence, history rows, stopping, schedules, final metrics) for S seeds at once and asks a
`Backend` only to compute: `train` runs it with `ModuleBackend` (one model, torch.optim,
autograd; S = 1), `ssmlab.train.ensemble` with S models stacked under torch.func.vmap. A single
run is an ensemble of one.

A *step* is one optimizer update. With `batch_size=None` an epoch is one full-batch step (the
filtering paper's GD); otherwise an epoch is one shuffled pass over the training set. Online
tasks (fresh prompts every step, the ICL paper's Algorithm 1) pass a sampler instead of tensors.

Recorded every `eval_every` steps into `history`: step, train_loss, train_error (computed on the
batch *before* the update, i.e. at iterate t, which is exact for full-batch GD), lr, and test
loss/error when test data are given; probes run every `probe_every` steps (and once more on the
final iterate when its step is a multiple of `probe_every`) and may return scalars or small lists.
keep_best=True ends on the iterate with the lowest training loss seen (the loss at step t is the
iterate before update t; the final iterate competes too) and sets `best_step`; a diverged run
gets its best finite iterate back and stays "diverged" (a kernel fit's early stop).
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
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.train.losses import LossName, error_rate, loss_fn

Batch = tuple[Tensor, Tensor]
Sampler = Callable[[int], Batch]  # step -> (inputs, labels), for online data
Probe = Callable[[nn.Module, int], dict[str, Any]]
Regularizer = Callable[[nn.Module, Tensor, Tensor], Tensor]


# Ranges of TrainConfig (sanity limits, not recommendations; what a machine can hold is the
# memory estimate's job). Step counts: 10**8 updates is years of CPU time at the sizes here,
# (no epoch limit: epochs=None with max_steps; no per-step rows: eval_every=None).
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
    epochs: int | None = Field(100, ge=0, le=MAX_STEPS,
                               description="passes over the data (= steps for full batch); "
                                           "None = no limit (max_steps then required)")
    max_steps: int | None = Field(None, ge=0, le=MAX_STEPS, description="stop after this many updates")
    grad_clip: float | None = Field(None, gt=0, le=MAX_GRAD_CLIP,
                                    description="clip the global gradient norm")
    schedule: Literal["constant", "plateau", "cosine"] = "constant"
    plateau_factor: float = Field(0.9, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0, le=MAX_PATIENCE)
    plateau_threshold: float = Field(0.01, ge=0, le=1, description="relative improvement")
    eval_every: int | None = Field(1, ge=1, le=MAX_STEPS,
                                   description="record metrics every k steps; None = never "
                                               "(divergence rows and final metrics only)")
    probe_every: int = Field(1, ge=1, le=MAX_STEPS)
    converge_error: float | None = Field(
        0.0, ge=0, le=1, description="steps_to_converge = first step with train error <= this"
    )
    converge_loss: float | None = Field(
        None, ge=0, le=MAX_LOSS,
        description="and (if set) train loss <= this; e.g. 0 = every hinge margin >= 1"
    )
    stop_on_converge: bool = False
    keep_best: bool = Field(False, description="end on the iterate with the lowest training "
                                               "loss seen (restored), not on the last one")
    diverge_loss: float = Field(1e6, gt=0, le=MAX_LOSS)
    frozen: tuple[str, ...] = Field((), max_length=MAX_FROZEN,
                                    description="parameter-name prefixes not trained")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.optimizer == "gd" and self.batch_size is not None:
            raise ValueError("optimizer 'gd' is full-batch: leave batch_size unset or use 'sgd'")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("epochs=None (no epoch limit) needs max_steps")
        return self

    def total_steps(self, steps_per_epoch: int) -> int:
        """Updates a run makes at most: epochs × steps_per_epoch, capped by max_steps."""
        if self.epochs is None:
            return self.max_steps
        total = self.epochs * steps_per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def records(self, step: int) -> bool:
        """Whether step `step` gets a history row (divergence rows are always recorded)."""
        return self.eval_every is not None and step % self.eval_every == 0


@dataclass
class TrainResult:
    status: Literal["ok", "diverged"] = "ok"
    steps: int = 0
    diverged_at: int | None = None
    steps_to_converge: int | None = None
    best_step: int | None = None  # keep_best: the step whose iterate was restored
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


# Evaluation runs in chunks of at most EVAL_TOKENS sequence positions (and EVAL_MAX_ROWS rows):
# chunks of 4096 long sequences made every activation hundreds of MB, and the evaluation of
# selectivity/memory's 8192 training sequences at T = 512 took 19.7 s a run against 6.6 s in
# chunks of 64 rows (recall's at L = 32: 5.9 s against 2.7 s in chunks of 1024); short sequences
# (L ≤ 8) keep chunks of 4096 rows.
EVAL_TOKENS = 32768
EVAL_MAX_ROWS = 4096


def eval_rows(row_shape: Sequence[int]) -> int:
    """Rows per evaluation chunk for rows of shape (L, ...): EVAL_TOKENS // L within
    [1, EVAL_MAX_ROWS] (a row without a sequence axis counts as one position)."""
    positions = row_shape[0] if len(row_shape) else 1
    return max(1, min(EVAL_MAX_ROWS, EVAL_TOKENS // max(positions, 1)))


@torch.no_grad()
def evaluate(model: nn.Module, data: Batch, loss: LossName,
             batch_size: int | None = None) -> dict[str, float]:
    """Mean loss and error over a dataset, in chunks of `batch_size` rows (default
    `eval_rows` of X's rows; eval mode restored afterwards)."""
    was = model.training
    model.eval()
    X, y = data
    batch_size = batch_size or eval_rows(X.shape[1:])
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


class Backend(Protocol):
    """How S seeds' models compute: `run_loop` owns every decision (probes, divergence,
    convergence, history rows, stopping, schedules' epoch ends, final metrics); a backend only
    computes. `ModuleBackend` is one model with torch.optim (S = 1); the vectorised ensemble
    (ssmlab.train.ensemble) is S stacked models under torch.func.vmap."""

    S: int
    has_test: bool

    def total_steps(self) -> int: ...
    def start(self) -> None: ...
    def batches(self, step: int, running: list[bool]) -> Iterable[Any]: ...
    def batch_len(self, batch: Any) -> int: ...
    def forward(self, batch: Any) -> tuple[list[float], list[float], list[float]]: ...
    def test_metrics(self) -> list[dict[str, float]]: ...
    def update(self, running: list[bool]) -> None: ...
    def lr(self, s: int) -> float: ...
    def end_epoch(self, s: int, mean_loss: float) -> None: ...
    def probe_model(self, s: int) -> nn.Module: ...
    def final_metrics(self) -> tuple[list[dict[str, float]] | None, list[dict[str, float]] | None]: ...
    def params_finite(self) -> list[bool]: ...
    def snapshot(self, s: int) -> Any: ...
    def restore(self, s: int, snap: Any) -> None: ...
    def finish(self) -> None: ...


def run_loop(backend: Backend, cfg: TrainConfig, probes: list[Probe],
             progress: Callable[[int, int], None] | None) -> list[TrainResult]:
    """The one training loop, per seed of `backend`: see the module docstring for what is
    recorded and when. Seeds stop independently (divergence, stop_on_converge); a stopped seed
    no longer updates. progress(done, total) counts seed-steps."""
    S = backend.S
    t0 = time.perf_counter()
    total = backend.total_steps()
    results = [TrainResult() for _ in range(S)]
    hists: list[dict[str, list]] = [{} for _ in range(S)]
    running = [True] * S
    best: list[tuple[float, int, Any] | None] = [None] * S  # keep_best: (loss, step, snapshot)

    def record(s: int, row: dict[str, Any]) -> None:
        for k, v in row.items():
            hists[s].setdefault(k, []).append(v)

    def run_probes(s: int, step: int) -> None:
        m = backend.probe_model(s)
        m.eval()
        with torch.no_grad():
            row: dict[str, Any] = {"probe_step": step}
            for probe in probes:
                row.update(probe(m, step))
        record(s, row)
        m.train()

    backend.start()
    step = 0
    while step < total and any(running):
        epoch_loss = [0.0] * S
        epoch_n = 0
        for batch in backend.batches(step, running):
            if step >= total or not any(running):
                break
            if probes and step % cfg.probe_every == 0:
                for s in range(S):
                    if running[s]:
                        run_probes(s, step)
            tot_l, lval, err = backend.forward(batch)
            diverged = [running[s] and (not math.isfinite(tot_l[s]) or lval[s] > cfg.diverge_loss)
                        for s in range(S)]
            rows_needed = [running[s] and (diverged[s] or cfg.records(step))
                           for s in range(S)]
            test_ev = backend.test_metrics() if backend.has_test and any(rows_needed) else None
            for s in range(S):
                if not running[s]:
                    continue
                res = results[s]
                if cfg.keep_best and not diverged[s] and (best[s] is None or lval[s] < best[s][0]):
                    best[s] = (lval[s], step, backend.snapshot(s))  # the iterate at `step`
                if not diverged[s] and res.steps_to_converge is None \
                        and converged(cfg, lval[s], err[s]):
                    res.steps_to_converge = step
                if rows_needed[s]:
                    row = {"step": step, "train_loss": lval[s], "train_error": err[s],
                           "lr": backend.lr(s)}
                    if test_ev is not None:
                        row |= {"test_loss": test_ev[s]["loss"], "test_error": test_ev[s]["error"]}
                    record(s, row)
                if diverged[s]:
                    res.status, res.diverged_at, res.steps = "diverged", step, step
                    running[s] = False
                elif cfg.stop_on_converge and res.steps_to_converge is not None:
                    res.steps = step
                    running[s] = False
            if not any(running):
                break
            backend.update(running)
            step += 1
            n = backend.batch_len(batch)
            for s in range(S):
                if running[s]:
                    epoch_loss[s] += lval[s] * n
            epoch_n += n
            if progress is not None:
                progress(step * S, total * S)
        if epoch_n:
            for s in range(S):
                if running[s]:
                    backend.end_epoch(s, epoch_loss[s] / epoch_n)

    # final metrics, end-of-run divergence (an update that blew up on the very last step is
    # seen only here), final probes
    finals_train, finals_test = backend.final_metrics()
    finite = backend.params_finite()
    for s in range(S):
        if running[s]:
            results[s].steps = step
    if cfg.keep_best and _restore_best(backend, results, best, finals_train, finite):
        finals_train, finals_test = backend.final_metrics()
        finite = backend.params_finite()
    for s in range(S):
        res = results[s]
        if res.status != "ok":
            continue
        final: dict[str, float] = {}
        if finals_train is not None:
            final |= {"train_loss": finals_train[s]["loss"], "train_error": finals_train[s]["error"]}
        if finals_test is not None:
            final |= {"test_loss": finals_test[s]["loss"], "test_error": finals_test[s]["error"]}
        tl = final.get("train_loss")
        if not finite[s] or (tl is not None and (not math.isfinite(tl) or tl > cfg.diverge_loss)):
            res.status, res.diverged_at = "diverged", res.steps
            if tl is not None:
                row = {"step": res.steps, "train_loss": tl, "train_error": final["train_error"],
                       "lr": backend.lr(s)}
                if finals_test is not None:
                    row |= {"test_loss": final["test_loss"], "test_error": final["test_error"]}
                record(s, row)
        else:
            res.final = final
            last = hists[s].get("probe_step", [None])[-1]
            if probes and res.steps % cfg.probe_every == 0 and last != res.steps:
                run_probes(s, res.steps)
    backend.finish()
    seconds = time.perf_counter() - t0
    for s in range(S):
        results[s].history = hists[s]
        results[s].seconds = seconds / S
    return results


def _restore_best(backend: Backend, results: list[TrainResult],
                  best: list[tuple[float, int, Any] | None],
                  finals_train: list[dict[str, float]] | None, finite: list[bool]) -> bool:
    """keep_best: put back each seed's best iterate unless the last one is at least as good (a
    diverged seed gets its best finite iterate back and stays 'diverged'). True if any was."""
    restored = False
    for s, b in enumerate(best):
        if b is None:
            continue
        last = finals_train[s]["loss"] if finals_train is not None else math.nan
        last_ok = results[s].status == "ok" and finite[s] and math.isfinite(last)
        if last_ok and last <= b[0]:
            continue
        backend.restore(s, b[2])
        results[s].best_step = b[1]
        restored = True
    return restored


class ModuleBackend:
    """One model trained in place with torch.optim and autograd (S = 1)."""

    S = 1

    def __init__(self, model: nn.Module, cfg: TrainConfig, train_data: Batch | Sampler,
                 test_data: Batch | None, regularizer: Regularizer | None, seed: int):
        self.model, self.cfg, self.regularizer = model, cfg, regularizer
        self.train_data, self.test_data = train_data, test_data
        self.has_test = test_data is not None
        self.online = callable(train_data)
        self.params = trainable_parameters(model, cfg.frozen)
        self.opt = make_optimizer(cfg, self.params)
        self.sched: Any = None
        if cfg.schedule == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                threshold=cfg.plateau_threshold,
            )
        self.gen = torch.Generator().manual_seed(seed)
        self._total_loss: Tensor | None = None

    def total_steps(self) -> int:
        cfg = self.cfg
        if self.online or cfg.batch_size is None:
            per_epoch = 1
        else:
            per_epoch = math.ceil(self.train_data[0].shape[0] / cfg.batch_size)
        total = cfg.total_steps(per_epoch)
        if cfg.schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(total, 1))
        return total

    def start(self) -> None:
        self.model.train()

    def batches(self, step: int, running: list[bool]) -> Iterable[Batch]:
        if self.online:
            return [self.train_data(step)]
        return _batches(self.train_data, self.cfg.batch_size, self.gen)

    def batch_len(self, batch: Batch) -> int:
        return batch[0].shape[0]

    def forward(self, batch: Batch) -> tuple[list[float], list[float], list[float]]:
        X, y = batch
        out = self.model(X)
        loss = loss_fn(self.cfg.loss, out, y)
        total = loss + self.regularizer(self.model, out, y) if self.regularizer else loss
        self._total_loss = total
        return ([float(total.detach())], [float(loss.detach())],
                [float(error_rate(self.cfg.loss, out.detach(), y))])

    def test_metrics(self) -> list[dict[str, float]]:
        return [evaluate(self.model, self.test_data, self.cfg.loss)]

    def update(self, running: list[bool]) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._total_loss.backward()
        self._total_loss = None
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        if self.cfg.schedule == "cosine":
            self.sched.step()

    def lr(self, s: int) -> float:
        return self.opt.param_groups[0]["lr"]

    def end_epoch(self, s: int, mean_loss: float) -> None:
        if self.cfg.schedule == "plateau":
            self.sched.step(mean_loss)

    def probe_model(self, s: int) -> nn.Module:
        return self.model

    def final_metrics(self) -> tuple[list[dict[str, float]] | None, list[dict[str, float]] | None]:
        self._total_loss = None
        tr = None if self.online else [evaluate(self.model, self.train_data, self.cfg.loss)]
        te = [evaluate(self.model, self.test_data, self.cfg.loss)] if self.has_test else None
        return tr, te

    def params_finite(self) -> list[bool]:
        return [all(bool(torch.isfinite(p).all()) for p in self.params)]

    def snapshot(self, s: int) -> list[Tensor]:
        return [p.detach().clone() for p in self.params]

    def restore(self, s: int, snap: list[Tensor]) -> None:
        with torch.no_grad():
            for p, v in zip(self.params, snap, strict=True):
                p.copy_(v)

    def finish(self) -> None:
        return None


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_data: Batch | Sampler,
    test_data: Batch | None = None,
    probes: Iterable[Probe] = (),
    regularizer: Regularizer | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train `model` in place and return its history (`run_loop` with one model).

    regularizer(model, out, y) -> scalar added to the loss (e.g. the generalization paper's
    collapse-avoiding term). `seed` drives minibatch shuffling only; data and init are the
    caller's (pure functions of their own seeds).
    """
    if progress is None:
        progress = PROGRESS_HOOK.get()
    backend = ModuleBackend(model, cfg, train_data, test_data, regularizer, seed)
    return run_loop(backend, cfg, list(probes), progress)[0]
