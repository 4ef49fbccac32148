"""Shared pieces of the filtering experiments: GD settings, training to convergence through
ssmlab.train.trainer.train, and small helpers for the analyses.

Convergence. With the hinge loss, full-batch GD stops moving exactly when every training margin
z·F(X) reaches 1 (the loss is then 0 and so is its gradient). "margin" convergence (default) is
the first step at which the training hinge loss is exactly 0: the sign error alone reaches 0
within a few steps on majority data whatever the gap (the count difference makes the classes
separable as soon as W_O has the right sign), so it cannot show Thm 1's rate. "error"
convergence is the first step with training 0-1 error ≤ `error_target`.

Both criteria map onto the trainer's converge_loss / converge_error with stop_on_converge.

Ranges. Every number a user can set has a range (sizes ≥ 1 up to a generous sanity limit,
fractions in [0, 1], learning rates > 0); grids are non-empty, bounded and list each value once
(a repeated value would repeat a grid cell). Whether a legal size fits the machine is the memory
estimate's job: the `*_bytes` helpers below add up what one run holds at its peak, counted from
the code of the models and the trainer (tensor by tensor, see each helper) and checked against
the measured peak RSS of real runs (papers/filtering/README.md, "Ranges, memory and input
checks").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
from pydantic import Field, ValidationError
from torch import Tensor, nn

from ssmlab.claims import Context, Estimate, NoData, paired_ci, seed_bootstrap
from ssmlab.config import StrictModel
from ssmlab.experiment import RunRecord, RunResult
from ssmlab.memory import nbytes
from ssmlab.papers.filtering.data import MAX_L
from ssmlab.records import not_ok_note
from ssmlab.report.stats import group_by, mean_std
from ssmlab.train.trainer import Probe, TrainConfig, eval_rows, evaluate, train

PAPER = "filtering"

# --- ranges -------------------------------------------------------------------------------------
# Sanity limits, far above the paper profiles (N ≤ 4000, ≤ 20000 GD steps, η ≤ 4, 6-value grids).
MAX_SAMPLES = 10**6  # sequences per split
MAX_STEPS = 10**6  # GD steps (each one keeps a history row: see history_bytes)
MAX_LR = 1e3
MAX_GRID = 64  # values per grid (each one is a cell × seeds runs)
MAX_TOL = 10.0  # tolerances on log-log slopes
MAX_RATIO = 1e3  # "at least this many times" thresholds


AlphaR = Annotated[float, at.Gt(0), at.Le(1)]  # a fraction of relevant tokens α_r
LearningRate = Annotated[float, at.Gt(0), at.Le(MAX_LR)]
Length = Annotated[int, at.Ge(4), at.Le(MAX_L)]  # a sequence length L
Distance = Annotated[int, at.Ge(1), at.Le(MAX_L - 1)]  # a pair distance ΔL
SampleSize = Annotated[int, at.Ge(2), at.Le(MAX_SAMPLES)]


class GDSpec(StrictModel):
    """Full-batch gradient descent with a fixed step η on the hinge loss (the paper's trainer)."""

    lr: float = Field(2.0, gt=0, le=MAX_LR, description="η")
    max_steps: int = Field(3000, ge=1, le=MAX_STEPS)
    converge: Literal["margin", "error"] = "margin"
    error_target: float = Field(0.0, ge=0, lt=1, description="for converge='error'")
    probe_every: int = Field(10, ge=1, le=MAX_STEPS)


@dataclass
class FitResult:
    status: str = "ok"
    steps: int = 0
    steps_to_converge: int | None = None
    steps_to_zero_error: int | None = None
    history: dict[str, list] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)


def _first(values: Sequence[float], steps: Sequence[int], ok) -> int | None:
    for s, v in zip(steps, values, strict=True):
        if v is not None and math.isfinite(v) and ok(v):
            return int(s)
    return None


