"""Experiment 4 (induction heads): Mamba-ΔT against Mamba across model sizes.

Mamba-ΔT (ssmlab.layers.mamba_dt) moves the input dependence of Δ from the channel dimension to
the state dimension, so one key's memory column can be erased while the others are kept. The
paper reports it at least as good as Mamba at every size on induction heads.

Set-up: ssmlab.papers.selectivity.data.induction (|V| = 16 with the trigger, T = 32 quick / 64 paper; label at the
last position); a one-layer `TokenLM` (pre-norm residual, final norm, untied head), N = 8,
expand 2, d_conv 4, the two blocks identical except for the SSM; Adam (TrainSpec). Sizes are
d_model values.

Claim: accuracy(Mamba-ΔT) ≥ accuracy(Mamba) - max(`tol`, 2·SE) at every size (mean over seeds;
SE = binomial standard error of the accuracy difference from the test-set size, so a gap within
test-set noise is not read as a loss; `tol` = 0.02).

Unpublished choices: sizes (quick 8, 16; paper 8, 16, 32, 64), N, T, steps (300 quick / 1500
paper), Mamba-ΔT's input scaling ("none", the paper's recurrence; ssmlab.layers.mamba_dt).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from ssmlab.config import each_once
from ssmlab.experiment import (
    Claim,
    Experiment,
    ExperimentConfig,
    RunRecord,
    RunResult,
    register,
)
from ssmlab.papers.selectivity.data.induction import InductionConfig
from ssmlab.papers.selectivity.experiments.common import (
    MAX_GRID,
    MIXER_LABELS,
    MIXERS,
    PAPER,
    LMMixer,
    StateSize,
    TrainSpec,
    Width,
    build_lm,
    check_mamba2_widths,
    fit,
    lm_run_bytes,
    run_metrics,
    token_accuracy,
)
from ssmlab.records import not_ok_note
from ssmlab.report import figures
from ssmlab.report.stats import group_by, mean_std


class InductionExpConfig(ExperimentConfig):
    data: InductionConfig = Field(default_factory=lambda: InductionConfig(vocab_size=16, seq_len=32))
    train: TrainSpec = Field(default_factory=TrainSpec)
    mixers: tuple[LMMixer, ...] = Field(("mamba", "mamba_dt"), min_length=1,
                                        max_length=len(MIXERS), description=f"any of {MIXERS}")
    sizes: tuple[Width, ...] = Field((8, 16), min_length=1, max_length=MAX_GRID,
                                     description="d_model values")
    d_state: StateSize = 8
    tol: float = Field(0.02, ge=0, le=1)

    @field_validator("mixers")
    @classmethod
    def _distinct_mixers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        each_once(v)
        return v

    @field_validator("sizes")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        each_once(v)
        return v

    @model_validator(mode="after")
    def _widths(self) -> InductionExpConfig:
        check_mamba2_widths(self.mixers, self.sizes, 2, "sizes")  # build_lm's expand = 2
        return self


@register
class Induction(Experiment):
    """selectivity, induction heads: Mamba-ΔT at least as good as Mamba at every size. Set-up,
    claim and unpublished choices: module docstring of
    ssmlab.papers.selectivity.experiments.induction."""

    id = "selectivity/induction"
    paper = PAPER
    Config = InductionExpConfig
    profiles = {
        "quick": {"seeds": 2, "train": {"steps": 300, "n_test": 1024}},
        "paper": {"seeds": 3, "train": {"steps": 1500, "n_train": 8192, "n_test": 2048},
                  "data": {"vocab_size": 16, "seq_len": 64}, "sizes": (8, 16, 32, 64)},
    }

    def cells(self, cfg: InductionExpConfig) -> list[dict[str, Any]]:
        return [{"mixer": m, "d_model": d} for m in cfg.mixers for d in cfg.sizes]

    def memory_bytes(self, cfg: InductionExpConfig) -> int:
        """The largest cell's training and evaluation (common.lm_run_bytes)."""
        return max(lm_run_bytes(m, cfg.data.vocab_size, d, cfg.d_state, cfg.data.seq_len,
                                cfg.train) for m in cfg.mixers for d in cfg.sizes)

    def run(self, cfg: InductionExpConfig, params: dict[str, Any], seed: int) -> RunResult:
        mixer, d = params["mixer"], params["d_model"]
        train_data = cfg.data.model_copy(update={"num_examples": cfg.train.n_train}).build(seed, "train")
        test_data = cfg.data.model_copy(update={"num_examples": cfg.train.n_test}).build(seed, "test")
        lm = build_lm(mixer, cfg.data.vocab_size, d, cfg.d_state, cfg.data.seq_len, seed)
        res = fit(lm, cfg.train, train_data.inputs, train_data.labels, seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
        metrics = run_metrics(lm, res)
        metrics["test_acc"] = token_accuracy(lm, test_data.inputs, test_data.labels)
        return RunResult(metrics=metrics, history={"train_loss": res.history.get("train_loss", [])},
                         info={"mixer": mixer})

    def analyze(self, cfg: InductionExpConfig, runs: list[RunRecord], figdir: Path) -> list[Claim]:
        ok = [r for r in runs if r.status == "ok"]
        acc = {k: mean_std([r.metrics["test_acc"] for r in rs])[0]
               for k, rs in group_by(ok, lambda r: (r.params["mixer"], r.params["d_model"])).items()}
        counts = {k: len(rs) * cfg.train.n_test
                   for k, rs in group_by(ok, lambda r: (r.params["mixer"], r.params["d_model"])).items()}
        sizes = sorted(cfg.sizes)
        gaps = [acc.get(("mamba_dt", d), np.nan) - acc.get(("mamba", d), np.nan) for d in sizes]
        tols = [max(cfg.tol, 2 * _se_diff(acc, counts, d)) for d in sizes]
        passed = (bool(gaps) and all(np.isfinite(gaps))
                  and all(g >= -t for g, t in zip(gaps, tols, strict=True)))
        fig = None
        if ok:
            f, (ax,) = figures.new_figure()
            for m in cfg.mixers:
                ax.plot(sizes, [acc.get((m, d), np.nan) for d in sizes], "o-", label=MIXER_LABELS.get(m, m))
            ax.set_xscale("log", base=2)
            ax.set_xlabel("d_model")
            ax.set_ylabel("induction-head accuracy")
            ax.legend(fontsize=7)
            fig = figures.save(f, figdir, "induction.png")
        return [Claim(
            paper=PAPER, experiment=self.id, ref="Sec. Mamba-ΔT (induction heads)",
            claim="Mamba-ΔT is at least as good as Mamba on induction heads at every model size.",
            measured="; ".join(f"d={d}: Mamba-ΔT {acc.get(('mamba_dt', d), np.nan):.3f} vs Mamba "
                               f"{acc.get(('mamba', d), np.nan):.3f} (tolerance {t:.3f})"
                               for d, t in zip(sizes, tols, strict=True)),
            expected=f"acc(Mamba-ΔT) ≥ acc(Mamba) - max({cfg.tol:g}, 2 SE of the difference) "
                     "at every size",
            passed=passed, value=float(min(gaps)) if gaps and all(np.isfinite(gaps)) else None,
            figure=fig, note=not_ok_note(runs))]


def _se_diff(acc: dict, counts: dict, d: int) -> float:
    """Binomial standard error of acc(Mamba-ΔT) - acc(Mamba) at size d (test-set noise)."""
    var = 0.0
    for m in ("mamba_dt", "mamba"):
        p, n = acc.get((m, d), np.nan), counts.get((m, d), 0)
        if not np.isfinite(p) or n == 0:
            return float("nan")
        var += p * (1 - p) / n
    return float(np.sqrt(var))
