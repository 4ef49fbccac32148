"""Experiment 3 (associative recall): trained one-layer Mamba, Mamba-2 and S4D on MQAR over a
(d, N) grid; the success frontier against the analytical constructions' minimal sizes.

Set-up: zoology-format MQAR (ssmlab.papers.selectivity.data.mqar; blank filler), a one-layer `TokenLM` (embedding,
pre-norm residual block, final norm, untied head) with the mixer in the Mamba block (S4D inside
the same gated block, `S4DBlock`), expand 2, d_conv 4, trained with Adam on the query positions.
A cell is (mixer, d_model, N); it succeeds when its test accuracy (mean over seeds) is at least
`success_acc`.

Claim (the paper's): the success frontier orders Mamba-2 < Mamba < S4D in size. Measured as the
smallest mixer parameter count among successful cells of each mixer (∞ if none succeeds); the
claim holds when params(Mamba-2) < params(Mamba) < params(S4D), with ∞ < ∞ false (a tie of two
never-successful mixers cannot confirm an order). The construction's minimal sizes for the same
vocabulary (ssmlab.papers.selectivity.theory.mqar.construction_sizes) are reported beside it and drawn in the
figure; trained models may beat them in width because they need not embed keys and values
orthogonally.

Unpublished choices (defaults): |V| = 16 (7 keys, 8 values), L = 32, P = 4 pairs, power_a =
0.01; 2048 training / 256 test sequences; Adam lr 0.01, batch 64, grad clip 1, 300 steps (quick)
/ 1500 (paper); success = accuracy ≥ 0.99. Quick grid d ∈ {8, 16, 32} × N = 8 plus (32, 2); the
paper grid d ∈ {8, 16, 32, 64} × N ∈ {2, 4, 8, 16}.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import numpy as np
from matplotlib.ticker import NullFormatter, ScalarFormatter
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
from ssmlab.papers.selectivity.data.mqar import MQARConfig
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
    construction_weights_bytes,
    fit,
    lm_run_bytes,
    run_metrics,
    token_accuracy,
)
from ssmlab.papers.selectivity.model import count_parameters
from ssmlab.papers.selectivity.theory.mqar import construction_sizes
from ssmlab.records import not_ok_note
from ssmlab.report import figures
from ssmlab.report.stats import group_by, mean_std

Cell = Annotated[tuple[Width, StateSize], at.MaxLen(2)]


class RecallConfig(ExperimentConfig):
    data: MQARConfig = Field(default_factory=lambda: MQARConfig(vocab_size=16, seq_len=32,
                                                                num_kv_pairs=4))
    train: TrainSpec = Field(default_factory=TrainSpec)
    mixers: tuple[LMMixer, ...] = Field(("mamba2", "mamba", "s4d"), min_length=1,
                                        max_length=len(MIXERS), description=f"any of {MIXERS}")
    grid: tuple[Cell, ...] = Field(((8, 8), (16, 8), (32, 8), (32, 2)), min_length=1,
                                   max_length=MAX_GRID, description="(d_model, N) cells")
    expand: int = Field(2, ge=1, le=16)
    d_conv: int = Field(4, ge=2, le=64)
    success_acc: float = Field(0.99, gt=0, le=1)

    @field_validator("mixers")
    @classmethod
    def _distinct_mixers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        each_once(v)
        return v

    @field_validator("grid")
    @classmethod
    def _distinct(cls, v: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
        each_once(v)
        return v

    @model_validator(mode="after")
    def _widths(self) -> RecallConfig:
        check_mamba2_widths(self.mixers, [d for d, _ in self.grid], self.expand, "grid")
        return self


@register
class Recall(Experiment):
    """selectivity, associative recall (MQAR): trained success frontier vs the analytical
    constructions; claim Mamba-2 < Mamba < S4D. Set-up, claim and unpublished choices: module
    docstring of ssmlab.papers.selectivity.experiments.recall."""

    id = "selectivity/recall"
    paper = PAPER
    Config = RecallConfig
    profiles = {
        "quick": {"seeds": 1, "train": {"steps": 300}},
        "paper": {"seeds": 3, "train": {"steps": 1500, "n_train": 8192},
                  "grid": [(d, n) for d in (8, 16, 32, 64) for n in (2, 4, 8, 16)]},
    }

    def cells(self, cfg: RecallConfig) -> list[dict[str, Any]]:
        return [{"mixer": m, "d_model": d, "d_state": n} for m in cfg.mixers for d, n in cfg.grid]

    def memory_bytes(self, cfg: RecallConfig) -> int:
        """The largest cell's training and evaluation (common.lm_run_bytes), or the analysis'
        construction sizes when they cost more: `analyze` builds the three MQAR constructions
        for data.vocab_size, whose S4D width grows like |V|²/4
        (common.construction_weights_bytes); that too must fit before anything is stored."""
        run = max(lm_run_bytes(m, cfg.data.vocab_size, d, n, cfg.data.seq_len, cfg.train,
                               d_conv=cfg.d_conv, expand=cfg.expand)
                  for m in cfg.mixers for d, n in cfg.grid)
        return max(run, construction_weights_bytes(cfg.data.vocab_size))

    def run(self, cfg: RecallConfig, params: dict[str, Any], seed: int) -> RunResult:
        mixer, d, N = params["mixer"], params["d_model"], params["d_state"]
        train_data = cfg.data.model_copy(update={"num_examples": cfg.train.n_train}).build(seed, "train")
        test_data = cfg.data.model_copy(update={"num_examples": cfg.train.n_test}).build(seed, "test")
        lm = build_lm(mixer, cfg.data.vocab_size, d, N, cfg.data.seq_len, seed,
                      d_conv=cfg.d_conv, expand=cfg.expand)
        res = fit(lm, cfg.train, train_data.inputs, train_data.labels, seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
        metrics = run_metrics(lm, res)
        metrics["mixer_params"] = float(count_parameters(lm.layers[0]))
        metrics["test_acc"] = token_accuracy(lm, test_data.inputs, test_data.labels)
        return RunResult(metrics=metrics, history={"train_loss": res.history.get("train_loss", [])},
                         info={"mixer": mixer})

    def table(self, cfg: RecallConfig, runs: list[RunRecord]) -> dict[tuple, dict[str, float]]:
        """(mixer, d, N) -> mean accuracy and mixer params over seeds."""
        ok = [r for r in runs if r.status == "ok"]
        out = {}
        for key, rs in group_by(ok, lambda r: (r.params["mixer"], r.params["d_model"],
                                               r.params["d_state"])).items():
            out[key] = {"acc": mean_std([r.metrics["test_acc"] for r in rs])[0],
                        "params": rs[0].metrics["mixer_params"]}
        return out

    def analyze(self, cfg: RecallConfig, runs: list[RunRecord], figdir: Path) -> list[Claim]:
        tab = self.table(cfg, runs)
        sizes = {s.mixer: s for s in construction_sizes(cfg.data)}
        frontier = {}
        for m in cfg.mixers:
            ok = [v["params"] for (mm, _, _), v in tab.items() if mm == m and v["acc"] >= cfg.success_acc]
            frontier[m] = min(ok) if ok else math.inf
        fig = self._figure(cfg, tab, sizes, figdir) if tab else None
        order = [m for m in ("mamba2", "mamba", "s4d") if m in cfg.mixers]
        vals = [frontier[m] for m in order]
        passed = len(vals) == 3 and vals[0] < vals[1] < vals[2] and math.isfinite(vals[1])
        cells = "; ".join(f"{MIXER_LABELS[m]} d={d} N={n}: {v['acc']:.3f}"
                          for (m, d, n), v in sorted(tab.items()))
        cons = ", ".join(f"{MIXER_LABELS[m]} (d_inner {sizes[m].d_used}, N {sizes[m].d_state}, "
                         f"{sizes[m].mixer_params} params)" for m in order)
        note = ""
        if not passed:
            note = ("order not confirmed on this grid: " +
                    ", ".join(f"{MIXER_LABELS[m]} first succeeds at {frontier[m]:g} params" for m in order))
        note = (note + " " + not_ok_note(runs)).strip()
        return [Claim(
            paper=PAPER, experiment=self.id, ref="Sec. MQAR (constructions + Fig.)",
            claim="The MQAR success frontier orders Mamba-2 < Mamba < S4D in model size.",
            measured=("smallest successful mixer params: "
                      + ", ".join(f"{MIXER_LABELS[m]} {frontier[m]:g}" for m in order)
                      + f" (success = acc ≥ {cfg.success_acc:g}); cells: {cells}; "
                      + f"constructions: {cons}"),
            expected="params(Mamba-2) < params(Mamba) < params(S4D)",
            passed=bool(passed), value=frontier.get("mamba2"), figure=fig, note=note)]

    def _figure(self, cfg: RecallConfig, tab: dict, sizes: dict, figdir: Path) -> str:
        fig, axes = figures.new_figure(ncols=2)
        ax, ax2 = axes
        markers = {"mamba2": "s", "mamba": "o", "s4d": "^"}
        for m in cfg.mixers:
            pts = sorted((v["params"], v["acc"]) for (mm, _, _), v in tab.items() if mm == m)
            if pts:
                ax.plot([p for p, _ in pts], [a for _, a in pts], markers.get(m, "o"), label=MIXER_LABELS[m])
            if m in sizes:
                ax.axvline(sizes[m].mixer_params, ls=":", lw=1,
                           color=ax.lines[-1].get_color() if pts else "gray")
        ax.axhline(cfg.success_acc, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("mixer parameters (dotted: construction)")
        ax.set_ylabel("MQAR test accuracy")
        ax.legend(fontsize=7)
        # accuracy map over (d, N) per mixer, side by side
        ds = sorted({d for _, d, _ in tab})
        ns = sorted({n for _, _, n in tab})
        grid = np.full((len(cfg.mixers) * len(ns), len(ds)), np.nan)
        labels = []
        for i, m in enumerate(cfg.mixers):
            for j, n in enumerate(ns):
                labels.append(f"{MIXER_LABELS[m]} N={n}")
                for k, d in enumerate(ds):
                    if (m, d, n) in tab:
                        grid[i * len(ns) + j, k] = tab[m, d, n]["acc"]
        im = ax2.imshow(grid, vmin=0, vmax=1, aspect="auto", cmap="viridis")
        ax2.set_xticks(range(len(ds)), [str(d) for d in ds])
        ax2.set_yticks(range(len(labels)), labels, fontsize=6)
        ax2.set_xlabel("d_model")
        fig.colorbar(im, ax=ax2)
        return figures.save(fig, figdir, "mqar_frontier.png")