def fit_gd(model: nn.Module, spec: GDSpec, train_data: tuple[Tensor, Tensor],
           test_data: tuple[Tensor, Tensor] | None = None, probes: Iterable[Probe] = (),
           seed: int = 0) -> FitResult:
    """Train with full-batch GD until the convergence criterion holds or max_steps.

    converge="margin": zero training hinge loss (every margin >= 1); "error": training 0-1 error
    <= error_target. The run stops at the first converged iterate; the test set is evaluated
    once at the end (not every step)."""
    margin = spec.converge == "margin"
    cfg = TrainConfig(optimizer="gd", lr=spec.lr, loss="hinge", epochs=spec.max_steps,
                      eval_every=1, probe_every=spec.probe_every,
                      converge_error=None if margin else spec.error_target,
                      converge_loss=0.0 if margin else None, stop_on_converge=True)
    res = train(model, cfg, train_data, None, probes, seed=seed)
    out = FitResult(status=res.status, steps=res.steps, steps_to_converge=res.steps_to_converge,
                    history=res.history)
    if out.status != "ok":
        return out
    ev = evaluate(model, train_data, "hinge")
    out.final = {"train_loss": ev["loss"], "train_error": ev["error"]}
    if out.steps_to_converge is None and (ev["loss"] <= 0.0 if margin
                                          else ev["error"] <= spec.error_target):
        out.steps_to_converge = res.steps  # the last update reached it
    errors = res.history.get("train_error", []) + [ev["error"]]
    steps = res.history.get("step", []) + [res.steps]
    out.steps_to_zero_error = _first(errors, steps, lambda v: v <= 0.0)
    if test_data is not None:
        ev = evaluate(model, test_data, "hinge")
        out.final |= {"test_loss": ev["loss"], "test_error": ev["error"]}
    return out


def fit_accuracy(model: nn.Module, tc: TrainConfig, train_data: tuple[Tensor, Tensor],
                 test_data: tuple[Tensor, Tensor], seed: int) -> RunResult:
    """Train with `tc` and report train / test accuracy and the test-error history (the
    comparisons of filtering/attention and filtering/transformer); diverged: a result."""
    res = train(model, tc, train_data, test_data, seed=seed)
    if res.status != "ok":
        return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
    return RunResult(metrics={"test_accuracy": 1 - res.final["test_error"],
                              "train_accuracy": 1 - res.final["train_error"]},
                     history={"step": res.history["step"],
                              "test_error": res.history["test_error"]})


def thin(values: Sequence[Any], every: int) -> list[Any]:
    """Every `every`-th element (and the last), to keep stored histories small."""
    if every <= 1 or len(values) <= 2:
        return list(values)
    idx = list(range(0, len(values), every))
    if idx[-1] != len(values) - 1:
        idx.append(len(values) - 1)
    return [values[i] for i in idx]


def paired_gap(ctx: Context, key: str, a: tuple[str, dict[str, Any]],
               b: tuple[str, dict[str, Any]], exact: bool = False, detail: str = "") -> Estimate:
    """mean metrics[key] of cell a minus cell b over the seeds that finished both, paired by
    seed (Context.seed_matrix). `a`, `b`: (label, cell parameters); the detail gives each
    cell's mean over all its ok runs and, when a seed dropped out, which runs were not ok."""
    (la, pa), (lb, pb) = a, b
    mat = ctx.seed_matrix([(pa, key), (pb, key)], exact=exact)
    means = [np.mean(ctx.values(key, exact=exact, **p)) for p in (pa, pb)]
    parts = [detail, f"{la} {means[0]:.3f}, {lb} {means[1]:.3f}"]
    bad = "; ".join(f"{label}: {note}" for label, p in (a, b)
                    if (note := not_ok_note(ctx.select(ok=False, exact=exact, **p))))
    if bad:
        parts.append(f"paired on the {len(mat)} seeds that finished both ({bad})")
    return paired_ci({la: mat[:, 0], lb: mat[:, 1]}, lambda u, v: float(u.mean() - v.mean()),
                     detail="; ".join(x for x in parts if x))


def ok_runs(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status == "ok"]


def finite(values: Iterable[float | None]) -> np.ndarray:
    a = np.asarray([np.nan if v is None else float(v) for v in values], float)
    return a[np.isfinite(a)]


