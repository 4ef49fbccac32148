"""Bound vs T (generalization paper, Thm 3.3 / Thm 4.1 / Table 1) for trained models.

The capacity term of the upper bound, M_Δ B_w B_u³ B_B B_C B_A · S₂(ρ_A, T)/√m, is computed from
the norms of trained Majority models (up to the bound's unknown constant and log factors, which
do not depend on T — see ssmlab.papers.generalization.theory), beside the measured generalization gap,
for three regimes of the spectral abscissa: s_A = -0.1 (< 0), 0, +0.1 (> 0). To hold the regime
fixed during training, A ≡ s_A is not trained here (`model.fix_A = True`, the authors' fix_sA
mode); set it False to train A from the s_A initialisation instead. With A fixed, the factor
B_A = |s_A| is a constant of the set-up (and 0 at s_A = 0, which would zero the product), so it
is dropped; every other norm is the trained model's. The analysis recomputes the term
from the stored norms with `rho_form`. Default "worst_case": ρ_A must bound exp(Δ_t s_A) for
every admissible input; for s_A > 0 that is the *largest* step softplus(p + B_q B_u). The
authors' code writes ρ_A = (1 + e^{p - B_q B_u})^{s_A}, the *smallest* step, which is the
worst case for s_A < 0 (both forms agree there) but not a bound for s_A > 0, where it keeps
ρ_A within 1e-3 of 1 and hides the exponential growth of the table's s_A ≥ 0 row ('code' is
an option; each claim prints the other form's number beside its own).

Claims (ids generalization/bound_vs_T:<name>; tolerances up front):
  capacity_growth_pos  s_A > 0: the capacity term grows exponentially in T. With the trained
      norms of the s_A > 0 models at their own T (the last probe before divergence for diverged
      runs), ln C(T_max) - ln C(T_min) (paired bootstrap over seeds) must exceed the growth
      2 ln(T_max/T_min) of the ρ_A = 1 case (S₂ ∝ T²).
  gap_neg  the measured gap does not grow with T for s_A < 0 (the regime where the bound is
      length independent): slope ≤ `gap_slope_tol` per 100 tokens (t-interval over runs), the
      Majority tolerance of generalization/length_majority; one-sided, as the bound limits
      growth only. The note gives T₉₀, the length at which S₂ reaches 90% of its limit.
Dropped: "for s_A < 0 every trained model has ρ_A < 1". With A ≡ s_A < 0 fixed and Δ_t > 0,
ρ_A = exp(s_A softplus(·)) < 1 by construction: the check could not fail (README, "Where each
claim lives").
Quick profile: T = 50 / 150 / 300, 3 runs, 15 epochs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from ssmlab.claims import ClaimSpec, Context, Diagnosis, Estimate, NoData, Region
from ssmlab.claims.stats import paired_ci, slope_ci
from ssmlab.config import each_once
from ssmlab.experiment import Experiment, ExperimentConfig, RunRecord, RunResult, register
from ssmlab.papers.generalization.experiments.common import (
    MAX_GRID,
    MAX_SLOPE_TOL,
    Length,
    ModelSettings,
    PaperTraining,
    Seeds,
    SpectralAbscissa,
    TaskSettings,
    build_task,
    train_run,
    train_run_bytes,
)
from ssmlab.papers.generalization.theory import (
    TABLE_ROWS,
    NormQuantities,
    RhoForm,
    log_capacity_term,
    log_s2,
    s2_limit,
    t_dependence,
)
from ssmlab.report.figures import new_figure, save
from ssmlab.report.stats import fmt_pm, mean_std

NORM_FIELDS = tuple(NormQuantities.__dataclass_fields__)

PAPER = "generalization"


class BoundConfig(ExperimentConfig):
    """The grid is T_values × sA_values (both non-empty, values distinct)."""

    seeds: Seeds = 3
    T_values: list[Length] = Field(default_factory=lambda: [25, 50, 100, 200, 300, 400],
                                   min_length=1, max_length=MAX_GRID)
    sA_values: list[SpectralAbscissa] = Field(default_factory=lambda: [-0.1, 0.0, 0.1],
                                              min_length=1, max_length=MAX_GRID)
    model: ModelSettings = Field(default_factory=lambda: ModelSettings(fix_A=True))
    task: TaskSettings = Field(default_factory=TaskSettings)
    training: PaperTraining = Field(default_factory=lambda: PaperTraining(epochs=40))
    gap_slope_tol: float = Field(0.05 / 3.75, gt=0, le=MAX_SLOPE_TOL,
                                 description="per 100 tokens (length_majority)")
    rho_form: RhoForm = Field(
        "worst_case", description="ρ_A form used by the claims: 'worst_case' (default) bounds "
        "exp(Δ_t s_A) over every admissible input, as the bound needs; 'code' is the authors' "
        "smallest-step form, equal for s_A < 0 and not a bound for s_A > 0 (theory module)")

    @field_validator("T_values", "sA_values")
    @classmethod
    def _distinct(cls, v: list, info: Any) -> list:
        each_once(v)
        return v


def _regime(r: RunRecord) -> str:
    s = r.metrics.get("s_A", float(r.params["s_A"]))
    return "neg" if s < 0 else ("zero" if s == 0 else "pos")


def t90(rho: float) -> float:
    """Smallest T with S₂(ρ, T) ≥ 0.9 · ρ/(1-ρ)² (inf for ρ ≥ 1), by bisection on log S₂."""
    if not rho < 1:
        return math.inf
    target = math.log(0.9 * s2_limit(rho))
    lo, hi = 1, 2
    while log_s2(rho, hi) < target:
        lo, hi = hi, hi * 2
        if hi > 2**40:
            return math.inf
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if log_s2(rho, mid) < target:
            lo = mid
        else:
            hi = mid
    return float(hi)


@register
class BoundVsT(Experiment):
    """generalization paper, Thm 3.3 (upper bound), Thm 4.1 (lower bound), Table 1: the capacity
    term vs T for trained models with s_A < 0, = 0, > 0 and the measured gap beside it. Set-up
    and tolerances: ssmlab.papers.generalization.experiments.bound (module docstring)."""

    id = "generalization/bound_vs_T"
    paper = PAPER
    Config = BoundConfig
    profiles = {
        "quick": {"seeds": 3, "T_values": [50, 150, 300], "training": {"epochs": 15}},
        "paper": {},
    }

    def cells(self, cfg: BoundConfig) -> list[dict[str, Any]]:
        return [{"T": int(T), "s_A": float(s)} for s in cfg.sA_values for T in cfg.T_values]

    def cost(self, cfg: BoundConfig, params: dict[str, Any]) -> float:
        """Linear in the sequence length T (the longest sequences go first)."""
        return float(params["T"])

    def memory_bytes(self, cfg: BoundConfig) -> int:
        """One Majority run at the largest T (common.train_run_bytes)."""
        return train_run_bytes(cfg.model, cfg.training, "majority", cfg.task, max(cfg.T_values))

    def run(self, cfg: BoundConfig, params: dict[str, Any], seed: int) -> RunResult:
        data = build_task("majority", cfg.task, int(params["T"]), seed)
        model = cfg.model.model_copy(update={"s_A": float(params["s_A"])})
        return train_run(model, cfg.training, data, seed)

    def specs(self, cfg: BoundConfig) -> list[ClaimSpec]:
        other: RhoForm = "code" if cfg.rho_form == "worst_case" else "worst_case"
        return [
            ClaimSpec(
                name="capacity_growth_pos", ref="Thm 3.3, comparison table (s_A ≥ 0 row)",
                statement="for s_A > 0 the capacity term of Thm 3.3 grows exponentially in T "
                          "(like T ρ_A^T), faster than the T² of ρ_A = 1",
                paper_value="T ρ_A^T (no numbers published)",
                quantity=f"ln C(T_max) − ln C(T_min) of the s_A > 0 models (ρ_A form "
                         f"'{cfg.rho_form}')",
                metric=capacity_growth, region=Region.above(
                    2 * math.log(max(cfg.T_values) / min(cfg.T_values)), strict=True),
                tolerance_source="the growth 2 ln(T_max/T_min) of S₂ ∝ T² at ρ_A = 1 (s_A = 0): "
                                 "exponential growth must exceed it",
                diagnosis=Diagnosis("finding", lambda ctx: (
                    f"with the '{other}' form the growth is {_growth(ctx, other)[0]:.1f}; the "
                    f"form used ('{cfg.rho_form}') keeps ρ_A barely above 1 over the trained "
                    "lengths")),
                figure="main", note=capacity_note,
            ),
            ClaimSpec(
                name="gap_neg", ref="Thm 3.3 vs the measured gap (s_A < 0)",
                statement="where the bound is length-independent (s_A < 0) the measured "
                          "generalization gap does not grow with T",
                paper_value="",
                quantity="slope of the gap vs T of the s_A < 0 models, per 100 tokens",
                metric=gap_slope_neg, region=Region.below(cfg.gap_slope_tol),
                tolerance_source=(
                    f"{cfg.gap_slope_tol:.4f} per 100 tokens, the Majority tolerance of "
                    "generalization/length_majority (5 accuracy points over T = 25..400); "
                    "one-sided: the bound limits growth only"),
                figure="main", note=t90_note,
            ),
        ]

    def figures(self, ctx: Context) -> dict[str, str]:
        done = _done(ctx)
        return {"main": self._figure(ctx.cfg, done, ctx.figdir)} if done else {}

    def _figure(self, cfg, done, figdir: Path) -> str:
        fig, axes = new_figure(3, width=4.4)
        colors = {"neg": "tab:blue", "zero": "tab:green", "pos": "tab:red"}
        names = {"neg": "s_A < 0", "zero": "s_A = 0", "pos": "s_A > 0"}
        Tmax = max(int(r.params["T"]) for r in done)
        grid = np.unique(np.geomspace(1, max(50 * Tmax, 100_000), 80).astype(int))
        for reg in ("neg", "zero", "pos"):
            rs = [r for r in done if _regime(r) == reg]
            if not rs:
                continue
            Ts = sorted({int(r.params["T"]) for r in rs})
            axes[0].plot([int(r.params["T"]) for r in rs], [_log_cap(cfg, r) for r in rs],
                         "o", color=colors[reg], ms=4, label=f"{names[reg]} (line: S₂ over T, trained norms)")
            # theory curve: the norms of the model trained at the largest T, S₂ over the grid
            ref = max(rs, key=lambda r: int(r.params["T"]))
            rho = _norms(ref).rho(cfg.rho_form)
            base = _log_cap(cfg, ref) - log_s2(rho, int(ref.params["T"]))
            axes[0].plot(grid, [base + log_s2(rho, int(T)) for T in grid], "-", color=colors[reg],
                         lw=1, alpha=0.7)
            ok = [r for r in rs if r.status == "ok"]
            if ok:
                axes[1].plot([int(r.params["T"]) for r in ok], [r.metrics["gap"] for r in ok], "o",
                             color=colors[reg], ms=4, label=names[reg])
                means = [np.mean([r.metrics["gap"] for r in ok if int(r.params["T"]) == T])
                         for T in Ts if any(int(r.params["T"]) == T for r in ok)]
                axes[1].plot([T for T in Ts if any(int(r.params["T"]) == T for r in ok)], means,
                             "-", color=colors[reg], lw=1)
        pts = [v for r in done for v in [_log_cap(cfg, r)] if np.isfinite(v)]
        if pts:  # the s_A > 0 curve explodes past the trained lengths: keep the points legible
            lo_y, hi_y = min(pts), max(pts)
            pad = max(hi_y - lo_y, 1.0)
            axes[0].set_ylim(lo_y - 0.3 * pad, hi_y + 0.6 * pad)
        axes[0].set(xscale="log", xlabel="T", ylabel="ln capacity term (+ unknown const.)",
                    title=f"Thm 3.3 capacity term (ρ_A form '{cfg.rho_form}')")
        axes[0].legend(fontsize=6)
        axes[1].set(xlabel="T", ylabel="train acc - test acc", title="measured gap")
        axes[1].legend(fontsize=6)
        Tg = list(range(10, 20 * Tmax + 1, max(Tmax // 10, 1)))
        for kind, _ in TABLE_ROWS:
            rho = 0.99 if "< 0" in kind else (1.01 if "≥ 0" in kind else None)
            vals = [t_dependence(kind, T, rho) for T in Tg]
            axes[2].plot(Tg, vals, label=kind + (f" (ρ={rho})" if rho else ""))
        axes[2].set(xscale="log", yscale="log", xlabel="T", ylabel="T-dependence",
                    title="Table 1: T-dependence of the bounds")
        axes[2].legend(fontsize=6)
        return save(fig, figdir, "bound_vs_T.png")


# ----------------------------------------------------------------------------- metrics


def _done(ctx: Context) -> list[RunRecord]:
    """Runs that finished (ok, or diverged with their last probe) and carry the norms."""
    return [r for r in ctx.runs if r.status in ("ok", "diverged")
            and all(k in r.metrics for k in NORM_FIELDS)]


def _norms(r: RunRecord) -> NormQuantities:
    return NormQuantities(**{k: float(r.metrics[k]) for k in NORM_FIELDS})


def _log_cap(cfg: BoundConfig, r: RunRecord, form: RhoForm | None = None) -> float:
    """ln capacity term of run r at its own T (module docstring: B_A dropped if A is fixed)."""
    return log_capacity_term(_norms(r), int(r.params["T"]), cfg.task.n_train,
                             form or cfg.rho_form, include_B_A=not cfg.model.fix_A)


def _pos(ctx: Context) -> tuple[list[int], list[int], list[RunRecord]]:
    """T grid, seeds present at every T, and the s_A > 0 runs."""
    pos = [r for r in _done(ctx) if float(r.params["s_A"]) > 0]
    Ts = sorted({int(r.params["T"]) for r in pos})
    if len(Ts) < 2:
        raise NoData(f"needs s_A > 0 models at two or more T (have T = {Ts})")
    seeds = sorted(set.intersection(*({r.seed for r in pos if int(r.params["T"]) == T}
                                      for T in Ts)))
    if not seeds:
        raise NoData("no seed has s_A > 0 models at every T")
    return Ts, seeds, pos


def _growth(ctx: Context, form: RhoForm) -> tuple[float, Estimate, dict[int, float]]:
    def compute() -> tuple[float, Estimate, dict[int, float]]:
        Ts, seeds, pos = _pos(ctx)
        lo, hi = Ts[0], Ts[-1]

        def col(T: int) -> list[float]:
            return [_log_cap(ctx.cfg, next(r for r in pos if int(r.params["T"]) == T
                                           and r.seed == s), form) for s in seeds]

        est = paired_ci({"hi": col(hi), "lo": col(lo)}, lambda a, b: a.mean() - b.mean())
        per_T = {T: float(np.mean(col(T))) for T in Ts}
        return est.value, est, per_T
    return ctx.shared(f"growth_{form}", compute)


def capacity_growth(ctx: Context) -> Estimate:
    cfg = ctx.cfg
    _, est, per_T = _growth(ctx, cfg.rho_form)
    other: RhoForm = "code" if cfg.rho_form == "worst_case" else "worst_case"
    _, _, pos = _pos(ctx)
    rhos = [_norms(r).rho(cfg.rho_form) for r in pos]
    n_div = sum(r.status == "diverged" for r in pos)
    return est.with_detail(
        "mean ln C per T: " + ", ".join(f"T={T}: {v:.1f}" for T, v in per_T.items()) +
        f"; ρ_A in [{min(rhos):.5g}, {max(rhos):.5g}]; with the '{other}' form the growth is "
        f"{_growth(ctx, other)[0]:.1f}; {n_div} of {len(pos)} run(s) diverged (their last probe "
        "is used)")


def capacity_note(ctx: Context) -> str:
    return ("ρ_A bounds the decay exp(Δ_t s_A) over every admissible input: for s_A > 0 that "
            "is the largest step softplus(p + B_q B_u) ('worst_case'); the authors' code form "
            "uses the smallest step, which for s_A > 0 is not a bound (both agree for s_A < 0).")


def gap_slope_neg(ctx: Context) -> Estimate:
    """Slope of the gap of the converged s_A < 0 models against T, per 100 tokens
    (t-interval; every run is its own seed and data set)."""
    neg = [r for r in ctx.ok if float(r.params["s_A"]) < 0]
    Ts = sorted({int(r.params["T"]) for r in neg})
    if len(Ts) < 2:
        raise NoData(f"needs converged s_A < 0 models at two or more T (have T = {Ts})")
    est = slope_ci([r.params["T"] for r in neg], [r.metrics["gap"] for r in neg])
    by = {T: mean_std(r.metrics["gap"] for r in neg if int(r.params["T"]) == T) for T in Ts}
    return est.scaled(100, "gap per T: " + ", ".join(f"T={T}: {fmt_pm(m, s)}"
                                                     for T, (m, s) in by.items()))


def t90_note(ctx: Context) -> str:
    """How far from its limit the s_A < 0 bound still is at the trained lengths."""
    neg = [r for r in _done(ctx) if float(r.params["s_A"]) < 0]
    if not neg:
        return ""
    rhos = [_norms(r).rho(ctx.cfg.rho_form) for r in neg]
    t90s = [t90(x) for x in rhos]
    Tmax = max(int(r.params["T"]) for r in neg)
    return (f"Trained s_A < 0 models have ρ_A = 1 − δ, δ in [{1 - max(rhos):.2e}, "
            f"{1 - min(rhos):.2e}]: their S₂ reaches 90% of its limit ρ/(1−ρ)² only at "
            f"T₉₀ ≈ {min(t90s):.3g}..{max(t90s):.3g}, beyond the trained lengths (T ≤ {Tmax}), "
            "where the term still grows like T²: length-independent asymptotically, with a "
            "large constant.")
