"""Experiment 2: iterations to converge (Thms 1 and 3)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import numpy as np
from pydantic import Field, ValidationError, model_validator

from ssmlab.claims import ClaimSpec, Context, Estimate, Region
from ssmlab.config import Distinct
from ssmlab.experiment import MAX_SEEDS, Experiment, ExperimentConfig, RunResult, register
from ssmlab.papers.icl_outliers.data import MAX_PATTERNS, ICLDataConfig
from ssmlab.papers.icl_outliers.experiments.common import (
    MAX_GRID,
    MAX_LEN,
    MAX_PROMPTS,
    MAX_TOL,
    MODEL_LABELS,
    ContextLength,
    ModelSpec,
    Probability,
    SGDSpec,
    build_model,
    history_bytes,
    over_seeds,
    paper_model_only,
    patterns_for,
    runtime_bytes,
    steps_to_loss,
    test_set_bytes,
    train_bytes,
)
from ssmlab.papers.icl_outliers.theory import (
    SLOPE_LINEAR_VS_LTR,
    SLOPE_MAMBA_VS_INV_CLEAN,
    SLOPE_MAMBA_VS_LTR,
    SLOPE_MAMBA_VS_M1,
    SLOPE_RATIO_VS_LTR,
)
from ssmlab.report import figures
from ssmlab.report.stats import loglog_fit

PAPER = "icl_outliers"
MAX_LOSS = 100.0  # the hinge loss starts near 1
PatternCount = Annotated[int, at.Ge(3), at.Le(MAX_PATTERNS)]  # M₁ ≥ 3 (ICLDataConfig)


class IterationsConfig(ExperimentConfig):
    data: ICLDataConfig = Field(default_factory=lambda: ICLDataConfig(p_a=0.2))
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(delta=0.02))
    sgd: SGDSpec = Field(default_factory=lambda: SGDSpec(lr=0.01, steps=20000))
    sgd_scaling: SGDSpec = Field(
        default_factory=lambda: SGDSpec(lr=0.01, steps=20000),
        description="SGD for the Mamba-only p_a and M₁ sweeps")
    target_loss: float = Field(0.1, gt=0, le=MAX_LOSS,
                               description="converged: held-out hinge loss ≤ this")
    holdout: int = Field(256, ge=1, le=MAX_PROMPTS,
                         description="held-out training-distribution prompts")
    resolution: float = Field(0.05, gt=0, le=MAX_TOL,
                              description="relative resolution of the step count")
    l_trs: Annotated[tuple[ContextLength, ...], Distinct] = Field(
        (10, 20, 40, 80), min_length=1, max_length=MAX_GRID)
    l_tr_fixed: int = Field(20, ge=1, le=MAX_LEN, description="l_tr of the p_a and M₁ sweeps")
    p_as: Annotated[tuple[Probability, ...], Distinct] = Field(
        (0.0, 0.3, 0.6, 0.8), min_length=1, max_length=MAX_GRID)
    M1s: Annotated[tuple[PatternCount, ...], Distinct] = Field(
        (3, 6, 12), min_length=1, max_length=MAX_GRID)
    slope_tol: float = Field(0.5, gt=0, le=MAX_TOL, description="each fitted slope within ± this")
    l_tr_seeds: int | None = Field(
        None, ge=1, le=MAX_SEEDS, description="seeds of the (model, l_tr) sweep, the costly "
        "one (Mamba at η = 0.01); None = seeds. The cheap p_a and M₁ sweeps use all seeds")

    @model_validator(mode="after")
    def _check_cells(self) -> IterationsConfig:
        """Each M₁ of the sweep must give a valid data model with the other sizes (as run()
        builds it: default training shifts), else its runs fail."""
        for k in self.M1s:
            try:
                ICLDataConfig.model_validate(self.data.model_dump() | {"M1": k,
                                                                       "train_shifts": None})
            except ValidationError as e:
                msg = e.errors()[0]["msg"].removeprefix("Value error, ")
                raise ValueError(f"M1s value {k} with data.M2={self.data.M2}, data.V="
                                 f"{self.data.V}, data.d={self.data.d}: {msg}") from None
        paper_model_only(self.model, "icl_outliers/iterations", "Thms 1 and 3's step counts")
        return self


@register
class Iterations(Experiment):
    """icl_outliers, Thms 1 and 3: SGD steps until the training hinge loss is ≤ 0.1.

    Thm 1: T_M = Θ(η⁻¹ (1 - p_a)⁻¹ β⁻² M₁) for Mamba; Thm 3: T_T = Θ(η⁻¹ (1 - p_a)⁻¹ β⁻² l_tr⁻¹ M₁)
    for the linear Transformer; so T_M / T_T grows linearly in l_tr.

    Sweeps (cells): (model, l_tr) for both models; p_a and M₁ for Mamba at l_tr = 20.
    Claims (ids icl_outliers/iterations:<name>; log-log slopes of the seed-mean step counts,
    each within ± 0.5 of the prediction; 95% intervals refit the slope on seed resamples):
    - ratio_vs_ltr (Thms 1, 3): T_M / T_T against l_tr: slope 1.
    - mamba_vs_ltr (Thm 1): T_M against l_tr: slope 0. linear_vs_ltr (Thm 3): T_T: slope -1.
    - mamba_vs_inv_clean (Thm 1): T_M against 1 / (1 - p_a): slope 1.
    - mamba_vs_M1 (Thm 1): T_M against M₁: slope 1.
    A run that does not converge within the step budget has no step count; its cell makes the
    slope undefined (a FAIL) rather than entering as the budget (a censored count).

    Convergence: the hinge loss on 256 fixed held-out training-distribution prompts, checked on
    a geometric grid of steps (5 % relative resolution, common.steps_to_loss).

    Unpublished choices: d = 30, M₂ = 10, V = 3, β = 3, κ_a = 2 as in Sec. 5, p_a = 0.2 for the
    l_tr sweep, target loss 0.1, SGD η = 0.01 (both models), batch 64, at most 20000 steps. The
    init δ = 0.02 instead of 0.2 (δ ∈ (0, 0.2] is allowed): with δ = 0.2 the linear
    Transformer's output at init already has margin ≥ 1 for l_tr ≥ 20 (loss below the target at
    step 0), because its output sums over all l examples; a small δ starts both models at loss ≈ 1.
    η = 0.01 keeps the linear Transformer's count ≥ 3 steps at l_tr = 80. The quick profile runs
    the Mamba-only p_a and M₁ sweeps with η = 0.05 to save time (T = Θ(1/η): only their slopes
    are used).
    """

    id = "icl_outliers/iterations"
    paper = PAPER
    Config = IterationsConfig
    profiles = {
        "quick": {"seeds": 6, "l_tr_seeds": 3, "sgd_scaling": {"lr": 0.05, "steps": 4000}},
        "paper": {"seeds": 5, "l_trs": [5, 10, 20, 40, 80, 160], "p_as": [0.0, 0.2, 0.4, 0.6, 0.8],
                  "M1s": [3, 4, 6, 8, 12]},
    }

    def cells(self, cfg: IterationsConfig) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cap = {} if cfg.l_tr_seeds is None else {"_seeds": cfg.l_tr_seeds}
        out += [{"sweep": "l_tr", "model": m, "l_tr": l} | cap for m in ("mamba", "linear")
                for l in cfg.l_trs]
        out += [{"sweep": "p_a", "model": "mamba", "p_a": p} for p in cfg.p_as]
        out += [{"sweep": "M1", "model": "mamba", "M1": k} for k in cfg.M1s]
        return out

    def memory_bytes(self, cfg: IterationsConfig) -> int:
        """The longest context of the cells, for either model (common.py): training on fresh
        batches, and the fixed held-out set evaluated at once at every check; the checks'
        history is O(log steps / resolution) numbers."""
        l, d = max(*cfg.l_trs, cfg.l_tr_fixed), cfg.data.d
        per = []
        for kind in ("mamba", "linear"):
            for sgd in (cfg.sgd.for_model(kind), cfg.sgd_scaling):
                per.append(max(train_bytes(kind, cfg.model, sgd, d, l),
                               test_set_bytes(kind, cfg.model, d, l, cfg.holdout, l)))
        T = max(cfg.sgd.steps, cfg.sgd_scaling.steps)
        checks = min(T, (1 + math.log(T)) / cfg.resolution) + 2  # steps_to_loss's grid
        return (runtime_bytes(("mamba", "linear"), cfg.model) + max(per)
                + history_bytes(int(checks), 2))

    def run(self, cfg: IterationsConfig, params: dict[str, Any], seed: int) -> RunResult:
        sweep, kind = params["sweep"], params["model"]
        data, sgd, l_tr = cfg.data, cfg.sgd.for_model(kind), cfg.l_tr_fixed
        if sweep == "l_tr":
            l_tr = int(params["l_tr"])
        elif sweep == "p_a":
            data, sgd = data.model_copy(update={"p_a": float(params["p_a"])}), cfg.sgd_scaling
        elif sweep == "M1":
            data = ICLDataConfig(**(data.model_dump() | {"M1": int(params["M1"]),
                                                          "train_shifts": None}))
            sgd = cfg.sgd_scaling
        pat = patterns_for(data)
        model = build_model(kind, data, cfg.model, l_tr, seed)
        n, steps, losses = steps_to_loss(model, pat, data, sgd, l_tr, seed, cfg.target_loss,
                                         cfg.resolution, cfg.holdout)
        metrics = {"steps": float(n) if n is not None else float("nan"),
                   "eta_steps": sgd.lr * n if n is not None else float("nan"),
                   "initial_loss": losses[0], "final_loss": losses[-1]}
        return RunResult(metrics=metrics, history={"check_step": steps, "holdout_loss": losses},
                         info={"converged": n is not None, "lr": sgd.lr})

    def specs(self, cfg: IterationsConfig) -> list[ClaimSpec]:
        tol = (f"± {cfg.slope_tol:g} around the theorem's exponent (our choice: the Θ orders "
               "fix the exponent but not the lower-order terms of a finite grid)")

        def spec(name: str, ref: str, statement: str, pred: float, quantity: str,
                 metric) -> ClaimSpec:
            return ClaimSpec(name=name, ref=ref, statement=statement, quantity=quantity,
                             paper_value=f"exponent {pred:g}", metric=metric, figure="main",
                             region=Region.around(pred, cfg.slope_tol), tolerance_source=tol,
                             note=lambda ctx: _unconverged_note(ctx, cfg))

        return [
            spec("ratio_vs_ltr", "Thms 1, 3", "Mamba needs about l_tr times more SGD steps than "
                 "the linear Transformer: T_M / T_T grows linearly with l_tr.",
                 SLOPE_RATIO_VS_LTR, "log-log slope of T_M / T_T (seed means) against l_tr",
                 lambda ctx: _ltr_slope(ctx, cfg, "ratio")),
            spec("mamba_vs_ltr", "Thm 1", "Mamba's iterations do not depend on l_tr.",
                 SLOPE_MAMBA_VS_LTR, "log-log slope of T_M (seed mean) against l_tr",
                 lambda ctx: _ltr_slope(ctx, cfg, "mamba")),
            spec("linear_vs_ltr", "Thm 3", "The linear Transformer's iterations scale as "
                 "1 / l_tr.", SLOPE_LINEAR_VS_LTR,
                 "log-log slope of T_T (seed mean) against l_tr",
                 lambda ctx: _ltr_slope(ctx, cfg, "linear")),
            spec("mamba_vs_inv_clean", "Thm 1", "Mamba's iterations scale as 1 / (1 - p_a).",
                 SLOPE_MAMBA_VS_INV_CLEAN, "log-log slope of T_M (seed mean) against "
                 "1 / (1 - p_a)", lambda ctx: _sweep_slope(ctx, "p_a", list(cfg.p_as),
                                                           lambda p: 1.0 / (1.0 - p))),
            spec("mamba_vs_M1", "Thm 1", "Mamba's iterations scale linearly with M₁.",
                 SLOPE_MAMBA_VS_M1, "log-log slope of T_M (seed mean) against M₁",
                 lambda ctx: _sweep_slope(ctx, "M1", list(cfg.M1s), float)),
        ]

    def figures(self, ctx: Context) -> dict[str, str]:
        cfg = ctx.cfg
        l = list(cfg.l_trs)
        tm = [_cell_mean(ctx, sweep="l_tr", model="mamba", l_tr=v) for v in l]
        tt = [_cell_mean(ctx, sweep="l_tr", model="linear", l_tr=v) for v in l]
        ratio = [a / b if b and np.isfinite(a) and np.isfinite(b) else np.nan
                 for a, b in zip(tm, tt, strict=True)]
        inv = [1.0 / (1.0 - p) for p in cfg.p_as]
        tp = [_cell_mean(ctx, sweep="p_a", model="mamba", p_a=p) for p in cfg.p_as]
        tk = [_cell_mean(ctx, sweep="M1", model="mamba", M1=k) for k in cfg.M1s]
        fig = self._figure(cfg, l, tm, tt, ratio, loglog_fit(l, ratio), inv, tp,
                           loglog_fit(inv, tp), tk, loglog_fit(list(cfg.M1s), tk), ctx.figdir)
        return {"main": fig}

    def _figure(self, cfg, l, tm, tt, ratio, f_ratio, inv, tp, f_p, tk, f_k, figdir: Path) -> str:
        fig, axes = figures.new_figure(ncols=3)
        ax = axes[0]
        ax.loglog(l, tm, "o-", label=MODEL_LABELS["mamba"])
        ax.loglog(l, tt, "s-", label=MODEL_LABELS["linear"])
        ax.loglog(l, ratio, "^-", label="ratio T_M / T_T")
        if np.isfinite(f_ratio.slope):
            figures.fit_line(ax, l, f_ratio, predicted=SLOPE_RATIO_VS_LTR, label="ratio fit")
        ax.set_xlabel("l_tr")
        ax.set_ylabel(f"steps to loss ≤ {cfg.target_loss:g}")
        ax.legend(fontsize=6)
        for ax, x, y, f, pred, xl in ((axes[1], inv, tp, f_p, SLOPE_MAMBA_VS_INV_CLEAN, "1 / (1 - p_a)"),
                                      (axes[2], list(cfg.M1s), tk, f_k, SLOPE_MAMBA_VS_M1, "M₁")):
            ax.loglog(x, y, "o", label="Mamba")
            if np.isfinite(f.slope):
                figures.fit_line(ax, x, f, predicted=pred)
            ax.set_xlabel(xl)
            ax.legend(fontsize=6)
        return figures.save(fig, figdir, "icl_iterations.png")


def _cell_mean(ctx: Context, **params: Any) -> float:
    rs = ctx.select(**params)
    return float(np.mean([r.metrics.get("steps", np.nan) for r in rs])) if rs else float("nan")


def _loglog_slope(x: list[float], y: np.ndarray) -> float:
    if not np.all(np.isfinite(y)):
        return float("nan")  # an unconverged cell has no step count: no slope
    return loglog_fit(x, list(y)).slope


def _pts(xs: list[Any], ys: np.ndarray) -> str:
    return ", ".join(f"{x:g}:{y:.0f}" for x, y in zip(xs, ys, strict=True))


def _ltr_slope(ctx: Context, cfg: IterationsConfig, what: str) -> Estimate:
    """Slope against l_tr of T_M, T_T or their ratio, refitted on seed resamples (a seed's
    Mamba and linear runs stay together)."""
    l = list(cfg.l_trs)
    cols = [({"sweep": "l_tr", "model": m, "l_tr": v}, "steps") for m in ("mamba", "linear")
            for v in l]
    mat = ctx.seed_matrix(cols)
    n = len(l)

    def stat(m: np.ndarray) -> float:
        tm, tt = m[:, :n].mean(0), m[:, n:].mean(0)
        y = {"mamba": tm, "linear": tt, "ratio": tm / tt}[what]
        return _loglog_slope(l, y)

    tm, tt = mat[:, :n].mean(0), mat[:, n:].mean(0)
    detail = f"steps by l_tr: Mamba {_pts(l, tm)}; linear {_pts(l, tt)}"
    return over_seeds(mat, stat, detail)


def _sweep_slope(ctx: Context, sweep: str, values: list[Any], x_of) -> Estimate:
    mat = ctx.seed_matrix([({"sweep": sweep, "model": "mamba", sweep: v}, "steps")
                            for v in values])
    x = [x_of(v) for v in values]
    return over_seeds(mat, lambda m: _loglog_slope(x, m.mean(0)),
                      f"steps by {sweep}: {_pts(values, mat.mean(0))}")


def _unconverged_note(ctx: Context, cfg: IterationsConfig) -> str:
    bad = [r for r in ctx.ok if not np.isfinite(r.metrics.get("steps", np.nan))]
    if not bad:
        return ""
    return (f"{len(bad)} runs did not reach loss {cfg.target_loss:g} within the step budget "
            "(no step count, so no slope: a censored count would bias it): "
            + ", ".join(f"{r.params} seed {r.seed}" for r in bad[:4]))
