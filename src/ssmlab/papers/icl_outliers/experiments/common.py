"""Shared pieces of the icl_outliers experiments: training settings, model factory, online
training (Algorithm 1: SGD on freshly sampled prompts), evaluation helpers.

Seeds: the run seed s gives three disjoint streams (ssmlab.seeding): "train" drives the online
prompt sampler, "test" every evaluation set, "init" the model's random init (w, or the stacks'
weights). The patterns use the standard basis, so they do not depend on the seed.

Ranges. Every number a user can set has a range (sizes ≥ 1 up to a generous sanity limit,
fractions and probabilities in [0, 1], learning rates > 0); grids are non-empty, bounded and list
each value once (a repeated value would repeat a grid cell). Whether a legal size fits the
machine is the memory estimate's job: the `*_bytes` helpers below add up what one run holds at
its peak, counted from the code of the data sampler, the models and the trainer and checked
against the measured peak RSS of real runs (this paper's README.md, section "Ranges and
memory", lists the estimates beside the measurements).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from ssmlab.claims import Estimate, seed_bootstrap
from ssmlab.config import StrictModel
from ssmlab.layers.registry import MixerName
from ssmlab.memory import nbytes
from ssmlab.papers.icl_outliers.data import (
    ICLDataConfig,
    Patterns,
    Prompts,
    make_patterns,
    sample_train,
)
from ssmlab.papers.icl_outliers.model import (
    ICLLinearTransformer,
    ICLMamba,
    ICLSoftmaxAttention,
    icl_stack,
)
from ssmlab.records import RunRecord
from ssmlab.seeding import split_seed
from ssmlab.train.trainer import TrainConfig, TrainResult, evaluate, train

ModelKind = Literal["mamba", "linear", "softmax"]
MODEL_LABELS = {"mamba": "Mamba", "linear": "linear Transformer", "softmax": "softmax Transformer"}
# The gated model's network (the cells' model "mamba"): "paper" = the paper's own, or a registry
# mixer (e.g. "gla": the question "does the paper's result hold for a gated linear RNN?").
MixerChoice = Literal["paper", MixerName]

# --- ranges -------------------------------------------------------------------------------------
# Sanity limits, far above the paper profiles (l ≤ 160, ≤ 20000 steps, B = 64, 4000 test prompts).
MAX_LEN = 2**14  # context length l (prompts hold l + 1 rows)
MAX_STATE = MAX_LEN + 1  # the paper's state size m = l_tr + 1
MAX_LAYERS = 64
MAX_D_MODEL = 4096
MAX_MIXER_SIZE = 1024  # d_state, expand, n_heads, ... of the stacks' mixers
MAX_MIXER_NUMBER = 1e6  # any other number among the mixer options (dt_min, eps, scale, ...)
MAX_LR = 1e3
MAX_BATCH = 2**16
MAX_STEPS = 10**6
MAX_PROMPTS = 10**6  # test / probe / held-out prompts per set
MAX_GRID = 64
MAX_TOL = 10.0  # tolerances on log-log slopes
MIXER_SIZE_OPTIONS = ("d_state", "d_conv", "expand", "dt_rank", "n_heads", "window")


LearningRate = Annotated[float, at.Gt(0), at.Le(MAX_LR)]
ContextLength = Annotated[int, at.Ge(1), at.Le(MAX_LEN)]
Fraction = Annotated[float, at.Ge(0), at.Le(1)]
Probability = Annotated[float, at.Ge(0), at.Lt(1)]  # p_a: 1 would leave no clean example


def check_mixer_kwargs(mixer_kwargs: dict[str, dict[str, Any]]) -> None:
    """Option names the mixer accepts, sizes in 1..MAX_MIXER_SIZE, other numbers finite and
    bounded: a size typed into a free-form dict must not escape the ranges (ValueError)."""
    from ssmlab.layers.registry import mixer_options

    for kind, opts in mixer_kwargs.items():
        allowed = mixer_options(kind)
        for key, v in opts.items():
            where = f"mixer_kwargs.{kind}.{key}"
            if key not in allowed:
                raise ValueError(f"{where}: mixer {kind!r} has no option {key!r}; allowed: "
                                 f"{', '.join(allowed)}")
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if key in MIXER_SIZE_OPTIONS:
                if not isinstance(v, int) or not 1 <= v <= MAX_MIXER_SIZE:
                    raise ValueError(f"{where}={v!r} must be an int in 1..{MAX_MIXER_SIZE}")
            elif not (math.isfinite(v) and abs(v) <= MAX_MIXER_NUMBER):
                raise ValueError(f"{where}={v!r} must be finite with |value| ≤ "
                                 f"{MAX_MIXER_NUMBER:g}")


class ModelSpec(StrictModel):
    """Which network: the paper's one-layer models (n_layers = 1) or n-layer stacks
    (model.icl_stack, the generic backbone); `mixer` swaps the gated model for a stack of any
    registry mixer (a variant of the paper's set-up: `variant_of`)."""

    n_layers: int = Field(1, ge=1, le=MAX_LAYERS,
                          description="1 = the paper's Eq. 3 model; >1 = model.icl_stack")
    mixer: MixerChoice = Field(
        "paper", description="the gated model (cells model='mamba'): 'paper' = the paper's own "
        "(Eq. 3's one-layer Mamba; a stack of Mamba blocks when n_layers > 1), or a registry "
        "mixer: a stack of n_layers of it (one layer where the experiment needs one), trained "
        "the same way; the baselines (linear, softmax) stay as they are")
    delta: float = Field(0.2, gt=0, le=0.2, description="init δ of W_B, W_C (paper 0.2)")
    m: int | None = Field(None, ge=1, le=MAX_STATE,
                          description="state size m; None = l_tr + 1 (paper)")
    d_model: int = Field(32, ge=2, le=MAX_D_MODEL, description="stack width (n_layers > 1 only)")
    mixer_kwargs: dict[MixerName, dict[str, Any]] = Field(
        default_factory=dict, description="per-mixer options for the stacks, e.g. "
        "{'linear': {'mode': 'quadratic'}, 'gla': {'n_heads': 2}}")

    @model_validator(mode="after")
    def _check_mixer_kwargs(self) -> ModelSpec:
        check_mixer_kwargs(self.mixer_kwargs)
        return self


class SGDSpec(StrictModel):
    """Algorithm 1's optimiser; the paper does not publish η, B or the number of steps."""

    lr: float = Field(1.0, gt=0, le=MAX_LR, description="SGD step η")
    batch_size: int = Field(64, ge=1, le=MAX_BATCH, description="prompts per step B")
    steps: int = Field(2000, ge=1, le=MAX_STEPS, description="SGD steps")
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="'sgd' = Algorithm 1")
    lr_by_model: dict[ModelKind, LearningRate] = Field(
        default_factory=dict, description="per-model η overriding lr, e.g. {'linear': 0.1}"
    )

    def for_model(self, kind: ModelKind) -> SGDSpec:
        """This spec with the model's own η (lr_by_model) as lr."""
        if kind not in self.lr_by_model:
            return self
        return self.model_copy(update={"lr": self.lr_by_model[kind]})


