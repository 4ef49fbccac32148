"""Experiment 1: outlier tolerance (Fig. 2, Thms 2 and 4)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, model_validator

from ssmlab.claims import ClaimSpec, Context, Diagnosis, Estimate, NoData, Region
from ssmlab.config import Distinct
from ssmlab.experiment import Experiment, ExperimentConfig, RunRecord, RunResult, register
from ssmlab.papers.icl_outliers.data import ICLDataConfig, Placement, Rule, sample_test
from ssmlab.papers.icl_outliers.experiments.common import (
    MAX_LEN,
    MAX_PROMPTS,
    Fraction,
    ModelKind,
    ModelSpec,
    SGDSpec,
    build_model,
    error_rate,
    eval_generator,
    fit,
    fit_history_bytes,
    fmt_cells,
    model_label,
    one_layer_only,
    over_seeds,
    patterns_for,
    placements_need_counts,
    runtime_bytes,
    test_set_bytes,
    train_bytes,
    variant_of,
)
from ssmlab.papers.icl_outliers.probes import query_weights
from ssmlab.papers.icl_outliers.theory import linear_alpha_threshold, mamba_alpha_threshold
from ssmlab.report import figures

PAPER = "icl_outliers"


class ToleranceConfig(ExperimentConfig):
    data: ICLDataConfig = Field(default_factory=ICLDataConfig)
    model: ModelSpec = Field(default_factory=ModelSpec)
    sgd: SGDSpec = Field(default_factory=lambda: SGDSpec(lr_by_model={"linear": 0.1}))
    models: Annotated[tuple[ModelKind, ...], Distinct] = Field(
        ("mamba", "linear"), min_length=1, max_length=3)
    l_tr: int = Field(20, ge=1, le=MAX_LEN)
    l_ts: int = Field(20, ge=1, le=MAX_LEN)
    alphas: Annotated[tuple[Fraction, ...], Distinct] = Field(
        (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), min_length=1, max_length=101,
        description="outlier fractions α (distinct at 2 decimals: they name the metrics)")
    rules: Annotated[tuple[Rule, ...], Distinct] = Field(
        ("flipped", "one_label", "random"), min_length=1, max_length=3)
    placement: Placement = "random"
    n_test: int = Field(2000, ge=1, le=MAX_PROMPTS, description="test prompts per (α, rule)")
    err_tol: float = Field(0.01, gt=0, le=1, description="'error < 0.01' (Fig. 2)")
    paper_alpha: float = Field(0.8, ge=0, le=1,
                               description="Fig. 2: Mamba error < 0.01 up to α ≈ 0.8")
    large_error: float = Field(0.1, gt=0, le=1,
                               description="'large' error of the linear Transformer")

    @model_validator(mode="after")
    def _check(self) -> ToleranceConfig:
        check_alpha_names(self.alphas)
        one_layer_only(self.model.n_layers, "icl_outliers/tolerance")
        placements_need_counts(self.data, self.placement)
        return self


def key(rule: str, alpha: float) -> str:
    return f"err_{rule}_{alpha:.2f}"


def check_alpha_names(alphas: tuple[float, ...]) -> None:
    """Each α names metrics err_<rule>_<α:.2f>, so the grid must differ at 2 decimals."""
    names: dict[str, float] = {}
    for a in alphas:
        k = key("", a)
        if k in names:
            raise ValueError(f"alphas {names[k]} and {a} share the metric name "
                             f"err_<rule>{k[4:]}: alphas must differ at 2 decimals")
        names[k] = a


@register
class Tolerance(Experiment):
    """icl_outliers, Fig. 2 / Thms 2 and 4: test error against the outlier fraction α.

    One-layer Mamba (Eq. 3) and the linear Transformer (G ≡ 1) are trained with Algorithm 1 on
    the paper's set-up (d = 30, M₁ = 6, M₂ = 10, V = 3, β = 3, κ_a = 2, δ = 0.2, p_a = 0.6,
    l_tr = l_ts = 20) and tested on unseen tasks whose contexts hold a fraction α of shifted
    outliers (V' = {v'_1, v'_2, v'_3}, L = 0.3) labelled by rule flipped / one label / random,
    at random positions.

    Claims (error averaged over seeds; max over rules unless stated):
    1. Mamba error < 0.01 for every α ≤ 0.8 (the figure).
    2. Mamba error < 0.01 for every α below Thm 2's threshold min(1, p_a l_tr / l_ts) = 0.6.
    3. The linear Transformer's error under flipped labels exceeds 0.1 (10× Mamba's tolerance,
       our reading of "large") at every α > 1/2 (Thm 4).

    Any mixer (a variant, never counted as the paper's): `model.mixer=<registry name>` trains a
    one-layer stack of that mixer (model.icl_stack) in the gated model's place, the same way
    (Algorithm 1, its η: `sgd.lr_by_model.mamba`); the linear Transformer stays the paper's.
    The gate metrics of the Fig. 2 diagnosis are then probes.query_weights' read shares.

    Unpublished choices (defaults, all in the config): SGD η = 1.0 for Mamba and 0.1 for the
    linear Transformer (whose output grows with l: η = 1.0 diverges), batch 64, 2000 steps
    (quick; the paper profile 10000), hinge loss, 2 seeds (quick) / 5 (paper); exact outlier count round(α l_ts); κ'_a = κ_a;
    2000 test prompts per (α, rule); training tasks = cyclic shifts 1..3 (the docstring of
    ssmlab.papers.icl_outliers.data says why).
    η = 1.0 is the largest of {0.1, 1.0} tried; with η = 0.1 Mamba's errors at α ≥ 0.6 are
    higher (it reaches zero training loss sooner, and the gate on outliers then stops shrinking).
    """

    id = "icl_outliers/tolerance"
    paper = PAPER
    Config = ToleranceConfig
    profiles = {
        "quick": {"seeds": 4, "n_test": 1000,
                  "sgd": {"lr": 1.0, "batch_size": 64, "steps": 2000, "lr_by_model": {"linear": 0.1}}},
        "paper": {"seeds": 5, "n_test": 4000,
                  "sgd": {"lr": 1.0, "batch_size": 64, "steps": 10000, "lr_by_model": {"linear": 0.1}}},
    }

    def variant(self, cfg: ToleranceConfig) -> str:
        return variant_of(cfg.model)

    def cells(self, cfg: ToleranceConfig) -> list[dict[str, Any]]:
        return [{"model": m} for m in cfg.models]

    def memory_bytes(self, cfg: ToleranceConfig) -> int:
        """The heavier model's run (common.py): training on fresh batches, then one test set
        of n_test prompts per (α, rule), each sampled while the previous one is still held and
        evaluated at once."""
        d = cfg.data.d
        per = [max(train_bytes(k, cfg.model, cfg.sgd.for_model(k), d, cfg.l_tr),
                   test_set_bytes(k, cfg.model, d, cfg.l_tr, cfg.n_test, cfg.l_ts, held=True))
               for k in cfg.models]
        return runtime_bytes(cfg.models, cfg.model) + max(per) + fit_history_bytes(cfg.sgd)

    def run(self, cfg: ToleranceConfig, params: dict[str, Any], seed: int) -> RunResult:
        kind = params["model"]
        pat = patterns_for(cfg.data)
        model = build_model(kind, cfg.data, cfg.model, cfg.l_tr, seed)
        res = fit(model, pat, cfg.data, cfg.sgd.for_model(kind), cfg.l_tr, seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}",
                             metrics={"diverged_at": float(res.diverged_at or 0)})
        tail = res.history["train_loss"][-5:]
        metrics: dict[str, float] = {"final_train_loss": float(np.mean(tail))}
        for ri, rule in enumerate(cfg.rules):
            for ai, alpha in enumerate(cfg.alphas):
                g = eval_generator(seed, 100 * ri + ai)
                pr = sample_test(pat, cfg.data, cfg.n_test, cfg.l_ts, alpha, rule,
                                 cfg.placement, g)
                metrics[key(rule, alpha)] = error_rate(model, pr)
                if kind == "mamba" and rule == "flipped" and abs(alpha - cfg.paper_alpha) < 1e-9:
                    with torch.no_grad():
                        G = query_weights(model, pr.P)[:, :-1]  # (B, l)
                    metrics["gate_outlier_paper_alpha"] = float(G[pr.outlier].mean())
                    metrics["gate_clean_paper_alpha"] = float(G[~pr.outlier].mean())
        return RunResult(metrics=metrics, info={"model": kind, "steps": res.steps})

    def specs(self, cfg: ToleranceConfig) -> list[ClaimSpec]:
        thr = mamba_alpha_threshold(cfg.data.p_a, cfg.l_tr, cfg.l_ts)
        half = linear_alpha_threshold()
        a_fig = [a for a in cfg.alphas if a <= cfg.paper_alpha + 1e-9]
        a_thm2 = [a for a in cfg.alphas if a < thr - 1e-9]
        a_thm4 = [a for a in cfg.alphas if half + 1e-9 < a <= cfg.paper_alpha + 1e-9]
        err_src = (f"Fig. 2's 'error < {cfg.err_tol:g}' (the paper's own threshold); the upper "
                   "end of the 95% interval must lie below it")
        return [
            ClaimSpec(
                name="mamba_fig2", ref="Fig. 2", figure="main",
                statement=f"One-layer Mamba's test error stays below {cfg.err_tol:g} up to "
                          f"α ≈ {cfg.paper_alpha:g}, for every outlier labelling rule.",
                paper_value=f"error < 0.01 up to α ≈ 0.8 (p_a = {cfg.data.p_a:g})",
                quantity=f"Mamba's largest seed-mean error over rules and α ≤ {cfg.paper_alpha:g}",
                metric=lambda ctx: _worst(ctx, cfg, "mamba", a_fig),
                region=Region.below(cfg.err_tol, strict=True), tolerance_source=err_src,
                diagnosis=Diagnosis("finding", lambda ctx: _fig2_evidence(ctx, cfg))),
            ClaimSpec(
                name="mamba_thm2", ref="Thm 2", figure="main",
                statement=f"Mamba generalizes (error < {cfg.err_tol:g}) while α < "
                          f"min(1, p_a l_tr / l_ts) = {thr:g}, for every labelling rule.",
                paper_value=f"threshold min(1, p_a l_tr / l_ts) = {thr:g}",
                quantity=f"Mamba's largest seed-mean error over rules and α < {thr:g}",
                metric=lambda ctx: _worst(ctx, cfg, "mamba", a_thm2),
                region=Region.below(cfg.err_tol, strict=True), tolerance_source=err_src),
            ClaimSpec(
                name="linear_thm4", ref="Fig. 2 / Thm 4", figure="main",
                statement="The linear Transformer generalizes only while α < 1/2: past it "
                          "(flipped outlier labels) its error is large where the gated Mamba, "
                          "trained on the same data, stays accurate.",
                paper_value="threshold 1/2",
                quantity=f"smallest gap, linear Transformer minus Mamba, of the seed-mean "
                         f"flipped-label error over 1/2 < α ≤ {cfg.paper_alpha:g}",
                metric=lambda ctx: _thm4_gap(ctx, cfg, a_thm4),
                region=Region.above(cfg.large_error),
                tolerance_source=f"'large' = {cfg.large_error:g}, 10× Fig. 2's 0.01 (our "
                "reading). The gap to Mamba is what makes the check discriminating: with "
                "flipped labels past α = 1/2 the flipped outliers are the majority, so any "
                "label-averaging model fails there (README 'Findings')"),
        ]

    def figures(self, ctx: Context) -> dict[str, str]:
        return {"main": self._figure(ctx.cfg, ctx.ok, ctx.figdir)}

    def _figure(self, cfg: ToleranceConfig, ok: list[RunRecord], figdir: Path) -> str:
        fig, axes = figures.new_figure(ncols=len(cfg.rules))
        for ax, rule in zip(axes, cfg.rules, strict=True):
            for kind in cfg.models:
                rows = [[r.metrics.get(key(rule, a), np.nan) for a in cfg.alphas]
                        for r in ok if r.params.get("model") == kind]
                if rows:
                    figures.mean_band(ax, list(cfg.alphas), rows, label=model_label(kind, cfg.model))
            ax.axvline(mamba_alpha_threshold(cfg.data.p_a, cfg.l_tr, cfg.l_ts), color="gray", ls=":",
                       lw=1, label="Thm 2 threshold")
            ax.axvline(0.5, color="gray", ls="--", lw=1, label="Thm 4: 1/2")
            ax.set_title(f"rule: {rule}")
            ax.set_xlabel("outlier fraction α")
            ax.set_ylabel("test error")
        axes[0].legend(fontsize=7)
        return figures.save(fig, figdir, "icl_tolerance.png")


def _worst(ctx: Context, cfg: ToleranceConfig, kind: str, alphas: list[float]) -> Estimate:
    """max over (rule, α) of the seed-mean error, bootstrapped over seeds."""
    if not alphas:
        raise NoData("no α of the grid lies in the claim's range")
    cols = [(rule, a) for rule in cfg.rules for a in alphas]
    mat = ctx.seed_matrix([({"model": kind}, key(r, a)) for r, a in cols])
    means = mat.mean(0)
    at = cols[int(np.nanargmax(means))] if np.isfinite(means).any() else ("-", math.nan)
    flipped = [a for a in alphas if "flipped" in cfg.rules]
    detail = (f"worst {at[0]}@α={at[1]:g}; flipped by α: "
              + fmt_cells([f"{a:g}" for a in flipped],
                          [means[cols.index(("flipped", a))] for a in flipped]))
    return over_seeds(mat, lambda m: m.mean(0).max(), detail)


def _thm4_gap(ctx: Context, cfg: ToleranceConfig, alphas: list[float]) -> Estimate:
    """min over α of (linear − Mamba) flipped-label error, the two models' runs paired by seed."""
    if not alphas or "flipped" not in cfg.rules:
        raise NoData("needs rule 'flipped' and an α in (1/2, paper_alpha]")
    if not {"mamba", "linear"} <= set(cfg.models):
        raise NoData("needs both models")
    cols = [({"model": k}, key("flipped", a)) for a in alphas for k in ("linear", "mamba")]
    mat = ctx.seed_matrix(cols)
    n = len(alphas)

    def gap(m: np.ndarray) -> float:
        mm = m.mean(0).reshape(n, 2)
        return float((mm[:, 0] - mm[:, 1]).min())

    mm = mat.mean(0).reshape(n, 2)
    detail = ("flipped-label error linear / Mamba by α: "
              + ", ".join(f"{a:g}: {lt:.3f} / {ma:.3f}" for a, (lt, ma)
                          in zip(alphas, mm, strict=True)))
    return over_seeds(mat, gap, detail)


def _fig2_evidence(ctx: Context, cfg: ToleranceConfig) -> str:
    """Numbers from the stored runs: how far Mamba stays below the threshold, and the gates."""
    reach = math.nan
    for a in sorted(cfg.alphas):
        try:
            worst = max(float(np.mean(ctx.values(key(r, a), model="mamba"))) for r in cfg.rules)
        except NoData:
            break
        if worst >= cfg.err_tol:
            break
        reach = a
    g_out = float(np.nanmean([r.metrics.get("gate_outlier_paper_alpha", math.nan)
                              for r in ctx.select(model="mamba")] or [math.nan]))
    g_cl = float(np.nanmean([r.metrics.get("gate_clean_paper_alpha", math.nan)
                             for r in ctx.select(model="mamba")] or [math.nan]))
    n_out = int(np.floor(cfg.paper_alpha * cfg.l_ts + 0.5))
    return (f"Mamba stays below {cfg.err_tol:g} (every rule) up to α = {reach:g} only. At "
            f"α = {cfg.paper_alpha:g} the mean gate on a shifted outlier is {g_out:.4f} against "
            f"{g_cl:.4f} on a clean example ({g_out / g_cl:.2f}×), so {n_out} flipped-label "
            f"outliers carry a total gate of {n_out * g_out:.2f} against "
            f"{(cfg.l_ts - n_out) * g_cl:.2f} for the {cfg.l_ts - n_out} clean examples: enough "
            "to flip the prompts where the outliers' scores are large. The gates on outliers "
            "shrink only while the "
            "hinge loss is non-zero, and the weakest shifted outlier (v'_3, Σλ = L = 0.3) keeps "
            "0.3 of the learned v* suppression. Not an artefact of training length: 5× longer "
            "training (10000 steps) lowers the flipped-label error at α = 0.8 from 0.138 to "
            "0.122 [0.101, 0.142], still far above 0.01; with Bernoulli outlier counts (the "
            "paper's wording) it is 0.234 (README 'Findings', with the commands).")
