"""Seed ensembles: train S seeds of one small model in one process, vectorised over seeds.

Why: the theory papers' figures are seed bands of small models (d = 32, L = 20) trained with
full-batch GD, where one seed's step is a handful of tiny kernels and Python overhead dominates.
Stacking the S copies' parameters along a leading seed dim and running one `torch.func.vmap`-ed
`grad` per step replaces S small steps by one larger step.

    results = train_ensemble(lambda s: Model(seed=s), seeds=[0, 1, 2], cfg=cfg,
                             data_factory=lambda s: (train_data(s), test_data(s)))
    results[i]            # TrainResult of seeds[i], same fields as ssmlab.train.trainer.train
    results.mode          # "vmap" or "loop"; results.reason says why a loop was used

Both modes run the one loop, `trainer.run_loop`: "vmap" with the stacked backend of this module,
"loop" through `train` per seed. Contract: mode="loop" is literally `[train(model_i, cfg, *data_i, probes, regularizer,
seed=seeds[i])]`; mode="vmap" reproduces it (same histories to float rounding, same statuses,
steps, steps_to_converge, final metrics; tests/train/test_ensemble.py) and leaves every model
trained in place, as `train` does. `seed` drives minibatch shuffling only, as in `train`.

Glossary: S = number of seeds; "stacked" tensors carry the seed dim first, params (S, *shape),
inputs (S, n, ...), labels (S, n, ...); "running" seeds are those still updating.

vmap mode, and when "auto" falls back to a loop (the reason is logged at WARNING and stored in
`results.reason`; mode="vmap" raises UserError with it instead):
- every model has the same parameter/buffer names, shapes and dtypes, and the same plain
  (non-parameter) tensor and scalar attributes (a per-seed constant stored as a plain attribute
  would silently be seed 0's in a vmap over one template module);
- every seed's data have the same shapes (the data are stacked along a new seed dim; identical
  tensors are expanded, not copied), and all seeds are offline tensors or all online samplers
  (a sampler must be a pure function of the step, as `train` assumes: a fallback calls it
  again from step 0);
- the forward does not mutate buffers (e.g. BatchNorm running stats; checked on a copy);
- a trial vmapped gradient and evaluation succeed (non-vmappable ops, data-dependent Python
  control flow and random ops such as dropout fail here).

Per-seed behaviour, as in `train`: divergence (a diverged seed stops updating and records status
"diverged" with its step; the others go on), steps_to_converge, stop_on_converge, gradient
clipping (per seed, global norm over that seed's parameters), plateau schedule (per seed),
frozen prefixes, regularizer(model, out, y) (called inside torch.func.functional_call, so it
sees the seed's parameters through `model`).

Probes: a probe receives (model_i, step) exactly as in `train`, where model_i is the seed's own
module with its current parameters copied in (materialised only at probe steps). Probes run for
running seeds only. A probe's cost is therefore one parameter copy plus its own cost per seed.

TrainResult.seconds in vmap mode is the ensemble's wall time divided by S (the seed's share).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from ssmlab.errors import UserError
from ssmlab.train.functional_optim import FunctionalOptimizer
from ssmlab.train.losses import LossName, loss_fn
from ssmlab.train.trainer import (
    PROGRESS_HOOK,
    Batch,
    Probe,
    Regularizer,
    Sampler,
    TrainConfig,
    TrainResult,
    eval_rows,
    make_optimizer,
    run_loop,
    train,
    trainable_names,
    trainable_parameters,
)

log = logging.getLogger(__name__)

Mode = Literal["auto", "vmap", "loop"]
Data = tuple[Batch | Sampler, Batch | None]


class EnsembleResults(list):
    """list[TrainResult] in seed order, plus how the ensemble ran.

    mode: "vmap" or "loop"; reason: why a loop was used ("" when vmap ran or the caller asked
    for the loop); seconds: wall time of the whole ensemble."""

    def __init__(self, results: Iterable[TrainResult], mode: str, reason: str, seconds: float):
        super().__init__(results)
        self.mode, self.reason, self.seconds = mode, reason, seconds


class VmapUnsupported(Exception):
    """Internal: why the vectorised path cannot run this ensemble (message = the reason)."""


def train_ensemble(
    model_factory: Callable[[int], nn.Module],
    seeds: Sequence[int],
    cfg: TrainConfig,
    data_factory: Callable[[int], Data],
    probes: Iterable[Probe] = (),
    regularizer: Regularizer | None = None,
    mode: Mode = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> EnsembleResults:
    """Train model_factory(s) on data_factory(s) = (train_data, test_data) for every s in seeds.

    mode: "auto" (default) vectorises when the checks in the module docstring pass and otherwise
    loops, logging the reason; "vmap" insists (UserError with the reason); "loop" runs `train`
    per seed, building each model and its data just before its run.
    progress(done, total) counts seed-steps (default: trainer.PROGRESS_HOOK, as in `train`)."""
    seeds = _check_seeds(seeds)
    if progress is None:
        progress = PROGRESS_HOOK.get()
    if mode == "loop":
        return _loop(((model_factory(s), data_factory(s)) for s in seeds), seeds, cfg, probes,
                     regularizer, progress, reason="")
    models = [model_factory(s) for s in seeds]
    datas = [data_factory(s) for s in seeds]
    return train_ensemble_models(models, seeds, cfg, datas, probes, regularizer, mode, progress)


def train_ensemble_models(
    models: Sequence[nn.Module],
    seeds: Sequence[int],
    cfg: TrainConfig,
    datas: Sequence[Data],
    probes: Iterable[Probe] = (),
    regularizer: Regularizer | None = None,
    mode: Mode = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> EnsembleResults:
    """As train_ensemble, for models and data built by the caller; the models are trained in
    place (in both modes), so the caller can inspect them afterwards."""
    seeds = _check_seeds(seeds)
    if progress is None:
        progress = PROGRESS_HOOK.get()  # as in train: the CLI's bar when the caller passes none
    if mode not in ("auto", "vmap", "loop"):
        raise UserError(f"ensemble mode {mode!r} is not one of 'auto', 'vmap', 'loop'")
    if len(models) != len(seeds) or len(datas) != len(seeds):
        raise UserError(
            f"got {len(models)} models and {len(datas)} data pairs for {len(seeds)} seeds"
        )
    probes = list(probes)
    if mode == "loop":
        return _loop(zip(models, datas, strict=True), seeds, cfg, probes, regularizer, progress,
                     reason="")
    try:
        runner = _VmapEnsemble(list(models), seeds, cfg, list(datas), probes, regularizer)
    except VmapUnsupported as e:
        if mode == "vmap":
            raise UserError(f"ensemble cannot be vectorised over seeds: {e}") from None
        log.warning("train_ensemble: looping over %d seeds instead of vmap: %s", len(seeds), e)
        return _loop(zip(models, datas, strict=True), seeds, cfg, probes, regularizer, progress,
                     reason=str(e))
    t0 = time.perf_counter()
    results = run_loop(runner, cfg, probes, progress)
    return EnsembleResults(results, "vmap", "", time.perf_counter() - t0)


def _check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UserError("train_ensemble needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct, got {seeds}")
    return seeds


def _loop(
    pairs: Iterable[tuple[nn.Module, Data]],
    seeds: list[int],
    cfg: TrainConfig,
    probes: Iterable[Probe],
    regularizer: Regularizer | None,
    progress: Callable[[int, int], None] | None,
    reason: str,
) -> EnsembleResults:
    t0 = time.perf_counter()
    probes = list(probes)
    out: list[TrainResult] = []
    offset = [0]
    S = len(seeds)

    def prog(step: int, total: int) -> None:
        if progress is not None:
            progress(offset[0] + step, S * total)

    for seed, (model, data) in zip(seeds, pairs, strict=True):
        if len(data) != 2:
            raise UserError("data_factory must return (train_data, test_data); test may be None")
        res = train(model, cfg, data[0], data[1], probes, regularizer, seed=seed, progress=prog)
        offset[0] += res.steps
        out.append(res)
    return EnsembleResults(out, "loop", reason, time.perf_counter() - t0)


# --------------------------------------------------------------------------------- vmap path


class _Objective(nn.Module):
    """forward(X, y) -> (total loss, loss, out) for one seed, so that one functional_call swaps
    the seed's parameters in for both the model and the regularizer."""

    def __init__(self, model: nn.Module, loss: LossName, regularizer: Regularizer | None):
        super().__init__()
        self.m = model
        self.loss = loss
        self.regularizer = regularizer

    def forward(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.m(X)
        loss = loss_fn(self.loss, out, y)
        total = loss + self.regularizer(self.m, out, y) if self.regularizer else loss
        return total, loss, out


def _errors(name: LossName, out: Tensor, y: Tensor) -> Tensor:
    """trainer's error_rate for each seed of stacked outputs: (S, B, ...) -> (S,)."""
    S = out.shape[0]
    if name in ("hinge", "bce"):
        return ((out > 0) != (y > 0)).float().reshape(S, -1).mean(1)
    if name == "ce":
        keep = (y != -100).reshape(S, -1)
        wrong = (out.argmax(-1).reshape(S, -1) != y.reshape(S, -1)) & keep
        return wrong.sum(1).float() / keep.sum(1).float()
    return ((out - y.to(out.dtype)) ** 2).reshape(S, -1).mean(1)


def _structure(model: nn.Module) -> list[tuple[str, str, tuple[int, ...], torch.dtype, str]]:
    out = [("param", n, tuple(p.shape), p.dtype, str(p.device)) for n, p in model.named_parameters()]
    out += [("buffer", n, tuple(b.shape), b.dtype, str(b.device)) for n, b in model.named_buffers()]
    return out


def _plain_attributes(model: nn.Module) -> dict[str, Any]:
    """Public non-module attributes of every submodule: tensors not registered as parameters or
    buffers, and scalars / strings (a per-seed value there would be lost in a template call)."""
    out: dict[str, Any] = {}
    for mname, mod in model.named_modules():
        for k, v in vars(mod).items():
            if k.startswith("_") or k == "training":
                continue
            if isinstance(v, Tensor | int | float | bool | str | tuple):
                out[f"{mname}.{k}" if mname else k] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    try:
        return bool(a == b)
    except Exception:
        return False


def _stack(ts: list[Tensor]) -> Tensor:
    """Stack along a new seed dim; the same tensor for every seed is expanded, not copied."""
    if all(t is ts[0] for t in ts):
        return ts[0].unsqueeze(0).expand(len(ts), *ts[0].shape)
    return torch.stack(ts)


def _pick(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """new where the seed is running, old elsewhere; mask (S,), new/old (S, *shape)."""
    return torch.where(mask.reshape(-1, *([1] * (old.dim() - 1))), new, old)


def _first_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"


class _LrTrack:
    """The learning rate `train` would use: a real torch optimizer on a dummy parameter with the
    same scheduler, so schedules match `train` bit for bit without reimplementing them."""

    def __init__(self, cfg: TrainConfig, total: int):
        self._p = torch.zeros(0, requires_grad=True)
        self.opt = make_optimizer(cfg, [self._p])
        self.kind = cfg.schedule
        self.sched: Any = None
        if cfg.schedule == "plateau":
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
                threshold=cfg.plateau_threshold,
            )
        elif cfg.schedule == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=max(total, 1))

    @property
    def lr(self) -> float:
        return self.opt.param_groups[0]["lr"]

    def after_step(self) -> None:
        if self.kind == "cosine":
            self.opt.step()  # no grad: a no-op that keeps the scheduler's order check quiet
            self.sched.step()

    def end_epoch(self, mean_loss: float) -> None:
        if self.kind == "plateau":
            self.sched.step(mean_loss)