def stack_mixer(kind: str, spec: ModelSpec) -> str | None:
    """The registry mixer of the stack that plays model `kind`, None for the paper's one-layer
    models: the gated model ("mamba") is a stack of spec.mixer unless that is "paper"; every
    model is a stack of its own mixer when n_layers > 1."""
    if kind == "mamba" and spec.mixer != "paper":
        return spec.mixer
    return kind if spec.n_layers > 1 else None


def variant_of(spec: ModelSpec) -> str:
    """Experiment.variant: '' for the paper's set-up (the paper's model, or the Mamba stack of
    the multi-layer experiments), else 'model.mixer=<name>'."""
    if spec.mixer == "paper" or (spec.n_layers > 1 and spec.mixer == "mamba"):
        return ""
    return f"model.mixer={spec.mixer}"


def model_label(kind: str, spec: ModelSpec) -> str:
    """A figure label: the paper's name of the model, or the stack's mixer in a variant."""
    if kind == "mamba" and variant_of(spec):
        return f"{spec.n_layers}-layer {spec.mixer} stack"
    return MODEL_LABELS.get(kind, kind)


def build_model(kind: ModelKind, data: ICLDataConfig, spec: ModelSpec, l_tr: int, seed: int,
                ) -> nn.Module:
    """The one-layer models of Sec. 3 (n_layers = 1) or a stack of registry mixers
    (stack_mixer). `kind` is a validated ModelKind (the configs' Literal), so there is no
    unknown name to reject here."""
    init = split_seed(seed, "init")
    mixer = stack_mixer(kind, spec)
    if mixer is not None:
        return icl_stack(data.d, mixer, n_layers=spec.n_layers,  # type: ignore[arg-type]
                         d_model=spec.d_model, seed=init, mixer_kwargs=_mixer_opts(spec, mixer))
    m = spec.m if spec.m is not None else l_tr + 1
    if kind == "mamba":
        return ICLMamba(data.d, m, delta=spec.delta, seed=init)
    if kind == "linear":
        return ICLLinearTransformer(data.d, m, delta=spec.delta, seed=init)
    return ICLSoftmaxAttention(data.d, m, delta=spec.delta)


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


