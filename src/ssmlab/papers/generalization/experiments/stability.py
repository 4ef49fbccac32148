"""Stability margin (generalization paper, Sec. 5: sweep_T, sweep_sA and loss figures).

Claims (paper): training started in the unstable regime (s_A = 0.1 > 0) either diverges — the
loss blows up while s_A stays ≈ 0.1-0.16 — or recovers by driving s_A to ≤ 0 within a few
epochs; divergence becomes more common as T grows (Thm 4.1: for s_A > 0 the complexity grows
like (1 + s_A)^T).

Runs: the union of two sweeps, 10 epochs each, s_A and the loss recorded every epoch:
  sweep_T   s_A(init) = `sweep_T_sA` (0.1) for T in `T_values` (Majority: 50, 100, .., 300),
  sweep_sA  s_A(init) in `sA_values` (-0.1, -0.08, .., 0.1) at T = `sweep_sA_T` (Majority 250).
A diverged run (non-finite loss, see common.py) is stored with status "diverged".

Checks (tolerances stated up front):
  (a) every run started at s_A > 0 that does not diverge ends with s_A ≤ `sA_end_tol`. The
      tolerance is one Adam step (lr = 0.01): Adam moves every entry of A by about lr per update,
      so "s_A ≤ 0" cannot be resolved more finely than that. Runs started at s_A ≤ 0 are listed
      in the note (the paper makes no statement about them beyond staying stable).
  (b) the divergence frequency grows with T: the fraction of diverged sweep_T runs on the upper
      half of the T grid must exceed the fraction on the lower half (strictly). If no run
      diverges at all the check FAILs (nothing grows).
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

from ssmlab.config import each_once
from ssmlab.data.imdb import check_imdb
from ssmlab.experiment import (
    MAX_SEEDS,
    Claim,
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
from ssmlab.records import not_ok_note
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
    def analyze(self, cfg: StabilityConfig, runs: list[RunRecord], figdir: Path) -> list[Claim]:
        done = [r for r in runs if r.status in ("ok", "diverged")]
        if not done:
            reasons = sorted({r.reason for r in runs if r.reason}) or ["no finished runs"]
            return [Claim(paper=PAPER, experiment=self.id, ref="Sec. 5, stability margin",
                          claim="runs started at s_A > 0 diverge or drive s_A ≤ 0",
                          measured="skipped: " + "; ".join(reasons), expected="-",
                          passed=None, note=not_ok_note(runs) or "no finished runs")]
        fig = self._figures(cfg, done, figdir)
        return [self._claim_recovery(cfg, done, fig), self._claim_divergence(cfg, done, fig)]

    def _claim_recovery(self, cfg, done, fig) -> Claim:
        pos = [r for r in done if float(r.params["s_A"]) > 0 and r.status == "ok"]
        other = [r for r in done if float(r.params["s_A"]) <= 0 and r.status == "ok"]
        n_div = sum(float(r.params["s_A"]) > 0 and r.status == "diverged" for r in done)
        finals = [r.metrics["s_A"] for r in pos]
        bad = [r for r in pos if r.metrics["s_A"] > cfg.sA_end_tol]
        note = (f"{len(pos)} converged and {n_div} diverged run(s) started at s_A > 0. ")
        if pos:
            Ts = sorted({int(r.params["T"]) for r in pos})
            note += "Max final s_A per T: " + ", ".join(
                f"T={T}: {max(r.metrics['s_A'] for r in pos if int(r.params['T']) == T):+.3f}"
                for T in Ts) + ". "
        if other:
            of = [r.metrics["s_A"] for r in other]
            note += (f"Runs started at s_A ≤ 0 ({len(other)}) end with s_A in "
                     f"[{min(of):+.4f}, {max(of):+.4f}]. ")
        if not pos:
            passed: bool | None = None
            note += "No run started at s_A > 0 converged, so nothing to check."
        else:
            passed = not bad
            if bad:
                note += "Ending above the tolerance: " + ", ".join(
                    f"T={r.params['T']} s_A0={r.params['s_A']} seed {r.seed}: {r.metrics['s_A']:+.4f}"
                    for r in bad[:8]) + "."
                rhos = [r.metrics.get("rho_A", math.nan) for r in bad]
                note += (f" These runs trained fine with s_A > 0: their decay bound ρ_A = "
                         f"(1 + e^(p - B_q B_u))^s_A ends in [{min(rhos):.4f}, {max(rhos):.4f}], "
                         "i.e. training kept exp(Δ_t s_A) near 1 through the steps Δ_t (p, q) "
                         "rather than by moving A below 0.")
        worst = max(finals) if finals else math.nan
        return Claim(
            paper=PAPER, experiment=self.id, ref="Sec. 5, stability margin (sweep_T / sweep_sA)",
            claim="every run started at s_A > 0 that converges ends with s_A ≤ 0",
            measured=(f"max final s_A {worst:+.4f} over {len(pos)} converged run(s)"
                      if finals else "no converged run started at s_A > 0"),
            expected=f"≤ {cfg.sA_end_tol:g} (one Adam step)",
            passed=passed, value=worst if finals else None, figure=fig, note=note,
        )

    def _claim_divergence(self, cfg, done, fig) -> Claim:
        sweep = [r for r in done if float(r.params["s_A"]) == cfg.sweep_T_sA
                 and int(r.params["T"]) in cfg.T_values]
        Ts = sorted({int(r.params["T"]) for r in sweep})
        frac = {T: float(np.mean([r.status == "diverged" for r in sweep if int(r.params["T"]) == T]))
                for T in Ts}
        half = len(Ts) // 2
        lo, hi = Ts[:half], Ts[len(Ts) - half:]
        def f(ts):  # noqa: E306
            rs = [r for r in sweep if int(r.params["T"]) in ts]
            return float(np.mean([r.status == "diverged" for r in rs])) if rs else math.nan
        f_lo, f_hi = f(lo), f(hi)
        table = ", ".join(f"T={T}: {frac[T]:.2f}" for T in Ts)
        if len(Ts) < 2:
            passed: bool | None = None
            note = "Needs at least two values of T."
        else:
            passed = bool(f_hi > f_lo)
            note = f"divergence fraction per T: {table}."
            if not passed:
                note += (" No run diverged at any T, so growth with T cannot be shown at these"
                         " sizes." if max(frac.values()) == 0 else
                         " The upper half of the T grid does not diverge more often than the lower"
                         " half.")
        return Claim(
            paper=PAPER, experiment=self.id, ref="Sec. 5, stability margin (sweep_T), Thm 4.1",
            claim=f"with s_A = {cfg.sweep_T_sA:g} at init, divergence becomes more frequent as T grows",
            measured=f"diverged fraction {f_lo:.2f} (T ≤ {lo[-1] if lo else '-'}) vs {f_hi:.2f} "
                     f"(T ≥ {hi[0] if hi else '-'})",
            expected="upper-half fraction > lower-half fraction",
            passed=passed, value=f_hi - f_lo if math.isfinite(f_hi - f_lo) else None,
            figure=fig, note=note,
        )

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
