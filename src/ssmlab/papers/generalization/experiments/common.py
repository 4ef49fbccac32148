"""What the generalization paper's experiments share: the training recipe, task builders, one run.

Training recipe (authors' code, gen_err_sel_ssm `train_ssm_block`): Adam, lr 1e-2, weight decay
1e-5, minibatches, ReduceLROnPlateau(factor 0.9, patience 5, threshold 0.01) on the epoch loss,
gradient-norm clipping at 5, BCE-with-logits (binary) or cross-entropy (ListOps) plus the
collapse-avoiding term 10 · max(0, 0.1 - std(sigmoid(logits))) (std over the whole batch of
logits, unbiased, as torch.std). One deviation: ssmlab's trainer steps the scheduler on the mean
loss *without* the collapse term (the authors include it); the term is zero once the outputs
are spread out, which is the regime the schedule matters in.

Divergence, two ways, both stored with status "diverged" (a result, never a crash):
  - a non-finite batch loss (or one above `diverge_loss`, default 1e30, i.e. an overflow) stops
    the run — the authors' code raised on NaN/inf outputs;
  - a run whose mean loss over its last epoch is above `blowup_loss` (1e3, over 1000× the
    chance-level BCE 0.69 / CE 2.3) "blew up and stayed there" — the paper's description of a
    diverged run (loss blown up, s_A stuck near 0.1-0.16). Early spikes are not divergence: at
    s_A ≥ 0 the first batches often have losses of 1e4-1e9 that the clipped Adam steps recover
    from within an epoch or two.

Accuracies: "train" is measured on the (noisy, for Majority) training inputs the model was
trained on, "test" on the clean test set, after the last epoch (the authors' test_models
notebook does the same). gap = train accuracy - test accuracy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.data.imdb import MAX_VOCAB, ImdbConfig, default_imdb_dir, find_imdb, imdb
from ssmlab.data.listops import NUM_CLASSES, VOCAB, ListOpsConfig, listops, source_tokens
from ssmlab.data.task import Split
from ssmlab.experiment import MAX_SEEDS, RunResult
from ssmlab.memory import nbytes
from ssmlab.papers.generalization.data import MAX_SAMPLES, MAX_T, MajorityConfig, majority_bits
from ssmlab.papers.generalization.model import (
    MAX_A_SPREAD,
    MAX_ABS_SA,
    MAX_STATES,
    MAX_WIDTH,
    GenSSMClassifier,
    GenSSMConfig,
    ScanBackend,
)
from ssmlab.papers.generalization.probes import bound_probe, bound_quantities, norm_quantities
from ssmlab.records import SkipRun
from ssmlab.seeding import generator, seeded, split_seed
from ssmlab.train.trainer import (
    MAX_BATCH,
    MAX_GRAD_CLIP,
    MAX_LOSS,
    MAX_PATIENCE,
    MAX_WEIGHT_DECAY,
    TrainConfig,
    evaluate,
    train,
)

Task = Literal["majority", "listops", "imdb"]

# Quantities the probe logs each epoch (stored as per-epoch histories).
PROBE_KEYS = ("s_A", "p", "L_p", "B_q", "B_u", "B_w", "B_B", "M_B", "B_C", "M_C", "B_A",
              "rho_A", "M_Delta", "log_S2", "log_capacity", "log_lower_bound")

# ----------------------------------------------------------------------------- ranges
# Sanity limits (generous: 40x-1000x the paper's values); the memory estimate (below) is what
# refuses a size this machine cannot hold.
MAX_EPOCHS = 100_000
MAX_LR = 100.0  # Adam; the paper's 1e-2
MAX_GRID = 256  # values in one grid (T_values, sA_values)
# (annotated_types constraints: what pydantic enforces on list elements, and what the audit in
# tests/core/test_config_bounds.py reads)
Length = Annotated[int, at.Ge(1), at.Le(MAX_T)]
SpectralAbscissa = Annotated[float, at.Ge(-MAX_ABS_SA), at.Le(MAX_ABS_SA)]
Seeds = Annotated[int, Field(ge=1, le=MAX_SEEDS, description="number of seeds per grid cell")]
# The gap (train acc - test acc) lies in [-1, 1]: across one token it can move by at most 2,
# i.e. 200 per 100 tokens, so no tolerance above that means anything.
MAX_SLOPE_TOL = 200.0




class PaperTraining(StrictModel):
    """The authors' optimisation recipe (module docstring). epochs / batch size differ per task."""

    epochs: int = Field(40, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    lr: float = Field(1e-2, gt=0, le=MAX_LR)
    weight_decay: float = Field(1e-5, ge=0, le=MAX_WEIGHT_DECAY)
    grad_clip: float = Field(5.0, gt=0, le=MAX_GRAD_CLIP)
    plateau_factor: float = Field(0.9, gt=0, lt=1)
    plateau_patience: int = Field(5, ge=0, le=MAX_PATIENCE)
    plateau_threshold: float = Field(0.01, ge=0, le=1, description="relative improvement")
    collapse_min_std: float = Field(
        0.1, ge=0, le=0.5,
        description="collapse term: min std of sigmoid(out) (values in [0, 1]: std ≤ 0.5)")
    collapse_factor: float = Field(10.0, ge=0, le=1e6, description="collapse term weight (0 = off)")
    diverge_loss: float = Field(1e30, gt=0, le=MAX_LOSS,
                                description="a batch loss above this stops the run")
    blowup_loss: float = Field(
        1e3, gt=0, le=MAX_LOSS,
        description="final-epoch mean loss above this: the run diverged (blew up)")

    def train_config(self, loss: Literal["bce", "ce"], steps_per_epoch: int) -> TrainConfig:
        return TrainConfig(
            optimizer="adam", lr=self.lr, weight_decay=self.weight_decay, loss=loss,
            batch_size=self.batch_size, epochs=self.epochs, grad_clip=self.grad_clip,
            schedule="plateau", plateau_factor=self.plateau_factor,
            plateau_patience=self.plateau_patience, plateau_threshold=self.plateau_threshold,
            eval_every=1, probe_every=steps_per_epoch, converge_error=None,
            diverge_loss=self.diverge_loss,
        )


def collapse_regularizer(min_std: float, factor: float):
    """factor · max(0, min_std - std(sigmoid(out))) (Keller's collapse-avoiding loss)."""

    def reg(model: nn.Module, out: Tensor, y: Tensor) -> Tensor:
        if out.numel() < 2:
            return out.new_zeros(())
        return torch.clamp((min_std - torch.std(torch.sigmoid(out))) * factor, min=0.0)

    return reg


# ----------------------------------------------------------------------------- settings


class ModelSettings(StrictModel):
    """The paper's model (ssmlab.papers.generalization.model) minus what the task fixes (vocabulary,
    number of classes). Defaults: Majority's d = 4, N = 4, s_A = 0, trainable A."""

    d: int = Field(4, ge=1, le=MAX_WIDTH)
    N: int = Field(4, ge=1, le=MAX_STATES)
    s_A: float = Field(0.0, ge=-MAX_ABS_SA, le=MAX_ABS_SA, description="spectral abscissa at init")
    fix_A: bool = Field(False, description="A ≡ s_A, not trained")
    a_spread: float = Field(10.0, ge=0, le=MAX_A_SPREAD)
    use_delta: bool = True
    path: Literal["scan", "attention"] = Field(
        "attention", description="forward path; both give the same outputs (tested)")
    scan_backend: ScanBackend = "auto"

    def model_config_for(self, vocab_size: int, num_classes: int) -> GenSSMConfig:
        return GenSSMConfig(**self.model_dump(), vocab_size=vocab_size, num_classes=num_classes)


class TaskSettings(StrictModel):
    """Sizes and options of the three tasks (each experiment uses the fields of its task).

    data_seed: None = every run draws its own data set from its seed (Majority, as the authors'
    code: the data depend on the run seed); an integer = one fixed data set for all runs (the
    authors generated one ListOps file per T and reused it)."""

    n_train: int = Field(1000, ge=1, le=MAX_SAMPLES,
                         description="m (paper: 1000 Majority / ListOps, 25000 IMDb)")
    n_test: int = Field(1000, ge=1, le=MAX_SAMPLES)
    flip_prob: float = Field(0.25, ge=0, le=1, description="Majority: train-only 1->0 flips")
    window: int = Field(5, ge=1, le=MAX_T,
                        description="ListOps: lengths in (T - window, T + window); ≤ every T")
    data_seed: int | None = Field(None, ge=0, le=2**31 - 1, description="None = the run seed")
    cache_dir: str | None = Field(None, description="ListOps cache; None = $SSMLAB_CACHE or ~/.cache/ssmlab")
    imdb_dir: str | None = Field(default_factory=default_imdb_dir,
                                 description="aclImdb directory; default $SSMLAB_IMDB")
    tokenizer: Literal["auto", "word", "bert"] = "auto"
    vocab_size: int = Field(30000, ge=3, le=MAX_VOCAB, description="IMDb word-level vocabulary size")

    def check_lengths(self, task: Task, lengths: Iterable[int], where: str) -> None:
        """Cross-field rule: a ListOps length window must fit below every T (ValueError)."""
        Ts = list(lengths)
        if task == "listops" and Ts and self.window > min(Ts):
            raise ValueError(f"task.window={self.window} must be <= the smallest T of {where} "
                             f"({min(Ts)}): ListOps lengths lie in (T - window, T + window)")


# ----------------------------------------------------------------------------- tasks


def task_loss(data: Split) -> Literal["bce", "ce"]:
    """BCE for a binary task (one logit), cross-entropy for more classes."""
    return "bce" if data.meta["num_classes"] == 1 else "ce"


def _task(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], vocab_size: int,
          num_classes: int, info: dict[str, Any]) -> Split[tuple[Tensor, Tensor]]:
    """A task instance (the task protocol's Split: (tokens, labels) per part) with what the
    model needs to know about it."""
    return Split(train, test, {"vocab_size": vocab_size, "num_classes": num_classes, "info": info})