def runs_of(runs: list[RunRecord], kind: str) -> list[RunRecord]:
    """The runs of one model's cells (for a per-model note: records.not_ok_note(runs_of(...)))."""
    return [r for r in runs if r.params.get("model") == kind]


# --- claims: per-seed tables and their intervals -------------------------------------------------

def over_seeds(mat: np.ndarray, statistic: Callable[[np.ndarray], float],
               detail: str = "") -> Estimate:
    """statistic(rows of `mat`) with a bootstrap interval over whole seeds (rows)."""
    return seed_bootstrap(list(mat), lambda rows: float(statistic(np.asarray(rows))), detail)


def fmt_cells(labels: Sequence[Any], values: Sequence[float], digits: int = 3) -> str:
    return ", ".join(f"{a}: {v:.{digits}f}" for a, v in zip(labels, values, strict=True))


# --- memory estimates ---------------------------------------------------------------------------
# What one run holds at its peak, in bytes (float32 unless stated). The counts of simultaneously
# alive tensors come from reading the sampler, model and trainer code; the constants were checked
# against the peak RSS of runs in fresh processes (this paper's README.md, "Ranges and memory").

RUN_OVERHEAD = 8 * 2**20  # allocator arenas, autograd bookkeeping, small tensors (measured ~6 MiB)
# Paid once per worker process, by its first run, and then kept: the first optimiser step's lazy
# imports (torch._dynamo, sympy; measured 72-76 MiB) and, for the Mamba stacks, the fused
# selective scan's Numba kernels (forward and backward, from the on-disk cache or compiled:
# measured 52 MiB; the recurrent linear attention's kernel adds a few MiB more).
TORCH_RUNTIME = 80 * 2**20
NUMBA_SCAN = 56 * 2**20

HISTORY_VALUE = 32  # one recorded number: a Python float (24 B) and its list slot (8 B)
# Floats per prompt row and inner channel E of a MambaBlock (ssmlab.layers.s6, fused CPU scan) at
# the peak RSS of a fresh worker, the same counts as the filtering paper's estimate
# (ssmlab.papers.filtering.experiments.common lists what they hold): 20 per block when training; without autograd 12 for the
# first block and 6 more per further block while a (B, L, E) tensor is below glibc's largest
# mmap threshold (32 MiB; heap growth across blocks; larger blocks are returned when freed).
MAMBA_TRAIN_PER_BLOCK = 20
MAMBA_EVAL_FIRST = 12
MAMBA_EVAL_MORE = 6
MMAP_THRESHOLD_MAX = 32 * 2**20