def by_seed(runs: Iterable[RunRecord]) -> dict[int, list[RunRecord]]:
    """Runs grouped by seed (seed order)."""
    out: dict[int, list[RunRecord]] = {}
    for r in sorted(runs, key=lambda r: r.seed):
        out.setdefault(r.seed, []).append(r)
    return out


def steps_points(runs: Iterable[RunRecord], x_of: Callable[[RunRecord], float]
                 ) -> list[list[tuple[float, float]]]:
    """Per seed (seed order), the (x, steps to converge) points of the runs; a run that never
    converged has NaN steps, which pooled_loglog_slope drops."""
    return [[(x_of(r), float(r.metrics["steps_to_converge"])) for r in rs]
            for rs in by_seed(runs).values()]


def steps_table(runs: Iterable[RunRecord], x_of: Callable[[RunRecord], float], label: str) -> str:
    """'mean steps by <label>: x: mean, ...' over the runs, x ascending."""
    groups = group_by(list(runs), lambda r: round(x_of(r), 6))
    return f"mean steps by {label}: " + ", ".join(
        f"{k:g}: {fmt(mean_std([r.metrics['steps_to_converge'] for r in groups[k]])[0], 0)}"
        for k in sorted(groups))


def steps_slope(points: list[list[tuple[float, float]]], x_name: str, detail: str) -> Estimate:
    """The pooled log-log slope of steps vs x with its seed-bootstrap interval; NoData (SKIP)
    when fewer than 2 values of x have a converged run (no slope to judge)."""
    xs = {x for seed in points for x, y in seed if math.isfinite(y) and y > 0}
    if len(xs) < 2:
        raise NoData(f"converged runs at {len(xs)} value(s) of {x_name} (2 needed); {detail}")
    return seed_bootstrap(points, pooled_loglog_slope, detail=detail)


def n_unconverged(runs: Iterable[RunRecord]) -> int:
    """Runs that never reached the convergence criterion (NaN steps)."""
    return sum(1 for r in runs if not np.isfinite(r.metrics["steps_to_converge"]))


def pooled_loglog_slope(per_seed: Sequence[Sequence[tuple[float, float]]]) -> float:
    """Least-squares slope of log y on log x over the (x, y) points of all the given seeds
    (points with a non-finite or non-positive coordinate dropped); NaN with < 2 distinct x.
    Used with claims.seed_bootstrap, which refits on resampled seeds: the points of one seed
    share its data and init seed, so they are not independent."""
    pts = [(x, y) for seed in per_seed for x, y in seed
           if math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0]
    if len({x for x, _ in pts}) < 2:
        return math.nan
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"


# --- memory estimates ---------------------------------------------------------------------------
# What one run holds at its peak, in bytes (float32 tensors unless stated). The counts of
# simultaneously alive tensors come from reading the forward / backward code; the constants were
# checked against the peak RSS of runs in fresh processes (papers/filtering/README.md).

RUN_OVERHEAD = 8 * 2**20  # allocator arenas, autograd bookkeeping, small tensors (measured ~6 MiB)
# Paid once per worker process, by its first run, and then kept: the first optimiser step's lazy
# imports (torch._dynamo, sympy; measured 72-76 MiB) and the fused selective scan's Numba
# kernels, loaded from the on-disk cache or compiled (forward and backward: measured 52 MiB).
TORCH_RUNTIME = 80 * 2**20
NUMBA_SCAN = 56 * 2**20


def runtime_bytes(numba: bool = False) -> int:
    """What a run holds besides its tensors: RUN_OVERHEAD, the torch runtime and, for runs
    through MambaBlocks (`numba`), the fused scan's kernels (see above)."""
    return RUN_OVERHEAD + TORCH_RUNTIME + (NUMBA_SCAN if numba else 0)


HISTORY_VALUE = 32  # one recorded number: a Python float (24 B) and its list slot (8 B)


def history_bytes(rows: int, keys: int) -> int:
    """Per-step metric lists kept in memory (and returned) by the trainer and the probes."""
    return int(rows) * int(keys) * HISTORY_VALUE


