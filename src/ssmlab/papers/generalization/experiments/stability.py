"""Stability margin (generalization paper, Sec. 5: sweep_T, sweep_sA and loss figures).

Claims (paper): training started in the unstable regime (s_A = 0.1 > 0) either diverges — the
loss blows up while s_A stays ≈ 0.1-0.16 — or recovers by driving s_A to ≤ 0 within a few
epochs; divergence becomes more common as T grows (Thm 4.1: for s_A > 0 the complexity grows
like (1 + s_A)^T).

Runs: the union of two sweeps, 10 epochs each, s_A and the loss recorded every epoch:
  sweep_T   s_A(init) = `sweep_T_sA` (0.1) for T in `T_values` (Majority: 50, 100, .., 300),
  sweep_sA  s_A(init) in `sA_values` (-0.1, -0.08, .., 0.1) at T = `sweep_sA_T` (Majority 250).
A diverged run (non-finite loss, see common.py) is stored with status "diverged".

Claims (ids generalization/stability:<name>; tolerances stated up front):
  recovery  the fraction of the converged runs started at s_A > 0 whose final s_A exceeds
      `sA_end_tol` (bootstrap over those runs) must be 0 ("every run diverges or recovers").
      The tolerance is one Adam step (lr = 0.01): Adam moves every entry of A by about lr per
      update, so "s_A ≤ 0" cannot be resolved more finely than that. One exception among many
      runs leaves the verdict INCONCLUSIVE; a FAIL's diagnosis gives the count per T and the
      decay bound of the runs that stay unstable. Runs started at s_A ≤ 0 are listed in the
      note (the paper makes no statement about them beyond staying stable).
  divergence_grows  the diverged fraction of the sweep_T runs on the upper half of the T grid
      minus the lower half (paired bootstrap over seeds) must be > 0. If no run diverges at all
      the check FAILs (nothing grows). The paper ties nothing of this to a theorem number;
      Thm 4.1 (complexity ≥ ((1 + s_A)^T - 1)/s_A for s_A > 0) is the motivation.
Quick profile: Majority, T = 50 / 150 / 300, 4 runs per T, s_A in {-0.1, -0.05, 0, 0.05, 0.1}
at T = 250 with 2 runs, 10 epochs (the paper's epochs).
Other tasks: set task_name = "listops" (paper: d = 16, T = 100..600, fixed T 300) or "imdb"
(T = 300..550, fixed T 500; skipped without data) and the model / task sizes accordingly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from ssmlab.claims import (
    ClaimSpec,
    Context,
    Diagnosis,
    Estimate,
    NoData,
    Region,
    mean_ci,
    paired_ci,
)
from ssmlab.config import each_once
from ssmlab.data.imdb import check_imdb
from ssmlab.experiment import (
    MAX_SEEDS,
    Experiment,
    ExperimentConfig,
    RunRecord,
    RunResult,
    register,
)
from ssmlab.papers.generalization.experiments.common import (
    MAX_GRID,
    Length,
    ModelSettings,
    PaperTraining,
    Seeds,
    SpectralAbscissa,
    Task,
    TaskSettings,
    build_task,
    train_run,
    train_run_bytes,
)
from ssmlab.papers.generalization.model import MAX_ABS_SA
from ssmlab.papers.generalization.theory import rho_A
from ssmlab.report.figures import new_figure, save

PAPER = "generalization"


class StabilityConfig(ExperimentConfig):
    """The two sweeps (module docstring). sA_values may be empty (the T sweep alone); T_values
    may not (the divergence claim is about it)."""

    seeds: Seeds = 3
    task_name: Task = "majority"
    T_values: list[Length] = Field(default_factory=lambda: [50, 100, 150, 200, 250, 300],
                                   min_length=1, max_length=MAX_GRID,
                                   description="sweep_T lengths")
    sweep_T_sA: float = Field(0.1, ge=-MAX_ABS_SA, le=MAX_ABS_SA,
                              description="initial s_A of the sweep over T")
    sA_values: list[SpectralAbscissa] = Field(
        default_factory=lambda: [round(-0.1 + 0.02 * i, 2) for i in range(11)],
        max_length=MAX_GRID, description="initial s_A values of the sweep over s_A")
    sweep_sA_T: Length = Field(250, description="T of the sweep over s_A")
    model: ModelSettings = Field(default_factory=ModelSettings)
    task: TaskSettings = Field(default_factory=TaskSettings)
    training: PaperTraining = Field(default_factory=lambda: PaperTraining(epochs=10))
    sA_end_tol: float = Field(0.01, ge=0, le=MAX_ABS_SA,
                              description="'ends with s_A ≤ 0' up to this")
    sweep_sA_seeds: int | None = Field(
        None, ge=1, le=MAX_SEEDS, description="runs per cell of the s_A sweep (None = seeds)")

    @field_validator("T_values", "sA_values")
    @classmethod
    def _distinct(cls, v: list, info: Any) -> list:
        each_once(v)
        return v

    @model_validator(mode="after")
    def _window_fits(self) -> StabilityConfig:
        lengths = list(self.T_values) + ([self.sweep_sA_T] if self.sA_values else [])
        self.task.check_lengths(self.task_name, lengths, "T_values and sweep_sA_T")
        return self


def _cells(cfg: StabilityConfig) -> list[dict[str, Any]]:
    pairs: list[tuple[int, float]] = [(int(T), float(cfg.sweep_T_sA)) for T in cfg.T_values]
    pairs += [(int(cfg.sweep_sA_T), float(s)) for s in cfg.sA_values]
    seen, out = set(), []
    for T, s in pairs:
        if (T, s) not in seen:
            seen.add((T, s))
            cell: dict[str, Any] = {"T": T, "s_A": s}
            in_T_sweep = T in cfg.T_values and s == cfg.sweep_T_sA
            if not in_T_sweep and cfg.sweep_sA_seeds is not None:
                cell["_seeds"] = cfg.sweep_sA_seeds  # the s_A sweep runs fewer seeds per cell
            out.append(cell)
    return out


@register
class StabilityMargin(Experiment):
    """generalization paper, Sec. 5 (stability margin; sweep_T / sweep_sA / loss figures):
    runs started at s_A > 0 diverge or drive s_A to ≤ 0; divergence grows with T. Set-up,
    tolerances and the quick profile: ssmlab.papers.generalization.experiments.stability."""

    id = "generalization/stability"
    paper = PAPER
    Config = StabilityConfig
    profiles = {
        "quick": {"seeds": 4, "T_values": [50, 150, 300],
                  "sA_values": [-0.1, -0.05, 0.0, 0.05, 0.1], "sweep_sA_seeds": 2},
        "paper": {},
    }

    def cells(self, cfg: StabilityConfig) -> list[dict[str, Any]]:
        return _cells(cfg)

    def memory_bytes(self, cfg: StabilityConfig) -> int:
        """One run at the largest T of either sweep (common.train_run_bytes)."""
        Ts = [int(c["T"]) for c in _cells(cfg)]
        return max(train_run_bytes(cfg.model, cfg.training, cfg.task_name, cfg.task, T) for T in Ts)

    def check_inputs(self, cfg: StabilityConfig) -> None:
        """With task_name 'imdb', a configured aclImdb copy must be readable (check_imdb)."""
        if cfg.task_name == "imdb":
            check_imdb(cfg.task.imdb_dir)

    def run(self, cfg: StabilityConfig, params: dict[str, Any], seed: int) -> RunResult:
        T, s_A = int(params["T"]), float(params["s_A"])
        data = build_task(cfg.task_name, cfg.task, T, seed)  # SkipRun: no IMDb data
        model = cfg.model.model_copy(update={"s_A": s_A})
        return train_run(model, cfg.training, data, seed)

    # -- analysis
    # -- claims (specs) and figures
    def specs(self, cfg: StabilityConfig) -> list[ClaimSpec]:
        return [
            ClaimSpec(
                name="recovery", ref="Sec. 5, stability margin (sweep_T / sweep_sA)",
                support=(0.0, 1.0),
                statement="every run started at s_A > 0 either diverges or recovers by driving "
                          "s_A to ≤ 0 (within 2-5 epochs)",
                paper_value="diverged runs keep s_A ≈ 0.1-0.16; the others reach s_A ≤ 0 "
                            "within 2-5 epochs",
                quantity=f"fraction of converged runs started at s_A > 0 whose final s_A "
                         f"exceeds {cfg.sA_end_tol:g}",
                metric=stays_unstable, region=Region.below(0.0),
                tolerance_source=(
                    f"the paper's 'every run': 0. 'Ends with s_A ≤ 0' is resolved to "
                    f"{cfg.sA_end_tol:g}, one Adam step of lr 0.01 on A (a run ending within "
                    "one step of 0 counts as recovered)"),
                diagnosis=Diagnosis("finding", recovery_evidence),
                figure="main", note=recovery_note,
            ),
            ClaimSpec(
                name="divergence_grows", ref="Sec. 5, stability margin (sweep_T)",
                support=(-1.0, 1.0),
                statement=f"with s_A = {cfg.sweep_T_sA:g} at initialisation, divergence becomes "
                          "more common as T grows",
                paper_value="more diverged runs at larger T (no counts published)",
                quantity="diverged fraction on the upper half of the T grid minus the lower half",
                metric=divergence_trend, region=Region.above(0.0, strict=True),
                tolerance_source="the paper's 'more common': any positive difference",
                diagnosis=Diagnosis("profile-too-small", divergence_evidence),
                figure="main",
            ),
        ]

    def figures(self, ctx: Context) -> dict[str, str]:
        done = [r for r in ctx.runs if r.status in ("ok", "diverged")]
        return {"main": self._figures(ctx.cfg, done, ctx.figdir)}

    def _figures(self, cfg, done, figdir: Path) -> str:
        fig, axes = new_figure(3, width=4.4)
        sweep = sorted([r for r in done if float(r.params["s_A"]) == cfg.sweep_T_sA
                        and int(r.params["T"]) in cfg.T_values],
                       key=lambda r: (int(r.params["T"]), r.seed))
        Ts = sorted({int(r.params["T"]) for r in sweep})
        cmap = _colors(len(Ts))
        for r in sweep:
            c = cmap[Ts.index(int(r.params["T"]))]
            sa = r.history.get("s_A", [])
            ep = list(r.history.get("probe_epoch", []))[: len(sa)]
            if len(ep) != len(sa):
                ep = list(range(len(sa)))
            first = r.seed == min(x.seed for x in sweep if x.params["T"] == r.params["T"])
            ls = ":" if r.status == "diverged" else "-"
            axes[0].plot(ep, sa, ls, color=c, lw=1,
                         label=f"T={r.params['T']}" if first else None)
            loss = r.history.get("loss", [])
            axes[1].plot(range(1, len(loss) + 1), [min(v, 1e30) for v in loss], ls, color=c, lw=1,
                         label=f"T={r.params['T']}" if first else None)
        axes[0].axhline(0, color="k", lw=0.5)
        axes[0].set(xlabel="epoch", ylabel="s_A", title=f"sweep_T (s_A0 = {cfg.sweep_T_sA:g}; dotted = diverged)")
        axes[1].set(xlabel="epoch", ylabel="epoch loss", yscale="log", title="loss")
        axes[0].legend(fontsize=6)
        axes[1].legend(fontsize=6)
        sA_runs = [r for r in done if int(r.params["T"]) == cfg.sweep_sA_T
                   and float(r.params["s_A"]) in [float(s) for s in cfg.sA_values]]
        for r in sA_runs:
            x = float(r.params["s_A"])
            if r.status == "ok":
                axes[2].plot(x, r.metrics["s_A"], "o", color="tab:blue", ms=4)
            else:
                y = r.metrics.get("s_A", x)
                axes[2].plot(x, y, "x", color="tab:red", ms=6)
        lim = [min(cfg.sA_values + [0.0]), max(cfg.sA_values + [0.0])]
        axes[2].plot(lim, lim, "k:", lw=0.8)
        axes[2].axhline(0, color="k", lw=0.5)
        axes[2].set(xlabel="initial s_A", ylabel="final s_A (x = diverged, last epoch)",
                    title=f"sweep_sA at T = {cfg.sweep_sA_T}")
        return save(fig, figdir, "stability.png")


def _colors(n: int) -> list:
    import matplotlib

    cm = matplotlib.colormaps["viridis"]
    return [cm(i / max(n - 1, 1)) for i in range(n)]


# ----------------------------------------------------------------------------- metrics


def _started_unstable(ctx: Context) -> list[RunRecord]:
    """Finished runs (ok or diverged) started at s_A > 0, by (T, s_A, seed)."""
    rs = [r for r in ctx.runs if r.status in ("ok", "diverged") and float(r.params["s_A"]) > 0]
    return sorted(rs, key=lambda r: (int(r.params["T"]), float(r.params["s_A"]), r.seed))


def _cells_of(rs: list[RunRecord]) -> dict[tuple[int, float], list[RunRecord]]:
    out: dict[tuple[int, float], list[RunRecord]] = {}
    for r in rs:
        out.setdefault((int(r.params["T"]), float(r.params["s_A"])), []).append(r)
    return out


def _rho_worst(r: RunRecord) -> float:
    m = r.metrics
    return rho_A(float(m["s_A"]), float(m["p"]), float(m["B_q"]), float(m["B_u"]), "worst_case")


def stays_unstable(ctx: Context) -> Estimate:
    """Fraction of the converged runs started at s_A > 0 whose final s_A is above sA_end_tol,
    with a bootstrap over those runs (each its own seed). Not a Wilson interval: the claim is
    universal ("every converged run recovers"), so no observed exception is its PASS, and a
    Wilson upper bound above 0 would keep it INCONCLUSIVE at any number of runs."""
    conv = [r for r in _started_unstable(ctx) if r.status == "ok"]
    if not conv:
        raise NoData("no run started at s_A > 0 converged (all diverged or none ran)")
    tol = ctx.cfg.sA_end_tol
    parts = []
    for (T, s0), rs in _cells_of(_started_unstable(ctx)).items():
        ok = [r for r in rs if r.status == "ok"]
        above = [r for r in ok if r.metrics["s_A"] > tol]
        worst = f", max final s_A {max(r.metrics['s_A'] for r in ok):+.3f}" if ok else ""
        parts.append(f"T={T} s_A0={s0:g}: {len(above)} of {len(ok)} converged stay above "
                     f"({len(rs) - len(ok)} diverged{worst})")
    return mean_ci([float(r.metrics["s_A"] > tol) for r in conv], detail="; ".join(parts),
                   unit="runs")


def recovery_note(ctx: Context) -> str:
    other = [r for r in ctx.ok if float(r.params["s_A"]) <= 0]
    if not other:
        return ""
    of = [r.metrics["s_A"] for r in other]
    return (f"Runs started at s_A ≤ 0 ({len(other)}) end with s_A in "
            f"[{min(of):+.4f}, {max(of):+.4f}] (the paper says nothing about them beyond "
            "staying stable).")


def recovery_evidence(ctx: Context) -> str:
    """Numbers from the stored runs: per T whether the converged runs stay above 0, and what
    kept them stable instead (the decay bound's two forms, theory.rho_A)."""
    conv = [r for r in _started_unstable(ctx) if r.status == "ok"]
    tol = ctx.cfg.sA_end_tol
    above = [r for r in conv if r.metrics["s_A"] > tol]
    per_T: dict[int, list[RunRecord]] = {}
    for r in conv:
        per_T.setdefault(int(r.params["T"]), []).append(r)
    table = ", ".join(f"T={T}: {sum(r.metrics['s_A'] > tol for r in rs)}/{len(rs)}"
                      for T, rs in sorted(per_T.items()))
    n_T = sum(any(r.metrics["s_A"] > tol for r in rs) for rs in per_T.values())
    longest = max(per_T)
    text = (f"converged runs that end above s_A = {tol:g}, per T: {table}; such runs occur at "
            f"{n_T} of the {len(per_T)} lengths with a converged run (longest T = {longest}: "
            f"{sum(r.metrics['s_A'] > tol for r in per_T[longest])}/{len(per_T[longest])}), "
            f"after {ctx.cfg.training.epochs} epochs (the paper trains 10 and says recovery "
            "takes 2-5). Neither training 3× longer (30 epochs: 6 of 10 converged runs of the "
            "T sweep still end above 0.01) nor the unpublished batch size (256 instead of 64: "
            "8 of 10) flips it (README 'Findings', stability). ")
    code = [float(r.metrics.get("rho_A", math.nan)) for r in above]
    worst = [_rho_worst(r) for r in above]
    accs = [float(r.metrics["train_acc"]) for r in above]
    if above:
        text += (f"They train fine (train accuracy {min(accs):.3f}-{max(accs):.3f}) with A still "
                 f"unstable: the decay bound at the smallest step, (1 + e^(p − B_q B_u))^s_A, "
                 f"ends in [{min(code):.4f}, {max(code):.4f}] and at the largest step in "
                 f"[{min(worst):.3g}, {max(worst):.3g}]: training keeps the steps Δ_t small "
                 "(through p, q) rather than moving A below 0.")
    return text


def _T_sweep_columns(ctx: Context) -> tuple[list[int], dict[str, list[float]]]:
    cfg = ctx.cfg
    rs = [r for r in ctx.runs if r.status in ("ok", "diverged")
          and float(r.params["s_A"]) == float(cfg.sweep_T_sA) and int(r.params["T"]) in cfg.T_values]
    Ts = sorted({int(r.params["T"]) for r in rs})
    if len(Ts) < 2:
        raise NoData(f"needs finished sweep_T runs at two or more T (have T = {Ts})")
    seeds = sorted(set.intersection(*({r.seed for r in rs if int(r.params["T"]) == T}
                                      for T in Ts)))
    if len(seeds) < 1:
        raise NoData("no seed finished at every T of the sweep")
    cols = {f"T={T}": [float(next(r.status == "diverged" for r in rs
                                  if int(r.params["T"]) == T and r.seed == s)) for s in seeds]
            for T in Ts}
    return Ts, cols


def divergence_trend(ctx: Context) -> Estimate:
    """Diverged fraction of the upper half of the T grid minus the lower half (the middle T
    of an odd grid in neither), paired bootstrap over seeds."""
    Ts, cols = _T_sweep_columns(ctx)
    half = len(Ts) // 2
    lo, hi = Ts[:half], Ts[len(Ts) - half:]

    def stat(*c: np.ndarray) -> float:
        by = dict(zip(Ts, c, strict=True))
        return float(np.mean([by[T].mean() for T in hi]) - np.mean([by[T].mean() for T in lo]))

    detail = "diverged per T: " + ", ".join(
        f"T={T}: {int(sum(cols[f'T={T}']))}/{len(cols[f'T={T}'])}" for T in Ts)
    return paired_ci(cols, stat, detail=detail + f" (lower half T ≤ {lo[-1]}, upper T ≥ {hi[0]})")


def divergence_evidence(ctx: Context) -> str:
    Ts, cols = _T_sweep_columns(ctx)
    fr = {T: float(np.mean(cols[f"T={T}"])) for T in Ts}
    if max(fr.values()) == 0:
        return ("no run of the T sweep diverged at any T (" +
                ", ".join(f"T={T}" for T in Ts) + "): growth with T cannot show at these sizes")
    return ("diverged fraction per T: " + ", ".join(f"T={T}: {f:.2f}" for T, f in fr.items()) +
            f" over {len(cols[f'T={Ts[0]}'])} seeds: too few seeds to separate the halves")