class _VmapEnsemble:
    """One vectorised run; the constructor raises VmapUnsupported with the reason."""

    def __init__(
        self,
        models: list[nn.Module],
        seeds: list[int],
        cfg: TrainConfig,
        datas: list[Data],
        probes: list[Probe],
        regularizer: Regularizer | None,
    ):
        self.models, self.seeds, self.cfg, self.probes = models, seeds, cfg, probes
        self.S = len(models)
        for d in datas:
            if not isinstance(d, tuple | list) or len(d) != 2:
                raise UserError("data_factory must return (train_data, test_data); test may be None")
        # frozen prefixes: same checks and requires_grad flags as train()
        for m in models:
            trainable_parameters(m, cfg.frozen)
        self.names = trainable_names(models[0], cfg.frozen)
        ref_struct, ref_attr = _structure(models[0]), _plain_attributes(models[0])
        for i, m in enumerate(models[1:], 1):
            if _structure(m) != ref_struct:
                raise VmapUnsupported(f"model of seed {seeds[i]} differs in parameter/buffer shapes")
            if trainable_names(m, cfg.frozen) != self.names:
                raise VmapUnsupported(f"model of seed {seeds[i]} trains other parameters")
            attrs = _plain_attributes(m)
            for k in sorted(set(attrs) | set(ref_attr)):
                if not _same(attrs.get(k), ref_attr.get(k)):
                    raise VmapUnsupported(
                        f"plain attribute {k!r} differs between seeds {seeds[0]} and {seeds[i]}"
                        " (register it as a buffer to vectorise)"
                    )

        # data
        trains = [d[0] for d in datas]
        tests = [d[1] for d in datas]
        self.online = callable(trains[0])
        if any(callable(t) != self.online for t in trains):
            raise VmapUnsupported("some seeds have online samplers and others tensors")
        self.samplers: list[Sampler] = list(trains) if self.online else []
        self._cache0: tuple[Tensor, Tensor] | None = None
        self._last: list[Batch] = []
        if self.online:
            first = [s(0) for s in self.samplers]  # step 0's batches, reused by step 0
            self._last = list(first)
            self._cache0 = self._stack_batches(first, "online batch at step 0")
        else:
            self.X, self.y = self._stack_batches(trains, "training data")
        self.has_test = tests[0] is not None
        if any((t is None) != (not self.has_test) for t in tests):
            raise VmapUnsupported("some seeds have test data and others not")
        if self.has_test:
            self.Xt, self.yt = self._stack_batches(tests, "test data")

        # buffers mutated in forward (checked on a copy of seed 0's model)
        Xs = (self._cache0[0] if self.online else self.X)[0, :2]
        self._check_buffers(models[0], Xs)

        # stacked state
        named = [dict(m.named_parameters()) for m in models]
        self.P = {k: torch.stack([nd[k].detach() for nd in named]).clone() for k in self.names}
        rest: dict[str, Tensor] = {}
        for k in named[0]:
            if k not in self.P:
                rest[k] = _stack([nd[k].detach() for nd in named])
        bufs = [dict(m.named_buffers()) for m in models]
        for k in bufs[0]:
            rest[k] = _stack([b[k] for b in bufs])
        self.R = rest
        self.template = models[0]
        self.obj = _Objective(self.template, cfg.loss, regularizer)
        self.opt = FunctionalOptimizer(cfg.optimizer, cfg.momentum, cfg.weight_decay)

        obj, template = self.obj, self.template

        def objective(p: dict[str, Tensor], r: dict[str, Tensor], X: Tensor, y: Tensor):
            state = {f"m.{k}": v for k, v in (p | r).items()}
            total, loss, out = functional_call(obj, state, (X, y))
            return total, (total.detach(), loss.detach(), out.detach())

        def forward(p: dict[str, Tensor], r: dict[str, Tensor], X: Tensor) -> Tensor:
            return functional_call(template, p | r, (X,))

        self._vgrad = vmap(grad(objective, has_aux=True))
        self._vforward = vmap(forward)
        self._vloss = vmap(lambda out, y: loss_fn(cfg.loss, out, y))

        # trial: one vectorised gradient and evaluation on a few samples
        try:
            Xb, yb = (self._cache0 if self.online else (self.X, self.y))
            self._vgrad(self.P, self.R, Xb[:, :2], yb[:, :2])
            if self.has_test:
                with torch.no_grad():
                    self._eval_chunk(self.Xt[:, :2], self.yt[:, :2])
        except Exception as e:  # any failure here means "not vectorisable", with its message
            raise VmapUnsupported(f"vmap trial step failed: {_first_line(e)}") from None

    # -- set-up helpers

    def _stack_batches(self, batches: list[Batch], what: str) -> tuple[Tensor, Tensor]:
        X0, y0 = batches[0]
        for i, (X, y) in enumerate(batches):
            if X.shape != X0.shape or y.shape != y0.shape or X.dtype != X0.dtype or y.dtype != y0.dtype:
                raise VmapUnsupported(
                    f"{what} of seed {self.seeds[i]} has shapes {tuple(X.shape)}/{tuple(y.shape)},"
                    f" seed {self.seeds[0]} has {tuple(X0.shape)}/{tuple(y0.shape)}"
                )
        return _stack([b[0] for b in batches]), _stack([b[1] for b in batches])

    @staticmethod
    def _check_buffers(model: nn.Module, X: Tensor) -> None:
        if not list(model.buffers()):
            return
        try:
            probe = copy.deepcopy(model)
        except Exception as e:
            raise VmapUnsupported(f"model cannot be copied to check its buffers: {_first_line(e)}") from None
        probe.train()
        before = {n: (b._version, b.clone()) for n, b in probe.named_buffers()}
        with torch.no_grad():
            try:
                probe(X)
            except Exception as e:
                raise VmapUnsupported(f"forward on one seed failed: {_first_line(e)}") from None
        for n, b in probe.named_buffers():
            if n not in before or b._version != before[n][0] or not torch.equal(b, before[n][1]):
                raise VmapUnsupported(f"forward mutates buffer {n!r} (e.g. running statistics)")

    # -- per-step pieces

    def _eval_chunk(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = self._vforward(self.P, self.R, X)
        return self._vloss(out, y), _errors(self.cfg.loss, out, y)

    @torch.no_grad()
    def _evaluate(self, X: Tensor, y: Tensor) -> list[dict[str, float]]:
        """trainer.evaluate for every seed (eval mode, same chunks, same float accumulation)."""
        was = self.obj.training
        self.obj.eval()
        n = X.shape[1]
        rows = eval_rows(X.shape[2:])  # trainer.evaluate's chunks: the same float sums
        tot_l = [0.0] * self.S
        tot_e = [0.0] * self.S
        for i in range(0, n, rows):
            k = min(rows, n - i)
            ls, es = self._eval_chunk(X[:, i : i + rows], y[:, i : i + rows])
            for s, (lv, ev) in enumerate(zip(ls.tolist(), es.tolist(), strict=True)):
                tot_l[s] += lv * k
                tot_e[s] += ev * k
        self.obj.train(was)
        n = max(n, 1)
        return [{"loss": lv / n, "error": ev / n} for lv, ev in zip(tot_l, tot_e, strict=True)]

    def _batches(self, step: int, running: list[bool], gens: list[torch.Generator]):
        if self.online:
            if step == 0 and self._cache0 is not None:
                batch, self._cache0 = self._cache0, None
                yield batch
                return
            for s in range(self.S):
                if running[s]:
                    self._last[s] = self.samplers[s](step)
            try:
                yield self._stack_batches(self._last, f"online batch at step {step}")
            except VmapUnsupported as e:
                raise UserError(f"online samplers changed shape mid-run: {e}") from None
            return
        n, bs = self.X.shape[1], self.cfg.batch_size
        if bs is None or bs >= n:
            yield self.X, self.y
            return
        perms = torch.stack([
            torch.randperm(n, generator=g) if running[s] else torch.arange(n)
            for s, g in enumerate(gens)
        ])  # (S, n)
        rows = torch.arange(self.S)[:, None]
        for i in range(0, n, bs):
            idx = perms[:, i : i + bs]  # (S, b)
            yield self.X[rows, idx], self.y[rows, idx]

    def _materialise(self, s: int) -> nn.Module:
        m = self.models[s]
        with torch.no_grad():
            params = dict(m.named_parameters())
            for k, v in self.P.items():
                params[k].copy_(v[s])
        return m

    def _clip(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """clip_grad_norm_ per seed: coefficient max_norm / (‖g‖ + 1e-6), clamped to <= 1."""
        norms = torch.stack([g.reshape(self.S, -1).norm(dim=1) for g in grads.values()])  # (P, S)
        total = norms.norm(dim=0)  # (S,)
        coef = torch.clamp(self.cfg.grad_clip / (total + 1e-6), max=1.0)
        return {k: g * coef.reshape(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}

    # -- the Backend protocol of trainer.run_loop, S seeds at once

    def total_steps(self) -> int:
        cfg = self.cfg
        if self.online or cfg.batch_size is None:
            steps_per_epoch = 1
        else:
            steps_per_epoch = math.ceil(self.X.shape[1] / cfg.batch_size)
        total = cfg.total_steps(steps_per_epoch)
        self._per_seed_lr = cfg.schedule == "plateau"
        self._shared = None if self._per_seed_lr else _LrTrack(cfg, total)
        self._lrs = [_LrTrack(cfg, total) if self._per_seed_lr else self._shared
                     for _ in range(self.S)]
        return total

    def start(self) -> None:
        for m in self.models:
            m.train()
        self.obj.train()
        self._gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        self._opt_state = self.opt.init(self.P)
        self._n_updates = 0
        self._grads: dict[str, Tensor] | None = None

    def batches(self, step: int, running: list[bool]) -> Iterable[Batch]:
        return self._batches(step, running, self._gens)

    def batch_len(self, batch: Batch) -> int:
        return batch[0].shape[1]

    def forward(self, batch: Batch) -> tuple[list[float], list[float], list[float]]:
        X, y = batch
        self._grads, (tot, loss, out) = self._vgrad(self.P, self.R, X, y)
        return tot.tolist(), loss.tolist(), _errors(self.cfg.loss, out, y).tolist()

    def test_metrics(self) -> list[dict[str, float]]:
        return self._evaluate(self.Xt, self.yt)

    def update(self, running: list[bool]) -> None:
        grads, self._grads = self._grads, None
        if self.cfg.grad_clip is not None:
            grads = self._clip(grads)
        self._n_updates += 1
        newP, new_state = self.opt.step(self.P, grads, self._opt_state,
                                        [lr.lr for lr in self._lrs], self._n_updates)
        if all(running):
            self.P, self._opt_state = newP, new_state
        else:
            mask = torch.tensor(running)  # (S,)
            self.P = {k: _pick(mask, newP[k], self.P[k]) for k in self.P}
            self._opt_state = {g: {k: _pick(mask, v, self._opt_state[g][k]) for k, v in d.items()}
                               for g, d in new_state.items()}
        if self._shared is not None:
            self._shared.after_step()

    def lr(self, s: int) -> float:
        return self._lrs[s].lr

    def end_epoch(self, s: int, mean_loss: float) -> None:
        if self._per_seed_lr:
            self._lrs[s].end_epoch(mean_loss)

    def probe_model(self, s: int) -> nn.Module:
        return self._materialise(s)

    def final_metrics(self) -> tuple[list[dict[str, float]] | None, list[dict[str, float]] | None]:
        self._grads = None
        tr = None if self.online else self._evaluate(self.X, self.y)
        te = self._evaluate(self.Xt, self.yt) if self.has_test else None
        return tr, te

    def params_finite(self) -> list[bool]:
        return torch.stack([torch.isfinite(v.reshape(self.S, -1)).all(1)
                            for v in self.P.values()]).all(0).tolist()

    def snapshot(self, s: int) -> dict[str, Tensor]:
        return {k: v[s].clone() for k, v in self.P.items()}

    def restore(self, s: int, snap: dict[str, Tensor]) -> None:
        for k, v in snap.items():
            self.P[k] = self.P[k].clone()
            self.P[k][s] = v

    def finish(self) -> None:
        for s in range(self.S):  # write every seed's parameters back into its model
            self._materialise(s)
