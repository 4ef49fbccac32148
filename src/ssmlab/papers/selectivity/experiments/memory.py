"""Experiment 2 (memory decay): KEEP n-TH for Mamba with / without positional encoding and S4D,
over the sequence length T, with histograms of the memory factors e^{-λΔ_t}.

The paper's memory decay: |∂h_t/∂x_j| ≈ c·exp(-λ Σ_{r=j+1..t} Δ_r), and its Lemma 2: to retain
information over length T the factor e^{-λΔ_t} must → 1 as T grows; so retaining x_n until
step T needs e^{-λΔ_t} → 1 for t > n; Δ → 0 "freezes time". Mamba can set Δ from the input
(here from the positional encoding), S4D cannot (Δ constant), and Mamba without positional
information cannot tell where position n is.

Set-up: ssmlab.papers.selectivity.data.keep_nth (|V| = 8 tokens, n = 4; label = x_n at the last position); a
one-layer `TokenLM` (pre-norm residual, final norm, untied head), d_model 16, N 8, expand 2,
d_conv 4, learned absolute positional embeddings added to the token embeddings for "mamba_pe"
and "s4d_pe" (S4D inside the same gated block, `S4DBlock`); Adam (TrainSpec).
Memory factors: e^{Δ_t A_{e,n}} for every channel e, state n and step t of the test inputs
(Mamba: Δ from the block on each input; S4D: its constant Δ), split into t < n (before the kept
token, 0-based t < n - 1) and t ≥ n.

Claims (tolerances ours; the paper reports them qualitatively):
    1. Mamba + PE solves KEEP n-TH at every T: accuracy ≥ `solve_acc` (0.95) at all T.
    2. S4D degrades with T: accuracy(T_max) ≤ accuracy(T_min) - `drop` (0.1).
    3. Mamba without PE falls to S4D's level: |acc(Mamba) - acc(S4D)| ≤ `level_tol` (0.15) at
       T_max.
    4. Lemma 2: Mamba + PE's mean memory factor after n grows with T (mean at T_max > at T_min).
    5. Mamba forgets selectively: its median factor before n is < 0.5 at T_max.

Unpublished choices (defaults above): vocabulary, n, widths, T grid (quick 16, 32, 64; paper 16,
64, 256, 512), 600 Adam steps at lr 0.01 (quick) / 1500 (paper), 2048 training sequences. With
300 steps Mamba + PE does not find the selective solution at T = 128 (loss stays at chance, lr
0.01 or 0.003, learned or sinusoidal PE); with 1000 steps it reaches 100 % at T = 128 (the loss
drops between steps 400 and 600), hence the quick grid stops at 64 and the paper profile uses
1500 steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types as at
import numpy as np
import torch
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
from ssmlab.layers.s6 import MambaBlock
from ssmlab.memory import nbytes
from ssmlab.papers.selectivity.data.keep_nth import KeepNthConfig
from ssmlab.papers.selectivity.experiments.common import (
    MAX_GRID,
    MAX_LEN,
    PAPER,
    LMMixer,
    StateSize,
    TrainSpec,
    Width,
    build_lm,
    fit,
    lm_run_bytes,
    run_metrics,
    token_accuracy,
)
from ssmlab.papers.selectivity.model import S4DBlock, TokenLM
from ssmlab.records import not_ok_note
from ssmlab.report import figures
from ssmlab.report.stats import group_by, mean_std

ModelName = Literal["mamba_pe", "mamba", "s4d_pe"]  # the keys of MODELS (a test checks)
MODELS: dict[str, tuple[LMMixer, Literal["learned"] | None]] = {
    "mamba_pe": ("mamba", "learned"), "mamba": ("mamba", None), "s4d_pe": ("s4d", "learned")}
LABELS = {"mamba_pe": "Mamba + PE", "mamba": "Mamba, no PE", "s4d_pe": "S4D + PE"}
BINS = np.linspace(0.0, 1.0, 21)


FACTOR_SAMPLES = 128  # test inputs whose memory factors are histogrammed


class MemoryConfig(ExperimentConfig):
    """data.seq_len is replaced by each of seq_lens; data.n must fit in every one of them."""

    data: KeepNthConfig = Field(default_factory=lambda: KeepNthConfig(vocab_size=8, n=4))
    train: TrainSpec = Field(default_factory=TrainSpec)
    seq_lens: tuple[Annotated[int, at.Ge(1), at.Le(MAX_LEN)], ...] = Field(
        (16, 32, 64), min_length=1, max_length=MAX_GRID, description="lengths T")
    models: tuple[ModelName, ...] = Field(tuple(MODELS), min_length=1, max_length=len(MODELS),
                                          description=f"any of {', '.join(MODELS)}")
    d_model: Width = 16
    d_state: StateSize = 8
    solve_acc: float = Field(0.95, gt=0, le=1)
    drop: float = Field(0.1, ge=0, le=1, description="accuracy drop S4D must show")
    level_tol: float = Field(0.15, ge=0, le=1, description="|acc(Mamba) - acc(S4D)| allowed")

    @field_validator("seq_lens")
    @classmethod
    def _distinct(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        each_once(v)
        return v

    @field_validator("models")
    @classmethod
    def _distinct_models(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        each_once(v)
        return v

    @model_validator(mode="after")
    def _n_fits(self) -> MemoryConfig:
        if self.data.n > min(self.seq_lens):
            raise ValueError(f"data.n={self.data.n} must be <= every seq_lens value "
                             f"(smallest {min(self.seq_lens)}): the kept token is x_n")
        return self


@torch.no_grad()
def memory_factors(lm: TokenLM, tokens: torch.Tensor) -> torch.Tensor:
    """e^{Δ_t A} (B, E, N, L) of the first block on these inputs."""
    lm.eval()
    h = lm.embed(tokens)
    inp = lm.norms[0](h) if lm.norms is not None else h
    blk = lm.layers[0]
    if isinstance(blk, MambaBlock):
        delta = blk.delta(inp).transpose(1, 2)  # (B, E, L)
        return torch.exp(delta[:, :, None, :] * blk.A[None, :, :, None])  # (B, E, N, L)
    if isinstance(blk, S4DBlock):
        dtA, _, _ = blk.s4d._discrete()  # (E, modes), input-independent
        f = torch.exp(dtA).abs() if dtA.is_complex() else torch.exp(dtA)
        return f[None, :, :, None].expand(tokens.shape[0], -1, -1, tokens.shape[1])
    raise TypeError(f"no memory factors for {type(blk).__name__}")


@register
class Memory(Experiment):
    """selectivity, memory decay (KEEP n-TH table and the e^{-λΔ_t} histograms, Lemma 2). Set-up,
    claims and unpublished choices: module docstring of ssmlab.papers.selectivity.experiments.memory."""

    id = "selectivity/memory"
    paper = PAPER
    Config = MemoryConfig
    profiles = {
        "quick": {"seeds": 1, "train": {"steps": 600}},
        "paper": {"seeds": 3, "train": {"steps": 1500, "n_train": 8192},
                  "seq_lens": (16, 64, 256, 512)},
    }

    def cells(self, cfg: MemoryConfig) -> list[dict[str, Any]]:
        return [{"model": m, "seq_len": T} for m in cfg.models for T in cfg.seq_lens]

    def memory_bytes(self, cfg: MemoryConfig) -> int:
        """The largest cell: training and evaluating the model (common.lm_run_bytes) plus the
        memory factors of FACTOR_SAMPLES test inputs, (128, E, N, T) float32, with the copies
        the statistics make (the before / after slices, the median's partition and the
        histogram's float64 temporaries: ~8 factor-sized arrays)."""
        T = max(cfg.seq_lens)
        E = 2 * cfg.d_model
        factors = 8 * nbytes(min(FACTOR_SAMPLES, cfg.train.n_test), E, cfg.d_state, T)
        return factors + max(
            lm_run_bytes(MODELS[m][0], cfg.data.vocab_size, cfg.d_model, cfg.d_state, T,
                         cfg.train, pos_encoding=MODELS[m][1] is not None)
            for m in cfg.models)

    def run(self, cfg: MemoryConfig, params: dict[str, Any], seed: int) -> RunResult:
        model, T = params["model"], params["seq_len"]
        mixer, pe = MODELS[model]
        dcfg = cfg.data.model_copy(update={"seq_len": T})
        train_data = dcfg.model_copy(update={"num_examples": cfg.train.n_train}).build(seed, "train")
        test_data = dcfg.model_copy(update={"num_examples": cfg.train.n_test}).build(seed, "test")
        lm = build_lm(mixer, cfg.data.vocab_size, cfg.d_model, cfg.d_state, T, seed,
                      pos_encoding=pe)
        res = fit(lm, cfg.train, train_data.inputs, train_data.labels, seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
        metrics = run_metrics(lm, res)
        metrics["test_acc"] = token_accuracy(lm, test_data.inputs, test_data.labels)
        f = memory_factors(lm, test_data.inputs[:FACTOR_SAMPLES])  # (B, E, N, L)
        n = cfg.data.n
        before, after = f[..., : n - 1].flatten().numpy(), f[..., n:].flatten().numpy()
        metrics["factor_mean_at_n"] = float(f[..., n - 1].mean())  # the step that writes x_n
        hist = {}
        for name, v in (("before", before), ("after", after)):
            if v.size:
                metrics[f"factor_mean_{name}"] = float(v.mean())
                metrics[f"factor_median_{name}"] = float(np.median(v))
                hist[f"hist_{name}"] = (np.histogram(v, BINS)[0] / v.size).tolist()
        return RunResult(metrics=metrics, history=hist, info={"model": model})

    def table(self, runs: list[RunRecord]) -> dict[tuple[str, int], dict[str, float]]:
        ok = [r for r in runs if r.status == "ok"]
        out = {}
        for (m, T), rs in group_by(ok, lambda r: (r.params["model"], r.params["seq_len"])).items():
            out[m, T] = {k: mean_std([r.metrics.get(k, np.nan) for r in rs])[0]
                         for k in ("test_acc", "factor_mean_after", "factor_median_before",
                                   "factor_mean_at_n")}
        return out

    def analyze(self, cfg: MemoryConfig, runs: list[RunRecord], figdir: Path) -> list[Claim]:
        tab = self.table(runs)
        Ts = sorted(cfg.seq_lens)
        fig = self._figure(cfg, runs, figdir) if tab else None
        base = {"paper": PAPER, "experiment": self.id, "figure": fig}

        def acc(m: str, T: int) -> float:
            return tab.get((m, T), {}).get("test_acc", np.nan)

        def row(m: str) -> str:
            return ", ".join(f"T={T}: {acc(m, T):.3f}" for T in Ts)

        claims = []
        a = [acc("mamba_pe", T) for T in Ts]
        ok1 = all(np.isfinite(a)) and min(a) >= cfg.solve_acc
        claims.append(Claim(**base, ref="Tab. (KEEP n-TH)",
                            claim="Mamba with positional encoding solves KEEP n-TH at every T.",
                            measured=row("mamba_pe"), expected=f"accuracy ≥ {cfg.solve_acc:g} at all T",
                            passed=bool(ok1), value=float(np.nanmin(a)) if a else None,
                            note=not_ok_note(runs)))
        s0, s1 = acc("s4d_pe", Ts[0]), acc("s4d_pe", Ts[-1])
        ok2 = np.isfinite(s0) and np.isfinite(s1) and s1 <= s0 - cfg.drop
        claims.append(Claim(**base, ref="Tab. (KEEP n-TH)",
                            claim="S4D's accuracy on KEEP n-TH drops as T grows.",
                            measured=row("s4d_pe"),
                            expected=f"acc(T={Ts[-1]}) ≤ acc(T={Ts[0]}) - {cfg.drop:g}",
                            passed=bool(ok2), value=float(s1 - s0),
                            note="" if ok2 else "S4D (with PE, in the gated block) kept its accuracy "
                            "over this T range: its conv + SiLU can gate the token by position "
                            "before the LTI scan"))
        m1 = acc("mamba", Ts[-1])
        ok3 = np.isfinite(m1) and np.isfinite(s1) and abs(m1 - s1) <= cfg.level_tol
        claims.append(Claim(**base, ref="Tab. (KEEP n-TH)",
                            claim="Mamba without positional encoding falls to S4D's level.",
                            measured=f"Mamba no PE: {row('mamba')}; S4D: {row('s4d_pe')}",
                            expected=f"|acc(Mamba, no PE) - acc(S4D)| ≤ {cfg.level_tol:g} at T={Ts[-1]}",
                            passed=bool(ok3), value=float(m1 - s1) if np.isfinite(m1 - s1) else None))
        fa = [tab.get(("mamba_pe", T), {}).get("factor_mean_after", np.nan) for T in Ts]
        mb = tab.get(("mamba_pe", Ts[-1]), {}).get("factor_median_before", np.nan)
        at_n = tab.get(("mamba_pe", Ts[-1]), {}).get("factor_mean_at_n", np.nan)
        ok4 = all(np.isfinite(fa)) and fa[-1] > fa[0]
        claims.append(Claim(**base, ref="Lem. 2 / Fig. (histograms, left)",
                            claim="To retain x_n over length T, trained Mamba pushes the memory "
                                  "factors e^{-λΔ_t} after n toward 1 as T grows.",
                            measured="Mamba + PE mean factor after n: "
                                     + ", ".join(f"T={T}: {v:.3f}" for T, v in zip(Ts, fa, strict=True)),
                            expected=f"mean at T={Ts[-1]} > mean at T={Ts[0]}",
                            passed=bool(ok4), value=float(fa[-1]) if fa else None,
                            note="" if ok4 else "the mean factor after n did not grow with T"))
        ok5 = bool(np.isfinite(mb) and mb < 0.5)
        claims.append(Claim(**base, ref="Fig. (histograms, right)",
                            claim="Mamba forgets selectively: e^{-λΔ_t} is mostly 0 before step n.",
                            measured=f"Mamba + PE at T={Ts[-1]}: median factor before n {mb:.3f}; "
                                     f"mean factor at the step of x_n {at_n:.3f}",
                            expected="median factor before n < 0.5",
                            passed=ok5, value=float(mb) if np.isfinite(mb) else None,
                            note="" if ok5 else "the trained model keeps its memory before n "
                            "(median factor ≥ 0.5): it solves the task without resetting before "
                            "the kept token, e.g. by writing x_n with a large weight at n and "
                            "freezing afterwards; nothing in the loss asks it to forget"))
        return claims

    def _figure(self, cfg: MemoryConfig, runs: list[RunRecord], figdir: Path) -> str:
        Ts = sorted(cfg.seq_lens)
        fig, axes = figures.new_figure(ncols=3)
        tab = self.table(runs)
        for m in cfg.models:
            axes[0].plot(Ts, [tab.get((m, T), {}).get("test_acc", np.nan) for T in Ts], "o-",
                         label=LABELS.get(m, m))
        axes[0].set_xscale("log", base=2)
        axes[0].set_xlabel("T")
        axes[0].set_ylabel("KEEP n-TH accuracy")
        axes[0].legend(fontsize=7)
        centers = (BINS[:-1] + BINS[1:]) / 2
        for ax, part in zip(axes[1:], ("after", "before"), strict=True):
            for T in Ts:
                hs = [r.history.get(f"hist_{part}") for r in runs if r.status == "ok"
                      and r.params.get("model") == "mamba_pe" and r.params.get("seq_len") == T]
                hs = [h for h in hs if h]
                if hs:
                    ax.plot(centers, np.mean(hs, 0), "-", label=f"T={T}")
            ax.set_yscale("log")
            ax.set_xlabel("memory factor exp(-λΔ_t)")
            ax.set_title(f"Mamba + PE, t {'≥' if part == 'after' else '<'} n")
            ax.legend(fontsize=7)
        return figures.save(fig, figdir, "keep_nth.png")

