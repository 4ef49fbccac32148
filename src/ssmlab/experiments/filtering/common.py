"""Shared pieces of the filtering experiments: GD settings, training to convergence through
ssmlab.train.trainer.train, and small helpers for the analyses.

Convergence. With the hinge loss, full-batch GD stops moving exactly when every training margin
z·F(X) reaches 1 (the loss is then 0 and so is its gradient). "margin" convergence (default) is
the first step at which the training hinge loss is exactly 0: the sign error alone reaches 0
within a few steps on majority data whatever the gap (the count difference makes the classes
separable as soon as W_O has the right sign), so it cannot show Thm 1's rate. "error"
convergence is the first step with training 0-1 error ≤ `error_target`.

Both criteria map onto the trainer's converge_loss / converge_error with stop_on_converge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field
from torch import Tensor, nn

from ssmlab.config import StrictModel
from ssmlab.experiments.base import RunRecord
from ssmlab.train.trainer import Probe, TrainConfig, evaluate, train

PAPER = "filtering"


class GDSpec(StrictModel):
    """Full-batch gradient descent with a fixed step η on the hinge loss (the paper's trainer)."""

    lr: float = Field(2.0, gt=0, description="η")
    max_steps: int = Field(3000, ge=1)
    converge: Literal["margin", "error"] = "margin"
    error_target: float = Field(0.0, ge=0, lt=1, description="for converge='error'")
    probe_every: int = Field(10, ge=1)


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


def thin(values: Sequence[Any], every: int) -> list[Any]:
    """Every `every`-th element (and the last), to keep stored histories small."""
    if every <= 1 or len(values) <= 2:
        return list(values)
    idx = list(range(0, len(values), every))
    if idx[-1] != len(values) - 1:
        idx.append(len(values) - 1)
    return [values[i] for i in idx]


def ok_runs(runs: list[RunRecord]) -> list[RunRecord]:
    return [r for r in runs if r.status == "ok"]


def failed_note(runs: list[RunRecord]) -> str:
    bad = [r for r in runs if r.status not in ("ok", "skipped")]
    if not bad:
        return ""
    kinds = sorted({r.status for r in bad})
    return f"{len(bad)} of {len(runs)} runs not ok ({', '.join(kinds)}); excluded."


def finite(values: Iterable[float | None]) -> np.ndarray:
    a = np.asarray([np.nan if v is None else float(v) for v in values], float)
    return a[np.isfinite(a)]


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not np.isfinite(x):
        return "nan"
    return f"{x:.{digits}g}" if abs(x) >= 1000 else f"{x:.{digits}f}"