def build_task(task: Task, settings: TaskSettings, T: int, seed: int
               ) -> Split[tuple[Tensor, Tensor]]:
    """The task instance for (T, run seed). Raises SkipRun ("no IMDb data at PATH") when IMDb
    is absent: the runner stores the run as skipped and retries it once the data are there."""
    ds = seed if settings.data_seed is None else settings.data_seed
    if task == "majority":
        d = majority_bits(MajorityConfig(T=T, n_train=settings.n_train, n_test=settings.n_test,
                                         flip_prob=settings.flip_prob), ds)
        return _task(d.train, d.test, vocab_size=2, num_classes=1, info={"task": "majority"})
    if task == "listops":
        cfg = ListOpsConfig(T=T, window=settings.window, n_train=settings.n_train,
                            n_test=settings.n_test, cache_dir=settings.cache_dir)
        lo = listops(cfg, ds)
        lengths = [len(source_tokens(s)) for s, _ in lo.train_rows]
        return _task(lo.train, lo.test, vocab_size=len(VOCAB), num_classes=NUM_CLASSES,
                     info={"task": "listops", "min_len": min(lengths),
                           "max_len": max(lengths), "pad_to": cfg.pad_to})
    if task == "imdb":
        if find_imdb(settings.imdb_dir) is None:
            where = settings.imdb_dir or "$SSMLAB_IMDB (unset) / datasets cache"
            raise SkipRun(f"no IMDb data at {where}")
        cfg = ImdbConfig(T=T, n_train=settings.n_train, n_test=settings.n_test,
                         imdb_dir=settings.imdb_dir, tokenizer=settings.tokenizer,
                         vocab_size=settings.vocab_size)
        im = imdb(cfg, ds)
        return _task(im.train, im.test, vocab_size=im.vocab_size, num_classes=1,
                     info={"task": "imdb", "tokenizer": im.tokenizer})
    raise ValueError(f"unknown task {task!r}")