def prompts_bytes(n: int, l: int, d: int) -> int:
    """A kept Prompts of n prompts: P (n, l + 1, d + 1), the int64 pattern index rel (n, l + 1),
    the outlier mask, the targets and the tasks."""
    return nbytes(n, l + 1, d + 1) + nbytes(n, l + 1, itemsize=8) + nbytes(n, l, itemsize=1) \
        + nbytes(n) + nbytes(n, 2, itemsize=8)


def sample_bytes(n: int, l: int, d: int) -> int:
    """The transient peak of sample_train / sample_test (data.py): the clean inputs
    μ[rel] + κ ν[k] and the outlier term (three (n, l + 1, d) floats at once), the context with
    its label column and the assembled P: four P-sized tensors plus the int64 indices rel, k and
    the outlier pattern r; measured 4.0-4.2 × P for sets of ≥ 50 MiB, up to 6-7 × P for
    smaller ones (freed blocks that the heap keeps): 5."""
    return 5 * nbytes(n, l + 1, d + 1) + 3 * nbytes(n, l + 1, itemsize=8)


def _mixer_opts(spec: ModelSpec, mixer: str) -> dict[str, Any]:
    return spec.mixer_kwargs.get(mixer, {})  # type: ignore[call-overload]


def runtime_bytes(kinds: list[str] | tuple[str, ...], spec: ModelSpec) -> int:
    """The per-worker runtime a run of these models loads (see TORCH_RUNTIME)."""
    mixers = [m for m in (stack_mixer(k, spec) for k in kinds) if m is not None]
    numba = any(
        m == "mamba" or (m == "linear" and _mixer_opts(spec, m).get("mode", "recurrent")
                         == "recurrent") for m in mixers)
    return RUN_OVERHEAD + TORCH_RUNTIME + (NUMBA_SCAN if numba else 0)


def model_params(kind: str, spec: ModelSpec, d: int, l_tr: int) -> int:
    """Parameter count of the model `build_model` makes (exact for the one-layer models, the
    dominant matrices for the stacks; mixers other than Mamba counted as attention's 4 D²)."""
    mixer = stack_mixer(kind, spec)
    if mixer is None:
        m = spec.m if spec.m is not None else l_tr + 1
        return 2 * m * (d + 1) + (d + 1)
    D, o = spec.d_model, _mixer_opts(spec, mixer)
    if mixer == "mamba":
        E, N = o.get("expand", 2) * D, o.get("d_state", 16)
        per = 3 * E * D + E * (2 * N + 8) + E * N
    else:
        per = 4 * D * D
    return (d + 1) * D + spec.n_layers * (per + D) + 2 * D + 1


