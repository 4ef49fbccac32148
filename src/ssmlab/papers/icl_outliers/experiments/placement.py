"""Experiment 5: outlier placement, 3-layer models (Table 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import annotated_types as at
import numpy as np
from pydantic import Field, model_validator

from ssmlab.claims import ClaimSpec, Context, Diagnosis, Estimate, Region, mean_ci
from ssmlab.config import Distinct
from ssmlab.experiment import MAX_SEEDS, Experiment, ExperimentConfig, RunResult, register
from ssmlab.papers.icl_outliers.data import PLACEMENTS, ICLDataConfig, Rule, sample_test
from ssmlab.papers.icl_outliers.experiments.common import (
    MAX_LEN,
    MAX_PROMPTS,
    MODEL_LABELS,
    ModelKind,
    ModelSpec,
    SGDSpec,
    build_model,
    error_rate,
    eval_generator,
    fit,
    fit_history_bytes,
    model_label,
    over_seeds,
    patterns_for,
    placements_need_counts,
    runtime_bytes,
    test_set_bytes,
    train_bytes,
    variant_of,
)
from ssmlab.report import figures

PAPER = "icl_outliers"

#: Table 1 (and the appendix's softmax row): accuracy in % for farthest / random / closest.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "mamba": {"farthest": 99.73, "random": 99.67, "closest": 82.73},
    "linear": {"farthest": 93.68, "random": 94.12, "closest": 93.96},
    "softmax": {"farthest": 99.40, "random": 99.26, "closest": 99.28},
}


class PlacementConfig(ExperimentConfig):
    data: ICLDataConfig = Field(default_factory=lambda: ICLDataConfig(task_split="all", p_a=0.4))
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(
        n_layers=3, d_model=32, mixer_kwargs={"linear": {"mode": "quadratic"}}))
    sgd: SGDSpec = Field(default_factory=lambda: SGDSpec(optimizer="adam", lr=3e-3, steps=400))
    models: Annotated[tuple[ModelKind, ...], Distinct] = Field(
        ("mamba", "linear", "softmax"), min_length=1, max_length=3)
    l_tr: int = Field(20, ge=1, le=MAX_LEN)
    l_ts: int = Field(20, ge=1, le=MAX_LEN)
    alpha: float = Field(0.5, ge=0, le=1, description="Table 1: α = 0.5")
    rule: Rule = "flipped"
    n_test: int = Field(2000, ge=1, le=MAX_PROMPTS)
    tol_points: float = Field(5.0, gt=0, le=100,
                              description="each accuracy within ± this many points")
    drop_points: float = Field(5.0, gt=0, le=100,
                               description="'Mamba drops when outliers are closest'")
    flat_points: float = Field(3.0, gt=0, le=100, description="'linear Transformer insensitive'")
    seeds_by_model: dict[ModelKind, Annotated[int, at.Ge(1), at.Le(MAX_SEEDS)]] = Field(
        default_factory=dict, description="run only the first n seeds of a model's cell (a "
        "cheaper cell where its claims settle with fewer), e.g. {'softmax': 5}; others: seeds")

    @model_validator(mode="after")
    def _check(self) -> PlacementConfig:
        placements_need_counts(self.data, "farthest")  # every placement is run
        return self


@register
class Placement(Experiment):
    """icl_outliers, Table 1: test accuracy of 3-layer Mamba, linear-Transformer and softmax-
    Transformer stacks at α = 0.5 when the outliers sit farthest from / randomly / closest to
    the query.

    The paper does not describe its 3-layer models; ours (model.icl_stack, the generic backbone) embed p_i with a
    linear map to d_model = 32, apply 3 pre-norm residual blocks of the registry's mixer (Mamba
    block with mamba_ssm defaults; causal linear attention, identity feature map, one head;
    causal softmax attention, one head) and read the score out at the query.

    Claims (ids icl_outliers/placement:<name>; accuracy in %, 95% bootstrap intervals over
    seeds):
    - mamba_row, linear_row: each model's row within ± 5 points of the paper's (99.73 / 99.67 /
      82.73; 93.68 / 94.12 / 93.96): the largest deviation's interval must lie below 5.
    - mamba_closest_drop: Mamba is hurt by outliers next to the query: farthest − closest ≥ 5.
    - mamba_beats_linear: Mamba beats the linear Transformer when the outliers are farthest or
      random.
    - linear_flat: the linear Transformer is insensitive to placement: spread ≤ 3 points (paper
      0.44).
    - softmax_beats_mamba_closest (appendix row): with the outliers closest to the query the
      softmax Transformer beats Mamba (paper 99.28 vs 82.73).
    The appendix softmax row's "± 5 points around 99.3" is not checked: any stack that learns
    the task lands there (it could not fail in practice); nor its placement insensitivity,
    which an untrained stack shares.

    Any mixer (a variant, never counted as the paper's): `model.mixer=<registry name>` puts a
    stack of that mixer in the Mamba stack's place (cells model='mamba'); the linear and
    softmax stacks stay.

    Unpublished choices: p_a = 0.4, the one 3-layer set-up the paper describes (Fig. 3's);
    flipped labels on test outliers; Adam η = 3e-3 (SGD is Algorithm 1 for the one-layer
    models; Adam trains the deep stacks reliably), batch 64, 400 steps (quick; 2000 paper),
    7 seeds quick (5 for the softmax stack: `seeds_by_model`) / 8 paper. Tasks: task_split =
    "all" (train and test on every ordered pair; test prompts are fresh but their task pairs
    were seen). The paper tests on unseen pairs; our Mamba stack does not learn in context on
    unseen pairs (clean-context accuracy near chance on reversed or held-out pairs, 100 % on
    the training pairs: README "Findings"), so the placement effects are measured where the
    stacks read the context labels.
    """

    id = "icl_outliers/placement"
    paper = PAPER
    Config = PlacementConfig
    profiles = {
        "quick": {"seeds": 7, "seeds_by_model": {"softmax": 5}, "n_test": 1000},
        "paper": {"seeds": 8, "n_test": 4000,
                  "sgd": {"optimizer": "adam", "lr": 3e-3, "steps": 2000, "batch_size": 64}},
    }

    def variant(self, cfg: PlacementConfig) -> str:
        return variant_of(cfg.model)

    def cells(self, cfg: PlacementConfig) -> list[dict[str, Any]]:
        return [{"model": m} | ({"_seeds": cfg.seeds_by_model[m]} if m in cfg.seeds_by_model
                                else {}) for m in cfg.models]

    def memory_bytes(self, cfg: PlacementConfig) -> int:
        """The heaviest stack's run (common.py): training on fresh batches with its optimiser
        state, then four test sets of n_test prompts, each sampled while the previous one is
        still held and evaluated at once (no chunks)."""
        d = cfg.data.d
        per = [max(train_bytes(k, cfg.model, cfg.sgd.for_model(k), d, cfg.l_tr),
                   test_set_bytes(k, cfg.model, d, cfg.l_tr, cfg.n_test, cfg.l_ts, held=True))
               for k in cfg.models]
        return runtime_bytes(cfg.models, cfg.model) + max(per) + fit_history_bytes(cfg.sgd)

    def run(self, cfg: PlacementConfig, params: dict[str, Any], seed: int) -> RunResult:
        kind = params["model"]
        pat = patterns_for(cfg.data)
        model = build_model(kind, cfg.data, cfg.model, cfg.l_tr, seed)
        res = fit(model, pat, cfg.data, cfg.sgd.for_model(kind), cfg.l_tr, seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
        metrics = {"final_train_loss": float(np.mean(res.history["train_loss"][-5:]))}
        for i, pl in enumerate(PLACEMENTS):
            pr = sample_test(pat, cfg.data, cfg.n_test, cfg.l_ts, cfg.alpha, cfg.rule, pl,
                             eval_generator(seed, 10 + i))
            metrics[f"acc_{pl}"] = 100.0 * (1.0 - error_rate(model, pr))
        pr = sample_test(pat, cfg.data, cfg.n_test, cfg.l_ts, 0.0, cfg.rule, "random",
                         eval_generator(seed, 20))
        metrics["acc_clean"] = 100.0 * (1.0 - error_rate(model, pr))
        return RunResult(metrics=metrics, info={"model": kind})

    def specs(self, cfg: PlacementConfig) -> list[ClaimSpec]:
        out: list[ClaimSpec] = []
        row_src = (f"± {cfg.tol_points:g} points around the paper's number (our choice: the "
                   "paper gives no error bars or seeds); the 95% interval over seeds must lie "
                   "inside, so a seed spread wider than that cannot pass")
        for kind in ("mamba", "linear"):
            if kind not in cfg.models:
                continue
            out.append(ClaimSpec(
                name=f"{kind}_row", ref="Table 1", figure="main",
                statement=f"3-layer {MODEL_LABELS[kind]} accuracy (farthest / random / closest) "
                          f"at α = {cfg.alpha:g} is {_paper_row(kind)} %.",
                paper_value=f"{_paper_row(kind)} %",
                quantity="largest |seed-mean accuracy − paper| over the three placements, "
                         "in points",
                metric=lambda ctx, k=kind: _row_deviation(ctx, k),
                region=Region.below(cfg.tol_points), tolerance_source=row_src,
                diagnosis=Diagnosis("setup-unknown",
                                    lambda ctx, k=kind: _stack_evidence(ctx, cfg, k))))
        flat_src = (f"≤ {cfg.flat_points:g} points (our reading of 'insensitive': the paper's "
                    "spreads are 0.44 and 0.14 points)")
        if "mamba" in cfg.models:
            out.append(ClaimSpec(
                name="mamba_closest_drop", ref="Table 1", figure="main",
                statement="Mamba is hurt when the outliers are closest to the query (gates decay "
                          "with distance, so nearby outliers weigh most).",
                paper_value=f"{_drop('mamba'):.2f} points (farthest − closest)",
                quantity="farthest − closest accuracy, per seed, mean over seeds (points)",
                metric=lambda ctx: _closest_drop(ctx),
                region=Region.above(cfg.drop_points),
                tolerance_source=f"≥ {cfg.drop_points:g} points (our choice: a third of the "
                "paper's 17-point drop, and far above the linear Transformer's 0.44-point "
                "spread)",
                diagnosis=Diagnosis("setup-unknown",
                                    lambda ctx: _stack_evidence(ctx, cfg, "mamba"))))
        if {"mamba", "linear"} <= set(cfg.models):
            out.append(ClaimSpec(
                name="mamba_beats_linear", ref="Table 1", figure="main",
                statement="Mamba beats the linear Transformer when outliers are farthest or "
                          "random.",
                paper_value="+6.05 (farthest), +5.55 (random) points",
                quantity="min over {farthest, random} of seed-mean Mamba − linear accuracy "
                         "(points; seeds paired by index)",
                metric=lambda ctx: _beats(ctx),
                region=Region.above(0.0, strict=True),
                tolerance_source="sign only (the paper's margins are 5-6 points)",
                diagnosis=Diagnosis("setup-unknown",
                                    lambda ctx: _stack_evidence(ctx, cfg, "linear"))))
        if "linear" in cfg.models:
            out.append(ClaimSpec(
                name="linear_flat", ref="Table 1", figure="main",
                statement="The linear Transformer is insensitive to where the outliers are.",
                paper_value=f"spread {_spread_paper('linear'):.2f} points "
                            f"({_paper_row('linear')} %)",
                quantity="max − min of the seed-mean accuracies over the placements (points)",
                metric=lambda ctx: _spread(ctx, "linear"),
                region=Region.below(cfg.flat_points), tolerance_source=flat_src,
                diagnosis=Diagnosis("setup-unknown",
                                    lambda ctx: _stack_evidence(ctx, cfg, "linear"))))
        if {"mamba", "softmax"} <= set(cfg.models):
            out.append(ClaimSpec(
                name="softmax_beats_mamba_closest", ref="Table 1 (appendix row)", figure="main",
                statement="The softmax Transformer keeps its accuracy when the outliers are "
                          "closest to the query, where Mamba loses it.",
                paper_value=f"softmax − Mamba at closest: "
                            f"{PAPER_TABLE1['softmax']['closest'] - PAPER_TABLE1['mamba']['closest']:.2f}"
                            " points (99.28 vs 82.73)",
                quantity="seed-mean softmax − Mamba accuracy, closest placement (points; seeds "
                         "paired by index)",
                metric=lambda ctx: _softmax_vs_mamba(ctx),
                region=Region.above(0.0, strict=True),
                tolerance_source="sign only (the paper's margin is 16.55 points). Replaces "
                "'softmax row ± 5 points around 99.3', which any stack that learns the task "
                "meets",
                diagnosis=Diagnosis("setup-unknown",
                                    lambda ctx: _stack_evidence(ctx, cfg, "softmax"))))
        return out

    def figures(self, ctx: Context) -> dict[str, str]:
        acc = {k: {pl: float(np.mean([r.metrics.get(f"acc_{pl}", np.nan)
                                      for r in ctx.select(model=k)] or [np.nan]))
                   for pl in PLACEMENTS} for k in ctx.cfg.models}
        return {"main": self._figure(ctx.cfg, acc, ctx.figdir)}

    def _figure(self, cfg: PlacementConfig, acc: dict, figdir: Path) -> str:
        fig, (ax,) = figures.new_figure(width=6.0)
        x = np.arange(len(PLACEMENTS))
        w = 0.8 / max(len(cfg.models), 1)
        for i, kind in enumerate(cfg.models):
            ours = [acc[kind][pl] for pl in PLACEMENTS]
            bars = ax.bar(x + i * w, ours, w, label=f"{model_label(kind, cfg.model)} (ours)")
            if kind in PAPER_TABLE1:
                ax.plot(x + i * w, [PAPER_TABLE1[kind][pl] for pl in PLACEMENTS], "k_",
                        markersize=14, mew=2)
            bars[0].set_alpha(0.9)
        ax.plot([], [], "k_", markersize=14, mew=2, label="paper")
        ax.set_xticks(x + w * (len(cfg.models) - 1) / 2, PLACEMENTS)
        ax.set_ylim(40, 101)
        ax.set_ylabel(f"accuracy (%) at α = {cfg.alpha:g}")
        ax.legend(fontsize=7, loc="lower left")
        return figures.save(fig, figdir, "icl_placement.png")


def _paper_row(kind: str) -> str:
    return " / ".join(f"{PAPER_TABLE1[kind][pl]:.2f}" for pl in PLACEMENTS)


def _drop(kind: str) -> float:
    return PAPER_TABLE1[kind]["farthest"] - PAPER_TABLE1[kind]["closest"]


def _spread_paper(kind: str) -> float:
    v = [PAPER_TABLE1[kind][pl] for pl in PLACEMENTS]
    return max(v) - min(v)


def _acc(ctx: Context, kind: str) -> np.ndarray:
    """(seeds, placements) accuracies of one model."""
    return ctx.seed_matrix([({"model": kind}, f"acc_{pl}") for pl in PLACEMENTS])


def _means(m: np.ndarray) -> str:
    return " / ".join(f"{x:.2f}" for x in m.mean(0))


def _row_deviation(ctx: Context, kind: str) -> Estimate:
    m = _acc(ctx, kind)
    paper = np.array([PAPER_TABLE1[kind][pl] for pl in PLACEMENTS])
    clean = np.mean(ctx.values("acc_clean", model=kind))
    return over_seeds(m, lambda x: float(np.abs(x.mean(0) - paper).max()),
                      f"ours {_means(m)} % (clean context {clean:.2f} %)")


def _closest_drop(ctx: Context) -> Estimate:
    m = _acc(ctx, "mamba")
    i, j = PLACEMENTS.index("farthest"), PLACEMENTS.index("closest")
    return mean_ci(m[:, i] - m[:, j], f"Mamba {_means(m)} %")


def _beats(ctx: Context) -> Estimate:
    a, b = _acc(ctx, "mamba"), _acc(ctx, "linear")
    n = min(len(a), len(b))
    cols = [PLACEMENTS.index("farthest"), PLACEMENTS.index("random")]
    mat = np.concatenate([a[:n][:, cols], b[:n][:, cols]], 1)
    return over_seeds(mat, lambda x: float((x[:, :2].mean(0) - x[:, 2:].mean(0)).min()),
                      f"Mamba {_means(a)} %, linear {_means(b)} %")


def _softmax_vs_mamba(ctx: Context) -> Estimate:
    a, b = _acc(ctx, "softmax"), _acc(ctx, "mamba")
    n = min(len(a), len(b))
    j = PLACEMENTS.index("closest")
    mat = np.stack([a[:n, j], b[:n, j]], 1)
    return over_seeds(mat, lambda x: float(x[:, 0].mean() - x[:, 1].mean()),
                      f"softmax {_means(a)} %, Mamba {_means(b)} %")


def _spread(ctx: Context, kind: str) -> Estimate:
    m = _acc(ctx, kind)
    return over_seeds(m, lambda x: float(np.ptp(x.mean(0))), f"ours {_means(m)} %")


def _stack_evidence(ctx: Context, cfg: PlacementConfig, kind: str) -> str:
    """Per-seed numbers from the stored runs: which placement is worst in how many seeds."""
    rs = ctx.select(model=kind)
    seeds = "; ".join(
        f"seed {r.seed}: " + " / ".join(f"{r.metrics.get(f'acc_{pl}', np.nan):.1f}"
                                         for pl in PLACEMENTS)
        + f" (clean {r.metrics.get('acc_clean', np.nan):.1f})" for r in rs)
    worst = [min(PLACEMENTS, key=lambda pl, r=r: r.metrics.get(f"acc_{pl}", np.inf))
             for r in rs]
    counts = ", ".join(f"{pl} in {worst.count(pl)}" for pl in PLACEMENTS if worst.count(pl))
    return (f"the paper's 3-layer networks and their training are unpublished (ours: "
            f"{cfg.model.n_layers} pre-norm residual blocks, d_model {cfg.model.d_model}, Adam "
            f"η = {cfg.sgd.lr:g}, {cfg.sgd.steps} steps, p_a = {cfg.data.p_a:g}, flipped labels, "
            f"task pairs seen in training). {MODEL_LABELS[kind]} per seed (farthest / random / "
            f"closest): {seeds}; worst placement: {counts} of {len(rs)} seeds. README "
            "'Findings' gives the verdicts at p_a = 0.6 and the stacks' accuracy on unseen "
            "task pairs.")
