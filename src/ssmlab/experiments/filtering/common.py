"""Shared pieces of the filtering experiments: GD settings, training to convergence through
ssmlab.train.trainer.train, and small helpers for the analyses.

Convergence. With the hinge loss, full-batch GD stops moving exactly when every training margin
z·F(X) reaches 1 (the loss is then 0 and so is its gradient). "margin" convergence (default) is
the first step at which the training hinge loss is exactly 0: the sign error alone reaches 0
within a few steps on majority data whatever the gap (the count difference makes the classes
separable as soon as W_O has the right sign), so it cannot show Thm 1's rate. "error"
convergence is the first step with training 0-1 error ≤ `error_target`.

The trainer has no loss-based stopping rule, so `fit_gd` calls `train` in chunks of `chunk`
steps (plain GD is stateless, so chunked training is the same trajectory) and stops after the
chunk in which the criterion was met.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
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
    chunk: int = Field(50, ge=1, description="steps between convergence checks")
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
    """Train with full-batch GD until the convergence criterion holds or max_steps."""
    probes = list(probes)
    if probes and spec.chunk % spec.probe_every != 0:
        raise ValueError("GDSpec.chunk must be a multiple of probe_every when probes are used")
    out = FitResult()
    hist: dict[str, list] = {}
    seen_probe_steps: set[int] = set()
    done = 0
    while done < spec.max_steps:
        n = min(spec.chunk, spec.max_steps - done)
        cfg = TrainConfig(optimizer="gd", lr=spec.lr, loss="hinge", epochs=n, eval_every=1,
                          probe_every=spec.probe_every, converge_error=None)
        res = train(model, cfg, train_data, None, probes, seed=seed)
        h = res.history
        for k in ("step", "train_loss", "train_error"):
            hist.setdefault(k, []).extend(
                [s + done for s in h.get(k, [])] if k == "step" else h.get(k, []))
        if "probe_step" in h:
            keys = [k for k in h if k not in ("step", "train_loss", "train_error", "lr",
                                                "test_loss", "test_error")]
            for i, ps in enumerate(h["probe_step"]):
                gs = ps + done
                if gs in seen_probe_steps:
                    continue
                seen_probe_steps.add(gs)
                for k in keys:
                    hist.setdefault(k, []).append(gs if k == "probe_step" else h[k][i])
        done += res.steps
        if res.status != "ok":
            out.status = res.status
            break
        if res.steps < n:  # the trainer stopped early for its own reasons
            break
        if spec.converge == "margin":
            hit = _first(hist["train_loss"], hist["step"], lambda v: v <= 0.0)
            if hit is None and res.final.get("train_loss", 1.0) <= 0.0:
                hit = done
        else:
            hit = _first(hist["train_error"], hist["step"], lambda v: v <= spec.error_target)
            if hit is None and res.final.get("train_error", 1.0) <= spec.error_target:
                hit = done
        if hit is not None:
            out.steps_to_converge = hit
            break
    out.steps = done
    out.steps_to_zero_error = _first(hist.get("train_error", []), hist.get("step", []),
                                     lambda v: v <= 0.0)
    out.history = hist
    if out.status == "ok":
        ev = evaluate(model, train_data, "hinge")
        out.final = {"train_loss": ev["loss"], "train_error": ev["error"]}
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


def set_threads() -> None:
    torch.set_num_threads(1)