def model_bytes(kind: str, spec: ModelSpec, d: int, l_tr: int, L: int, B: int,
                train: bool) -> int:
    """Activations of one forward on B prompts of L = l + 1 rows, with the backward's saved
    tensors and gradients when `train`.

    One layer (model.py, closed form): keys P W_Bᵀ (B, L, m) dominate, with a few (B, L)
    gate / score vectors; training keeps the keys, the scores and their gradients (3 keys).
    Stacks (model.icl_stack): the embedding and every layer's residual output (B, L, D) are kept; a
    Mamba block's floats per position and inner channel E are the MAMBA_* counts above, plus
    its checkpoints; attention holds q, k, v and the output (4 D) and the (H, L)
    scores and softmax per position, with their gradients when training; the recurrent linear
    attention materialises its running state, (H, L, P, P + 1) per prompt. Other registry
    mixers (a variant's stack) are counted as attention: an approximation, not measured."""
    mixer = stack_mixer(kind, spec)
    if mixer is None:
        m = spec.m if spec.m is not None else l_tr + 1
        return (3 if train else 1) * nbytes(B, L, m) + 8 * nbytes(B, L)
    D, o, layers = spec.d_model, _mixer_opts(spec, mixer), spec.n_layers
    stream = (layers + 2) * nbytes(B, L, D)
    if mixer == "mamba":
        E, N = o.get("expand", 2) * D, o.get("d_state", 16)
        ckpt = nbytes(B, -(-L // 64), N, E)
        if train:
            return stream + layers * (MAMBA_TRAIN_PER_BLOCK * nbytes(B, L, E) + ckpt)
        unit = nbytes(B, L, E)  # heap growth per further block: at most the mmap threshold
        return (stream + MAMBA_EVAL_FIRST * unit
                + MAMBA_EVAL_MORE * (layers - 1) * min(unit, MMAP_THRESHOLD_MAX) + ckpt)
    H = o.get("n_heads", 1)
    per = (8 if train else 4) * nbytes(B, L, D) + (3 if train else 2) * nbytes(B, H, L, L)
    if mixer == "linear" and o.get("mode", "recurrent") == "recurrent":
        P = D // H
        per += (2 if train else 1) * nbytes(B, H, L, P, P + 1)
    return stream + (layers if train else 1) * per


def optimizer_bytes(n_params: int, optimizer: str) -> int:
    """Parameters, their gradients and Adam's two moments (plain SGD keeps none)."""
    return nbytes(n_params) * (2 + (2 if optimizer == "adam" else 0))


def train_bytes(kind: str, spec: ModelSpec, sgd: SGDSpec, d: int, l_tr: int) -> int:
    """Training with Algorithm 1 (common.fit): one batch of fresh prompts sampled, the forward
    and backward on it, the parameters with the optimiser state."""
    n = model_params(kind, spec, d, l_tr)
    B = sgd.batch_size
    return (optimizer_bytes(n, sgd.optimizer) + sample_bytes(B, l_tr, d)
            + model_bytes(kind, spec, d, l_tr, l_tr + 1, B, train=True))


def test_set_bytes(kind: str, spec: ModelSpec, d: int, l_tr: int, n: int, l: int,
                   held: bool = False) -> int:
    """A set of n test prompts of context l: sampled (with the previous set of the same size
    still alive when `held`: `pr = sample_test(...)` in a loop), then the model evaluated on
    all n at once (error_rate, gate_profile: no chunks)."""
    sampling = sample_bytes(n, l, d) + (prompts_bytes(n, l, d) if held else 0)
    evaluating = prompts_bytes(n, l, d) + model_bytes(kind, spec, d, l_tr, l + 1, n, train=False)
    return max(sampling, evaluating)


def history_bytes(rows: int, keys: int) -> int:
    """Per-step metric lists kept in memory by the trainer and the probes."""
    return int(rows) * int(keys) * HISTORY_VALUE


def fit_history_bytes(sgd: SGDSpec, probe_every: int | None = None, probe_keys: int = 0) -> int:
    """common.fit's history: a row of ≤ 6 numbers every steps // 20 steps, and `probe_keys`
    numbers every `probe_every` steps (None: no probes)."""
    rows = 22 + (sgd.steps // probe_every + 2 if probe_every is not None else 0)
    return history_bytes(22, 6) + history_bytes(rows - 22, probe_keys)


def one_layer_only(n_layers: int, experiment: str) -> None:
    """The experiments that read the one-layer model's gates or scores (Eq. 3) need it."""
    if n_layers != 1:
        raise ValueError(f"model.n_layers={n_layers}: {experiment} measures the one-layer model "
                         "of Eq. 3 (its gates / scores); use n_layers=1")


def paper_model_only(spec: ModelSpec, experiment: str, what: str) -> None:
    """The experiments whose quantity exists only for the paper's model (W_B^T W_C, the
    theorems' step counts) refuse another mixer."""
    if spec.mixer != "paper":
        raise ValueError(f"model.mixer={spec.mixer}: {experiment} measures {what} of the "
                         "paper's one-layer model; only model.mixer=paper is meaningful")


def placements_need_counts(data: ICLDataConfig, placement: str) -> None:
    """A placement (farthest / closest) puts an exact count of outliers: Bernoulli outliers
    have no count to place (data.outlier_mask)."""
    if data.count == "bernoulli" and placement != "random":
        raise ValueError(f"data.count='bernoulli' needs placement='random', got {placement!r}")
