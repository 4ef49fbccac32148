"""Attention view (generalization paper, Sec. 3 "through the lens of attention").

A selective SSM is a causal attention layer: y_t[c] = Σ_{s ≤ t} M[c, t, s] u_s[c] with
M[c, t, s] = Σ_n (W_C u_t)[n] (W_B u_s)[n] Δ_s exp(A[c, n] Σ_{j=s+1..t} Δ_j) — query W_C u_t,
key W_B u_s, value u_s and a data-dependent decay gate. This experiment trains one Majority model
(s_A = 0, T = 48, 10 epochs), takes one clean test input and
  - draws the implied attention matrix M (per channel and summed over channels) as a heat map,
    with the last row — the only one the classifier reads — beside the input bits;
  - checks that the recurrent scan (ssmlab.ops selective scan) and the attention form give the
    same outputs on the trained model, in float64.
Claim: max_t,c |y_scan - M u| / max |y_scan| ≤ 1e-9 (float64 round-off on T ≈ 50 steps is
~1e-14; 1e-9 leaves room for the fused kernel's summation order while still catching any
modelling difference, which would be O(1)).
The matrix is stored with the run (T² · d numbers) so the figure is redrawn from the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator

from ssmlab.claims import ClaimSpec, Context, Estimate, NoData, Region, exact
from ssmlab.experiment import Experiment, ExperimentConfig, RunRecord, RunResult, register
from ssmlab.memory import nbytes
from ssmlab.papers.generalization.experiments.common import (
    NUMBA_KERNEL,
    ModelSettings,
    PaperTraining,
    Seeds,
    TaskSettings,
    build_task,
    train_run,
    train_run_bytes,
)
from ssmlab.report.figures import new_figure, save

PAPER = "generalization"


class AttentionConfig(ExperimentConfig):
    seeds: Seeds = 1
    T: int = Field(48, ge=2, le=256, description="length of the example (the matrix is T×T)")
    model: ModelSettings = Field(default_factory=ModelSettings)
    task: TaskSettings = Field(default_factory=TaskSettings)
    training: PaperTraining = Field(default_factory=lambda: PaperTraining(epochs=10))
    example: int = Field(0, ge=0, le=10**7, description="index of the test input shown (< task.n_test)")
    rel_tol: float = Field(1e-9, gt=0, le=1, description="relative error allowed")

    @model_validator(mode="after")
    def _example_exists(self) -> AttentionConfig:
        if self.example >= self.task.n_test:
            raise ValueError(f"example={self.example} must be < task.n_test={self.task.n_test} "
                             "(it indexes the test set)")
        return self


@register
class AttentionView(Experiment):
    """generalization paper, Sec. 3 (lens of attention): the trained selective SSM's implied
    attention matrix on one input (heat map), and scan == attention form on the trained model.
    Details: ssmlab.papers.generalization.experiments.attention (module docstring)."""

    id = "generalization/attention"
    paper = PAPER
    Config = AttentionConfig
    profiles = {"quick": {}, "paper": {"T": 100, "training": {"epochs": 40}}}

    def memory_bytes(self, cfg: AttentionConfig) -> int:
        """The training run (common.train_run_bytes) plus the float64 attention matrix of one
        example: implied_attention holds ~6 (d, T, T) float64 tensors (the decay sums, each
        state's decay and product, the running sum), and the stored history keeps the d·T²
        numbers as Python floats in lists (~32 bytes each) beside their numpy copy; the float64
        scan of the check loads one more Numba kernel (common.NUMBA_KERNEL)."""
        d, T = cfg.model.d, cfg.T
        lens = NUMBA_KERNEL + 6 * nbytes(d, T, T, itemsize=8) + d * T * T * (32 + 8)
        return train_run_bytes(cfg.model, cfg.training, "majority", cfg.task, T) + lens

    def run(self, cfg: AttentionConfig, params: dict[str, Any], seed: int) -> RunResult:
        data = build_task("majority", cfg.task, cfg.T, seed)
        result, model = train_run(cfg.model, cfg.training, data, seed, return_model=True)
        if result.status != "ok":
            return result
        x = data.test[0][cfg.example : cfg.example + 1]  # (1, T)
        label = float(data.test[1][cfg.example])
        m64 = model.double()
        with torch.no_grad():
            u = m64.embed(x)  # (1, T, d)
            y_scan = m64.ssm.forward(u)  # (1, T, d) via ssmlab.ops' scan
            M = m64.ssm.attention_matrix(u)  # (1, d, T, T)
            y_att = torch.einsum("bcts,bsc->btc", M, u)
            err = float((y_scan - y_att).abs().max() / y_scan.abs().max().clamp_min(1e-300))
            score = float(m64(x)[0])
        result.metrics |= {"scan_vs_attention_rel_err": err, "example_score": score,
                           "example_label": label}
        result.history["attention"] = np.round(M[0].numpy(), 6).tolist()  # (d, T, T)
        result.history["tokens"] = x[0].tolist()
        return result

    def specs(self, cfg: AttentionConfig) -> list[ClaimSpec]:
        return [ClaimSpec(
            name="scan_equals_attention", ref="Sec. 3 (lens of attention, G7)",
            statement="the selective SSM equals a causal attention layer with query W_C u_t, key "
                      "W_B u_s, value u_s and decay gate Δ_s exp(A Σ Δ)",
            quantity=f"max relative |y_scan − M u| on a trained model (float64, T = {cfg.T})",
            metric=scan_vs_attention, region=Region.below(cfg.rel_tol),
            tolerance_source=f"{cfg.rel_tol:g}: float64 round-off over ~50 steps is ~1e-14; any "
                             "modelling difference would be O(1)",
            figure="main", note=example_note,
        )]

    def figures(self, ctx: Context) -> dict[str, str]:
        ok = _with_check(ctx)
        return {"main": self._figure(ok[0], ctx.figdir)} if ok else {}

    def _figure(self, r: RunRecord, figdir: Path) -> str:
        M = np.asarray(r.history["attention"], float)  # (d, T, T)
        tokens = np.asarray(r.history["tokens"])
        T = M.shape[-1]
        fig, axes = new_figure(3, width=4.2)
        total = M.sum(0)
        vmax = _scale(total)
        im = axes[0].imshow(total, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        axes[0].set(title="Σ_c M[c, t, s]", xlabel="s (key / value)", ylabel="t (query)")
        fig.colorbar(im, ax=axes[0], fraction=0.046, extend="both")
        c0 = M[0]
        v0 = _scale(c0)
        im = axes[1].imshow(c0, cmap="RdBu_r", vmin=-v0, vmax=v0)
        axes[1].set(title="channel 0: M[0, t, s]", xlabel="s", ylabel="t")
        fig.colorbar(im, ax=axes[1], fraction=0.046, extend="both")
        s = np.arange(T)
        for c in range(M.shape[0]):
            axes[2].plot(s, M[c, -1], lw=1, label=f"c={c}")
        ones = s[tokens == 1]
        axes[2].plot(ones, np.zeros_like(ones, dtype=float), "|", color="k", ms=10, label="u_s = 1")
        axes[2].set(title="last row M[c, T, s] (what the readout uses)", xlabel="s")
        axes[2].legend(fontsize=6)
        return save(fig, figdir, "attention.png")


def _scale(M: np.ndarray) -> float:
    """Colour limit: the 98th percentile of |M| below the diagonal (the diagonal Δ_t C_t·B_t
    terms are much larger and would wash the rest out); they saturate the colour map."""
    below = np.abs(M[np.tril_indices(M.shape[-1], -1)])
    v = float(np.percentile(below, 98)) if below.size else 0.0
    return v or float(np.abs(M).max()) or 1.0



def _with_check(ctx: Context) -> list[RunRecord]:
    return [r for r in ctx.ok if "scan_vs_attention_rel_err" in r.metrics]


def scan_vs_attention(ctx: Context) -> Estimate:
    """The worst relative difference over the runs: a deterministic computation on each trained
    model, so the number is exact (no spread to estimate)."""
    ok = _with_check(ctx)
    if not ok:
        raise NoData(ctx.why_empty())
    return exact(max(r.metrics["scan_vs_attention_rel_err"] for r in ok),
                 detail=f"worst of {len(ok)} trained model(s)")


def example_note(ctx: Context) -> str:
    ok = _with_check(ctx)
    if not ok:
        return ""
    r = ok[0]
    return (f"example test input {ctx.cfg.example}: label {r.metrics['example_label']:+.0f}, "
            f"score {r.metrics['example_score']:+.3g}; test accuracy {r.metrics['test_acc']:.3f}")