def gd_history_bytes(gd: GDSpec, probe_keys: int = 0) -> int:
    """fit_gd records step, train_loss, train_error and lr every step, and `probe_keys` numbers
    every probe_every steps."""
    rows = gd.max_steps + 1
    return history_bytes(rows, 4) + history_bytes(rows // gd.probe_every + 2, probe_keys)


def train_history_bytes(tc: TrainConfig, n: int) -> int:
    """trainer.train's history: a row of ≤ 6 numbers every eval_every steps (none when
    eval_every is None) and up to two more (a divergence row, the end-of-run check's row)."""
    per_epoch = 1 if tc.batch_size is None else -(-n // tc.batch_size)
    rows = 0 if tc.eval_every is None else tc.total_steps(per_epoch) // tc.eval_every
    return history_bytes(rows + 2, 6)


def feature_data_bytes(n: int, L: int, d: int) -> int:
    """A kept FeatureSequences: X (n, L, d) float32, features (n, L) int64, labels."""
    return nbytes(n, L, d) + nbytes(n, L, itemsize=8) + nbytes(n)


def feature_build_bytes(n: int, L: int, d: int) -> int:
    """The transient peak of building one split (data._tokens): the float64 gather
    B[features], the float64 noise and their float64 sum, then the float32 copy; measured 4.1-4.3×
    the float32 X."""
    return 2 * nbytes(n, L, d, itemsize=8) + nbytes(n, L, d)


def splits_bytes(n_train: int, n_test: int, L: int, d: int) -> int:
    """Both splits kept, plus the transient of building the second while the first is held."""
    return (feature_data_bytes(n_train, L, d) + feature_data_bytes(n_test, L, d)
            + feature_build_bytes(max(n_train, n_test), L, d))


def adam_state_bytes(n_params: int, optimizer: str) -> int:
    """Gradients (every optimiser) plus Adam's two moments; GD / SGD without momentum keep none."""
    moments = 2 if optimizer in ("adam", "adamw") else 0
    return nbytes(n_params) * (1 + moments)


def filtering_mamba_bytes(n_train: int, n_eval: int, L: int, d: int, m: int, n_state: int,
                          optimizer: str = "gd") -> int:
    """FilteringMamba's closed form on full batches (model.py, forward "closed").

    Training step on B = n_train sequences: gate_matrix builds segsum's masked copy and its
    cumsum, the log-sum, exp(·) (saved) and G (saved); the kernel K (cached across steps) and
    M = G ⊙ K (saved); the backward adds about two more (B, L, L) gradients: 8 × (B, L, L).
    The projections b, c = X W_B, X W_C (B, L, n), Z = X W_Oᵀ and ReLU(M Z) (B, L, m) with their
    gradients: 2 × (B, L, n) + 4 × (B, L, m). Evaluation (no autograd) in chunks of trainer.eval_rows:
    about 4 (C, L, L) at once, while the training set's cached K can still be alive."""
    params = d + 2 * d * n_state + m * d + m
    train_step = 8 * nbytes(n_train, L, L) + 2 * nbytes(n_train, L, n_state) \
        + 4 * nbytes(n_train, L, m)
    C = min(n_eval, eval_rows((L,)))
    evaluation = 4 * nbytes(C, L, L) + 2 * nbytes(C, L, max(m, n_state)) + nbytes(n_train, L, L)
    return nbytes(params) + adam_state_bytes(params, optimizer) + max(train_step, evaluation)


def attention_head_bytes(B_train: int, n_eval: int, L: int, d: int, m: int, span: int,
                         optimizer: str, window: int = 0) -> int:
    """MixerHead with one-head attention (model.py): q, k, v, the output and their
    gradients, 8 × (B, L, d); the scores, the softmax (saved) and its gradient, 3 × (B, L, span)
    (span = L for global attention, the window for the local one, whose unfolded key and value
    windows add 2 × (B, L, d · window)); the head, 4 × (B, L, m). Evaluation without autograd
    in chunks of trainer.eval_rows: about half of that."""
    params = 4 * d * d + m * d + m
    train_step = 8 * nbytes(B_train, L, d) + 3 * nbytes(B_train, L, span) \
        + 2 * nbytes(B_train, L, d, window) + 4 * nbytes(B_train, L, m)
    C = min(n_eval, eval_rows((L,)))
    evaluation = 4 * nbytes(C, L, d) + 2 * nbytes(C, L, span) + 2 * nbytes(C, L, d, window) \
        + 2 * nbytes(C, L, m)
    return nbytes(params) + adam_state_bytes(params, optimizer) + max(train_step, evaluation)


# Floats per sequence position and inner channel E of the MambaBlocks (ssmlab.layers.s6, fused CPU
# scan), at the peak RSS of a fresh worker. Training, per block: in_proj's output (2E), the conv
# output and u, dt, dt + bias and Δ = softplus(·), the scan output, y + D u, SiLU(z) and the gated
# y are saved for the backward (11 E), the pre-norm / residual tensors (~2 E at E = 2 D), the
# backward's transient gradients (~4 E), and heap growth over the steps (glibc keeps freed
# blocks: measured 15-19 E after one step, 22 E after 30). Without autograd (evaluation) about
# 9 E are alive inside a block, 12 E measured for one block and ~6 E more per further block
# while a (B, L, E) tensor is below glibc's largest mmap threshold (32 MiB): smaller freed
# blocks stay in the heap, which grows from block to block; larger ones are returned at once.
MAMBA_TRAIN_PER_BLOCK = 20
MAMBA_EVAL_FIRST = 12
MAMBA_EVAL_MORE = 6
MMAP_THRESHOLD_MAX = 32 * 2**20


def mamba_eval_bytes(depth: int, unit: int) -> int:
    """A MambaBlock stack's forward without autograd, `unit` = the bytes of one (B, L, E)
    tensor: the first block's live set and the heap growth of the further blocks (only blocks
    below the mmap threshold stay in the heap, so it grows by at most that per tensor)."""
    return MAMBA_EVAL_FIRST * unit + MAMBA_EVAL_MORE * (depth - 1) * min(unit,
                                                                         MMAP_THRESHOLD_MAX)


def mamba_blocks_bytes(B_train: int, n_eval: int, L: int, d_model: int, depth: int,
                       expand: int, d_state: int, n_params: int, optimizer: str) -> int:
    """Pre-norm residual MambaBlocks trained on batches of B_train sequences and evaluated in
    chunks of trainer.eval_rows (counts above), plus the scan's checkpoints (one (E, N) state per 64
    steps), the parameters and the optimiser state."""
    E = expand * d_model
    ckpt = nbytes(B_train, -(-L // 64), d_state, E)
    train_step = depth * (MAMBA_TRAIN_PER_BLOCK * nbytes(B_train, L, E) + ckpt)
    C = min(n_eval, eval_rows((L,)))
    evaluation = mamba_eval_bytes(depth, nbytes(C, L, E)) + nbytes(C, -(-L // 64), d_state, E)
    return nbytes(n_params) + adam_state_bytes(n_params, optimizer) + max(train_step, evaluation)


def mamba_block_params(d_model: int, expand: int, d_state: int, d_conv: int) -> int:
    """Parameters of one MambaBlock (mamba_ssm's shapes, dt_rank = ceil(d_model / 16))."""
    E, R = expand * d_model, math.ceil(d_model / 16)
    return (2 * E * d_model + E * d_conv + E + E * (R + 2 * d_state) + R * E + E + E * d_state
            + E + E * d_model + d_model)


def check_grid_data(data: StrictModel, grids: Iterable[tuple[str, str, Iterable[Any]]]) -> None:
    """Every cell's data must be valid: for each (config field, data key, values), the data
    config with `key` replaced by each value validates (else that cell's run would fail)."""
    for name, key, values in grids:
        for v in values:
            try:
                type(data).model_validate(data.model_dump() | {key: v})
            except ValidationError as e:
                msg = e.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"{name} value {v} with data ({key} replaced): {msg}") from None