# ----------------------------------------------------------------------------- one run


def build_model(settings: ModelSettings, data: Split, seed: int) -> GenSSMClassifier:
    """The paper's classifier for this task, initialised from the run's "init" seed stream.

    Every parameter is drawn from the explicit generator; `nn.Embedding`'s own default draw
    (from torch's global RNG, then overwritten) runs inside `seeded`, so the global state is
    left as it was."""
    cfg = settings.model_config_for(data.meta["vocab_size"], data.meta["num_classes"])
    with seeded(split_seed(seed, "init")):
        return GenSSMClassifier(cfg, generator=generator(seed, "init"))


def _accuracy(model: nn.Module, data: tuple[Tensor, Tensor], loss: str) -> float:
    return 1.0 - evaluate(model, data, loss, batch_size=1024)["error"]


def train_run(model_cfg: ModelSettings, training: PaperTraining, data: Split, seed: int,
              return_model: bool = False) -> RunResult | tuple[RunResult, GenSSMClassifier]:
    """Train the paper's model on one task instance and package metrics and per-epoch curves.

    metrics: train_acc, test_acc, gap, final_loss, epochs_done and the final probe numbers
    (s_A, rho_A, log_capacity, ...); history: per-epoch `epoch`, `loss` (mean batch loss) and
    every probe key; status 'diverged' with `diverged_epoch` when the loss blew up."""
    cpu0 = time.process_time()
    model = build_model(model_cfg, data, seed)
    m, T = data.train[0].shape  # training examples, sequence length
    loss = task_loss(data)
    spe = math.ceil(m / training.batch_size)
    tcfg = training.train_config(loss, spe)
    probe = bound_probe(T=T, m=m)
    reg = None
    if training.collapse_factor > 0:
        reg = collapse_regularizer(training.collapse_min_std, training.collapse_factor)
    res = train(model, tcfg, data.train, probes=[probe], regularizer=reg, seed=seed)
    h = res.history
    steps = np.asarray(h.get("step", []), dtype=np.int64)
    losses = np.asarray(h.get("train_loss", []), dtype=np.float64)
    epochs_done = int(math.ceil(res.steps / spe)) if res.steps else 0
    n_ep = epochs_done + (1 if res.status == "diverged" else 0)
    epoch_loss = []
    for e in range(n_ep):
        sel = (steps >= e * spe) & (steps < (e + 1) * spe)
        epoch_loss.append(float(np.mean(losses[sel])) if sel.any() else math.nan)
    history: dict[str, list] = {"epoch": list(range(1, n_ep + 1)), "loss": epoch_loss,
                                "probe_epoch": [int(s) // spe for s in h.get("probe_step", [])]}
    for k in PROBE_KEYS:
        history[k] = [float(v) for v in h.get(k, [])]
    info = dict(data.meta["info"]) | {"T": T, "m": m, "steps_per_epoch": spe,
                                      "train_cpu_seconds": round(time.process_time() - cpu0, 3)}
    if res.status == "diverged":
        last = {k: history[k][-1] for k in PROBE_KEYS if history[k]}
        metrics = {"diverged_epoch": float((res.diverged_at or 0) // spe + 1),
                   "epochs_done": float(epochs_done)} | last
        out = RunResult(metrics=metrics, history=history, info=info, status="diverged",
                        reason=f"loss blew up at step {res.diverged_at}")
        return (out, model) if return_model else out
    status, reason = "ok", ""
    if epoch_loss and not epoch_loss[-1] <= training.blowup_loss:
        status = "diverged"
        reason = f"loss stayed blown up: last epoch mean {epoch_loss[-1]:.3g} > {training.blowup_loss:g}"
    final_q = bound_quantities(norm_quantities(model), T, m,
                               include_B_A=not model.cfg.fix_A)
    train_acc = _accuracy(model, data.train, loss)
    test_acc = _accuracy(model, data.test, loss)
    _, counts = torch.unique(data.test[1], return_counts=True)
    metrics = {"train_acc": train_acc, "test_acc": test_acc, "gap": train_acc - test_acc,
               "majority_class_acc": float(counts.max()) / float(counts.sum()),
               "final_loss": epoch_loss[-1] if epoch_loss else math.nan,
               "epochs_done": float(epochs_done)} | final_q
    out = RunResult(metrics=metrics, history=history, info=info, status=status, reason=reason)
    return (out, model) if return_model else out


# ----------------------------------------------------------------------------- memory
# What one run holds at its peak (`Experiment.memory_bytes`), from what the code materialises:
#   data     Majority: x_train (noisy), x_train_clean, x_test as int64 (n, T), plus, while one
#            set is drawn, float64 keys and two int64 argsorts (n, T); ListOps: the token ids
#            (n, T + window - 1) int64 and the expression trees / LRA source strings (about 48
#            bytes per token); IMDb: the whole aclImdb copy read as Python strings (25 000
#            reviews per split, 1 325 characters on average, counted at 2 bytes per character),
#            the lower-cased subsample, the word vocabulary's counter and the (n, T) ids.
#   model    parameters, gradients and Adam's two moments: 4 × parameters, float32.
#   train    path "attention" (the default) materialises the decay gate exp(A Σ Δ) as
#            (B, T, d, N) for the last row: the forward keeps it for the backward, and the
#            backward creates three more of that shape (its gradient through the matmul, through
#            exp, and the products for the gradients of A and of the decay sums) -> 4 copies.
#            Path "scan" keeps (B, d, T)-sized inputs and outputs of the fused kernel (~12 of
#            them) and its checkpoints (B, T/64, N, d); backends "pscan" / "reference"
#            materialise every state (B, d, T, N), about 6 copies with their gradients.
#   eval     no-grad evaluation in chunks: the trainer's final pass over the training set in
#            chunks of at most 4096 rows and the accuracy passes in chunks of 1024, 2
#            gate-sized tensors each (the exp's argument and result). The trainer's chunks are
#            trainer.eval_rows (32768 positions, so fewer rows for T > 8); counting 4096 keeps
#            the estimate an upper bound, measured against peaks with 4096-row chunks.
#   runtime  the first backward pass and optimiser step of a process import torch's autograd /
#            optimiser machinery lazily: ~80 MiB measured (torch 2.13, CPU), counted once; and
#            each Numba kernel specialisation a run calls (path "scan": the fused scan's float32
#            forward and backward) ~48 MiB when compiled or loaded from the cache.
TORCH_RUNTIME = 80 * 2**20
NUMBA_KERNEL = 48 * 2**20
IMDB_REVIEWS_PER_SPLIT = 25_000
IMDB_MEAN_CHARS = 1_325
BERT_VOCAB = 30_522
LISTOPS_BYTES_PER_TOKEN = 48
FLOAT = 4


def task_shape(task: Task, settings: TaskSettings) -> tuple[int, int]:
    """(vocabulary size, number of classes) the model gets for this task (IMDb: the larger of
    the word vocabulary and BERT's, which tokenizer='auto' picks when it is installed)."""
    if task == "majority":
        return 2, 1
    if task == "listops":
        return len(VOCAB), NUM_CLASSES
    return max(settings.vocab_size, BERT_VOCAB), 1


def task_bytes(task: Task, settings: TaskSettings, T: int) -> int:
    """Peak bytes of building one task instance at length T and holding its tensors."""
    n_tr, n_te = settings.n_train, settings.n_test
    if task == "majority":
        held = nbytes(2 * n_tr + n_te, T, itemsize=8)
        return held + 3 * nbytes(max(n_tr, n_te), T, itemsize=8)
    if task == "listops":
        L = T + settings.window - 1
        return nbytes(n_tr + n_te, L, itemsize=8) + (n_tr + n_te) * L * LISTOPS_BYTES_PER_TOKEN
    review = 2 * IMDB_MEAN_CHARS + 80  # one review as a Python str
    picked = min(n_tr, IMDB_REVIEWS_PER_SPLIT) + min(n_te, IMDB_REVIEWS_PER_SPLIT)
    counter = 200 * min(settings.vocab_size, 200_000)  # distinct words in the Counter
    return (2 * IMDB_REVIEWS_PER_SPLIT + picked) * review + counter + nbytes(picked, T, itemsize=8)


def model_parameters(model: ModelSettings, vocab: int, classes: int) -> int:
    d, N = model.d, model.N
    return vocab * d + 3 * d * N + d + 1 + classes * d


def activation_bytes(model: ModelSettings, batch: int, T: int, grad: bool) -> int:
    """Bytes of one forward (and, with grad, backward) pass over `batch` sequences of length T
    (module notes above: which path materialises what)."""
    d, N = model.d, model.N
    # per token: embeddings, the last-row products (d each), B_t, C_t, q·k (N each), steps and
    # decay sums; about 3 of each kept in the forward, their gradients as many again; without
    # the graph only about one of each is alive at a time
    small = (6 if grad else 1) * nbytes(batch, T, d + N + 2)
    if model.path == "attention":
        gate = nbytes(batch, T, d, N)
        return small + (4 if grad else 2) * gate
    states = 0
    if model.scan_backend in ("pscan", "reference"):
        states = (6 if grad else 2) * nbytes(batch, d, T, N)
    ckpt = nbytes(batch, -(-T // 64), N, d)
    kernels = 2 * NUMBA_KERNEL if model.scan_backend in ("auto", "fused") else 0
    return small + nbytes(batch, d, T) * (12 if grad else 4) + ckpt + states + kernels


def train_run_bytes(model: ModelSettings, training: PaperTraining, task: Task,
                    settings: TaskSettings, T: int) -> int:
    """Peak bytes of one `train_run` of this task at length T (module notes above)."""
    vocab, classes = task_shape(task, settings)
    L = T + settings.window - 1 if task == "listops" else T
    params = 4 * model_parameters(model, vocab, classes) * FLOAT
    train = activation_bytes(model, min(training.batch_size, settings.n_train), L, grad=True)
    evals = max(activation_bytes(model, min(settings.n_train, 4096), L, grad=False),
                activation_bytes(model, min(settings.n_test, 1024), L, grad=False))
    return TORCH_RUNTIME + task_bytes(task, settings, T) + params + max(train, evals)
