"""Experiment 4 (induction heads): Mamba-ΔT against Mamba across model sizes.

Mamba-ΔT (ssmlab.layers.mamba_dt) moves the input dependence of Δ from the channel dimension to
the state dimension, so one key's memory column can be erased while the others are kept. The
paper reports it at least as good as Mamba at every size on induction heads.

Set-up: ssmlab.papers.selectivity.data.induction (|V| = 16 with the trigger, T = 32 quick / 64 paper; label at the
last position); a one-layer `token_lm` (pre-norm residual, final norm, untied head), N = 8,
expand 2, d_conv 4, the two blocks identical except for the SSM; Adam (TrainSpec). Sizes are
d_model values.

Claim `selectivity/induction:dt_not_worse`: the smallest over sizes of the seed-mean accuracy
difference Mamba-ΔT - Mamba is ≥ -`tol` (a non-inferiority margin, 0.02; the interval is a paired
bootstrap over seeds: both mixers see the same data for a seed). The quick sizes include d = 4,
below the accuracy ceiling both mixers reach at d ≥ 8, so that the claim can fail.

Any mixer: `mixer` (default mamba_dt) is judged against `baseline` (default mamba); any registry
mixer or s4d_block runs the same claim as a variant (`Induction.variant`: "mixer=gla").

Unpublished choices: sizes (quick 4, 8, 16; paper 4, 8, 16, 32, 64), N, T, steps (300 quick / 1500
paper), Mamba-ΔT's input scaling ("none", the paper's recurrence; ssmlab.layers.mamba_dt).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from ssmlab.claims import ClaimSpec, Context, Diagnosis, Estimate, NoData, Region, paired_ci
from ssmlab.config import each_once
from ssmlab.data.task import split
from ssmlab.experiment import Experiment, ExperimentConfig, RunResult, register
from ssmlab.papers.selectivity.data.induction import InductionConfig
from ssmlab.papers.selectivity.experiments.common import (
    MAX_GRID,
    PAPER,
    LMMixer,
    StateSize,
    TrainSpec,
    Width,
    build_lm,
    check_mamba2_widths,
    fit,
    label,
    lm_run_bytes,
    run_metrics,
    token_accuracy,
)
from ssmlab.report import figures


class InductionExpConfig(ExperimentConfig):
    data: InductionConfig = Field(default_factory=lambda: InductionConfig(vocab_size=16, seq_len=32))
    train: TrainSpec = Field(default_factory=TrainSpec)
    mixer: LMMixer = Field("mamba_dt", description="the mixer judged against `baseline` (the "
                                                   "paper: Mamba-ΔT); any registry mixer or "
                                                   "s4d_block runs the same claim as a variant")
    baseline: LMMixer = Field("mamba", description="the reference mixer (the paper: Mamba)")
    sizes: tuple[Width, ...] = Field((8, 16), min_length=1, max_length=MAX_GRID,
                                     description="d_model values")
    d_state: StateSize = 8
    tol: float = Field(0.02, ge=0, le=1)

    @field_validator("sizes")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        each_once(v)
        return v

    @model_validator(mode="after")
    def _widths(self) -> InductionExpConfig:
        if self.mixer == self.baseline:
            raise ValueError(f"mixer and baseline are both {self.mixer!r}: nothing to compare")
        check_mamba2_widths(self.mixers, self.sizes, 2, "sizes")  # build_lm's expand = 2
        return self

    @property
    def mixers(self) -> tuple[str, str]:
        return (self.baseline, self.mixer)


@register
class Induction(Experiment):
    """selectivity, induction heads: Mamba-ΔT at least as good as Mamba at every size. Set-up,
    claim and unpublished choices: module docstring of
    ssmlab.papers.selectivity.experiments.induction."""

    id = "selectivity/induction"
    paper = PAPER
    Config = InductionExpConfig
    profiles = {
        # quick sizes include d = 4, where Mamba is not at the accuracy ceiling: at 8 and 16
        # both mixers reach ≈ 1.0 and "at least as good" cannot fail there
        "quick": {"seeds": 3, "train": {"steps": 300, "n_test": 1024}, "sizes": (4, 8, 16)},
        "paper": {"seeds": 3, "train": {"steps": 1500, "n_train": 8192, "n_test": 2048},
                  "data": {"vocab_size": 16, "seq_len": 64}, "sizes": (4, 8, 16, 32, 64)},
    }

    def variant(self, cfg: InductionExpConfig) -> str:
        return ", ".join(f"{k}={v}" for k, v, paper in (("mixer", cfg.mixer, "mamba_dt"),
                                                        ("baseline", cfg.baseline, "mamba"))
                         if v != paper)

    def cells(self, cfg: InductionExpConfig) -> list[dict[str, Any]]:
        return [{"mixer": m, "d_model": d} for m in cfg.mixers for d in cfg.sizes]

    def cost(self, cfg: InductionExpConfig, params: dict[str, Any]) -> float:
        """Grows with the width (the widest cells go first)."""
        return float(params["d_model"])

    def memory_bytes(self, cfg: InductionExpConfig) -> int:
        """The largest cell's training and evaluation (common.lm_run_bytes)."""
        return max(lm_run_bytes(m, cfg.data.vocab_size, d, cfg.d_state, cfg.data.seq_len,
                                cfg.train) for m in cfg.mixers for d in cfg.sizes)

    def run(self, cfg: InductionExpConfig, params: dict[str, Any], seed: int) -> RunResult:
        mixer, d = params["mixer"], params["d_model"]
        train_data, test_data = split(cfg.data, seed, cfg.train.n_train, cfg.train.n_test)
        lm = build_lm(mixer, cfg.data.vocab_size, d, cfg.d_state, cfg.data.seq_len, seed)
        res = fit(lm, cfg.train, train_data.inputs, train_data.labels, seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
        metrics = run_metrics(lm, res)
        metrics["test_acc"] = token_accuracy(lm, test_data.inputs, test_data.labels)
        return RunResult(metrics=metrics, history={"train_loss": res.history.get("train_loss", [])},
                         info={"mixer": mixer})

    def figures(self, ctx: Context) -> dict[str, str]:
        cfg = ctx.cfg
        sizes = sorted(cfg.sizes)
        f, (ax,) = figures.new_figure()
        for m in cfg.mixers:
            ax.plot(sizes, [np.mean([r.metrics["test_acc"] for r in ctx.select(mixer=m, d_model=d)]
                                    or [np.nan]) for d in sizes], "o-",
                    label=label(m))
        ax.set_xscale("log", base=2)
        ax.set_xlabel("d_model")
        ax.set_ylabel("induction-head accuracy")
        ax.legend(fontsize=7)
        return {"main": figures.save(f, ctx.figdir, "induction.png")}

    def specs(self, cfg: InductionExpConfig) -> list[ClaimSpec]:
        se = 2 * math.sqrt(2 * 0.05 * 0.95 / cfg.train.n_test)
        a, b = label(cfg.mixer), label(cfg.baseline)
        return [ClaimSpec(
            name="dt_not_worse", ref=REF, figure="main",
            statement=f"{a} is at least as good as {b} on induction heads at every model "
                      "size.",
            quantity=f"smallest over sizes of the seed-mean accuracy difference {a} - {b} "
                     "(same seeds, same data)",
            metric=lambda ctx: _worst_gap(ctx, cfg), region=Region.above(-cfg.tol),
            tolerance_source=f"our choice: a non-inferiority margin of {cfg.tol:g} (equal "
                             "accuracies must pass; about 2 binomial standard errors of a "
                             f"difference at accuracy 0.95 on {cfg.train.n_test} test sequences: "
                             f"{se:.3f})",
            diagnosis=Diagnosis("finding", lambda ctx: "per size: " + _gaps_text(ctx, cfg)))]


REF = "paper summaries: Mamba-ΔT on induction heads (figure number not reachable)"


def _cols(ctx: Context, cfg: InductionExpConfig) -> dict[str, list[float]]:
    """Per size, the judged mixer's ("dt") and the baseline's ("m") per-seed accuracies over the
    seeds every cell finished (so that a resample keeps each seed's numbers together)."""
    by = {}
    for d in sorted(cfg.sizes):
        for tag, m in (("dt", cfg.mixer), ("m", cfg.baseline)):
            rs = ctx.select(mixer=m, d_model=d)
            if not rs:
                raise NoData(ctx.why_empty(mixer=m, d_model=d))
            by[f"{tag}{d}"] = {r.seed: float(r.metrics["test_acc"]) for r in rs}
    seeds = sorted(set.intersection(*(set(v) for v in by.values())))
    if not seeds:
        raise NoData("no seed finished every (mixer, size) cell")
    return {name: [v[s] for s in seeds] for name, v in by.items()}


def _gaps_text(ctx: Context, cfg: InductionExpConfig) -> str:
    cols = _cols(ctx, cfg)
    return "; ".join(f"d={d}: {label(cfg.mixer)} {np.mean(cols[f'dt{d}']):.3f} vs "
                     f"{label(cfg.baseline)} {np.mean(cols[f'm{d}']):.3f}"
                     for d in sorted(cfg.sizes))


def _worst_gap(ctx: Context, cfg: InductionExpConfig) -> Estimate:
    cols = _cols(ctx, cfg)
    n = len(cfg.sizes)

    def worst(*c: np.ndarray) -> float:
        return float(min(c[2 * i].mean() - c[2 * i + 1].mean() for i in range(n)))

    return paired_ci(cols, worst, _gaps_text(ctx, cfg))
