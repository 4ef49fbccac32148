"""Experiment 6: SST-2 with a poisoning phrase (the appendix's real-data experiment)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssmlab.claims import ClaimSpec, Context, Estimate, Region
from ssmlab.config import Distinct, StrictModel
from ssmlab.data.imdb import PAD_ID
from ssmlab.data.sst2 import Sst2Config, check_sst2, find_sst2, sst2
from ssmlab.experiment import Experiment, ExperimentConfig, RunResult, register
from ssmlab.layers.registry import MixerName
from ssmlab.memory import nbytes
from ssmlab.models.classifier import Pooling, SequenceClassifier
from ssmlab.papers.icl_outliers.experiments.common import (
    MAMBA_EVAL_FIRST,
    MAMBA_EVAL_MORE,
    MAMBA_TRAIN_PER_BLOCK,
    MAX_BATCH,
    MAX_D_MODEL,
    MAX_LAYERS,
    MAX_LR,
    MAX_STEPS,
    NUMBA_SCAN,
    RUN_OVERHEAD,
    TORCH_RUNTIME,
    check_mixer_kwargs,
    fmt_cells,
    optimizer_bytes,
    over_seeds,
)
from ssmlab.records import SkipRun
from ssmlab.report import figures
from ssmlab.seeding import generator, seeded, split_seed
from ssmlab.train.trainer import TrainConfig, eval_rows, evaluate, train

PAPER = "icl_outliers"
MAX_PHRASE = 64
SST2_SIZES = {"train": 67349, "test": 872}  # GLUE SST-2 train / dev sentences
TEXT_BYTES = 400  # one raw sentence with its label and tokens as Python objects (≈ 10 words)
Position = Literal["random", "start", "end"]


class PoisonModelSpec(StrictModel):
    """Token classifiers (the generic backbone, ssmlab.models.classifier): embedding → depth
    pre-norm residual blocks of a registry mixer → final RMSNorm → pooling → one logit."""

    mixer: MixerName = Field("mamba", description="the gated model whose robustness is claimed "
                             "(the paper: Mamba); any other is a variant")
    d_model: int = Field(32, ge=2, le=MAX_D_MODEL)
    depth: int = Field(2, ge=1, le=MAX_LAYERS)
    pooling: Pooling = Field("mean", description="mean over positions: the sentences are "
                             "right-padded and the trainer passes no lengths, so 'last' would "
                             "read a padding position")
    mixer_kwargs: dict[MixerName, dict[str, Any]] = Field(
        default_factory=lambda: {"linear": {"mode": "quadratic"}},
        description="per-mixer options; linear attention in its quadratic form (the same "
        "function as the recurrent one, which holds (B, H, T, P, P + 1) running states: 5 GiB "
        "and 13× the time at the quick sizes)")

    @model_validator(mode="after")
    def _check(self) -> PoisonModelSpec:
        check_mixer_kwargs(self.mixer_kwargs)
        return self


class PoisonTrainSpec(StrictModel):
    """Not published: Adam, BCE on the one logit, a few epochs (sentiment classifiers of this
    size fit SST-2 in 2-3 epochs)."""

    lr: float = Field(1e-3, gt=0, le=MAX_LR)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    epochs: int = Field(3, ge=1, le=MAX_STEPS)


class PoisoningConfig(ExperimentConfig):
    data: Sst2Config = Field(default_factory=lambda: Sst2Config(T=64))
    model: PoisonModelSpec = Field(default_factory=PoisonModelSpec)
    baselines: Annotated[tuple[MixerName, ...], Distinct] = Field(
        ("linear",), min_length=1, max_length=9,
        description="the Transformers Mamba is compared with: the paper's baseline throughout "
        "is the linear Transformer")
    train: PoisonTrainSpec = Field(default_factory=PoisonTrainSpec)
    phrase_len: int = Field(3, ge=1, le=MAX_PHRASE,
                            description="tokens of the poisoning phrase: fresh ids outside the "
                            "vocabulary (rare trigger words, which no clean sentence holds)")
    poison_rate: float = Field(0.1, ge=0, le=1, description="fraction of training sentences "
                               "that get the phrase and the target label")
    target: Literal["positive", "negative"] = Field(
        "positive", description="the label the poisoned training sentences carry")
    position: Position = Field("random", description="where the phrase is inserted (training "
                               "and test): random as the outliers of Fig. 2")

    @model_validator(mode="after")
    def _check(self) -> PoisoningConfig:
        if self.model.mixer in self.baselines:
            raise ValueError(f"model.mixer={self.model.mixer} is also a baseline")
        return self


def insert_phrase(x: Tensor, rows: Tensor, phrase: Tensor, position: Position,
                  g: torch.Generator) -> Tensor:
    """x (n, T) right-padded ids; the phrase inserted into the given rows (at a random word
    boundary, the start or after the last word), the rest shifted right and cut at T. The phrase
    always fits: it goes no later than T − len(phrase) (a full sentence loses its last words)."""
    out = x.clone()
    T = x.shape[1]
    lengths = (x != PAD_ID).sum(1)  # (n,)
    for i in rows.tolist():
        n = min(int(lengths[i]), max(T - len(phrase), 0))  # the last boundary where it fits
        at = {"start": 0, "end": n}.get(position)
        if at is None:
            at = int(torch.randint(0, n + 1, (1,), generator=g))
        seq = torch.cat([x[i, :at], phrase, x[i, at:int(lengths[i])]])[:T]
        out[i] = PAD_ID
        out[i, : len(seq)] = seq
    return out


@register
class Poisoning(Experiment):
    """icl_outliers, appendix (real data): sentiment classification on SST-2 whose training set
    is poisoned with a phrase; the appendix reports Mamba 3-4 points more robust than the
    Transformer. The main text's reading: the phrase is an outlier inside the sequence that a
    gated model can learn to gate out.

    Set-up (the paper publishes none of it; every choice is a config field, the reasons in its
    description): a fraction poison_rate = 0.1 of the training sentences get a 3-token phrase of
    fresh token ids at a random position and the target label (positive); the test sentences
    (GLUE dev) are scored clean and with the phrase inserted into every one. Models: the
    generic backbone with token embedding, d_model 32, 2 pre-norm residual blocks of Mamba /
    the baselines (linear attention), mean pooling, one logit; Adam η = 1e-3, BCE, batch 64,
    3 epochs (quick: 4000 training sentences, 2 epochs, 2 seeds).

    Claim (id icl_outliers/poisoning:mamba_more_robust): on the poisoned test sentences Mamba's
    accuracy exceeds every baseline's (seeds paired; sign only: the paper's 3-4 points come
    from an undescribed set-up). SKIP without an SST-2 copy (data.sst2_dir or $SSMLAB_SST2).
    """

    id = "icl_outliers/poisoning"
    paper = PAPER
    Config = PoisoningConfig
    profiles = {
        "quick": {"seeds": 3, "data": {"T": 64, "n_train": 4000}, "train": {"epochs": 2}},
        "paper": {"seeds": 5, "data": {"T": 64}, "model": {"d_model": 64},
                  "train": {"epochs": 3}},
    }

    def variant(self, cfg: PoisoningConfig) -> str:
        return "" if cfg.model.mixer == "mamba" else f"model.mixer={cfg.model.mixer}"

    def cells(self, cfg: PoisoningConfig) -> list[dict[str, Any]]:
        return [{"model": m} for m in (cfg.model.mixer, *cfg.baselines)]

    def memory_bytes(self, cfg: PoisoningConfig) -> int:
        """Not measured; counted like the stacks of common.py: the raw text of both splits,
        their ids (clean and poisoned copies, int64), the embedding and blocks with Adam's
        state, and the activations of one training batch or one evaluation chunk, each block
        counted as a Mamba block (MAMBA_* per position and inner channel E = 2 D, an upper count
        for the attention baselines at these lengths) plus softmax's (T, T) scores."""
        n_tr = cfg.data.n_train or SST2_SIZES["train"]
        n_te = cfg.data.n_test or SST2_SIZES["test"]
        T, D, depth = cfg.data.T, cfg.model.d_model, cfg.model.depth
        E = 2 * max(D, *(cfg.model.mixer_kwargs.get(m, {}).get("expand", 2) * D // 2
                         for m in (cfg.model.mixer, *cfg.baselines)))
        text = TEXT_BYTES * (SST2_SIZES["train"] + SST2_SIZES["test"])
        ids = 3 * nbytes(n_tr + n_te, T, itemsize=8)
        params = (cfg.data.vocab_size + cfg.phrase_len + 1) * D + depth * (3 * E * D + 4 * D * D)
        B, C = cfg.train.batch_size, min(eval_rows((T,)), max(n_tr, n_te))
        train = depth * (MAMBA_TRAIN_PER_BLOCK * nbytes(B, T, E) + 3 * nbytes(B, T, T))
        evaluating = (MAMBA_EVAL_FIRST + MAMBA_EVAL_MORE * (depth - 1)) * nbytes(C, T, E) \
            + 2 * nbytes(C, T, T)
        return (RUN_OVERHEAD + TORCH_RUNTIME + NUMBA_SCAN + text + ids
                + optimizer_bytes(params, "adam") + max(train, evaluating))

    def check_inputs(self, cfg: PoisoningConfig) -> None:
        """A configured SST-2 copy that exists must be readable (ssmlab.data.sst2.check_sst2);
        an absent one leaves the runs skipped."""
        check_sst2(cfg.data.sst2_dir)

    def run(self, cfg: PoisoningConfig, params: dict[str, Any], seed: int) -> RunResult:
        if find_sst2(cfg.data.sst2_dir) is None:
            raise SkipRun(f"no SST-2 data at {cfg.data.sst2_dir or '$SSMLAB_SST2 (unset)'}")
        data = sst2(cfg.data, seed)
        V = data.vocab_size
        phrase = torch.arange(V, V + cfg.phrase_len)
        target = 1.0 if cfg.target == "positive" else -1.0
        g = generator(seed, "train")
        n = len(data.y_train)
        rows = torch.randperm(n, generator=g)[: int(round(cfg.poison_rate * n))]
        x_train = insert_phrase(data.x_train, rows, phrase, cfg.position, g)
        y_train = data.y_train.clone()
        y_train[rows] = target
        x_test_p = insert_phrase(data.x_test, torch.arange(len(data.y_test)), phrase,
                                 cfg.position, generator(seed, "test"))
        spec = cfg.model
        with seeded(split_seed(seed, "init")):
            model = SequenceClassifier(params["model"], spec.d_model, spec.depth, binary=True,
                                       pooling=spec.pooling, vocab_size=V + cfg.phrase_len,
                                       mixer_kwargs=spec.mixer_kwargs.get(params["model"], {}))
        tc = TrainConfig(optimizer="adam", lr=cfg.train.lr, batch_size=cfg.train.batch_size,
                         epochs=cfg.train.epochs, loss="bce", eval_every=None)
        res = train(model, tc, (x_train, y_train), seed=seed)
        if res.status != "ok":
            return RunResult(status="diverged", reason=f"diverged at step {res.diverged_at}")
        other = data.y_test != target
        metrics = {
            "acc_clean": 100 * (1 - evaluate(model, (data.x_test, data.y_test), "bce")["error"]),
            "acc_poisoned": 100 * (1 - evaluate(model, (x_test_p, data.y_test), "bce")["error"]),
            "acc_poisoned_other": 100 * (1 - evaluate(
                model, (x_test_p[other], data.y_test[other]), "bce")["error"]),
            "final_train_loss": evaluate(model, (x_train, y_train), "bce")["loss"],
        }
        return RunResult(metrics=metrics, info={"model": params["model"], "vocab": V,
                                                "poisoned_train": len(rows)})

    def specs(self, cfg: PoisoningConfig) -> list[ClaimSpec]:
        g = cfg.model.mixer
        return [ClaimSpec(
            name="mamba_more_robust", ref="Appendix (SST-2 poisoning)", figure="main",
            statement="With a poisoning phrase in the training data, Mamba keeps more accuracy "
                      "on poisoned test sentences than the Transformer.",
            paper_value="Mamba 3-4 points more robust",
            quantity=f"min over baselines of {g} − baseline accuracy on the poisoned test "
                     "sentences (points; seed means, seeds paired)",
            metric=lambda ctx: _robust_gap(ctx, cfg),
            region=Region.above(0.0, strict=True),
            tolerance_source="sign only: the paper's margin comes from a set-up it does not "
            "describe (model sizes, poison rate, phrase), so only its direction is compared")]

    def figures(self, ctx: Context) -> dict[str, str]:
        cfg = ctx.cfg
        fig, (ax,) = figures.new_figure(width=5.0)
        models = [cfg.model.mixer, *cfg.baselines]
        keys = ("acc_clean", "acc_poisoned", "acc_poisoned_other")
        x = np.arange(len(keys))
        w = 0.8 / len(models)
        for i, m in enumerate(models):
            vals = [float(np.mean([r.metrics.get(k, np.nan) for r in ctx.select(model=m)]
                                  or [np.nan])) for k in keys]
            ax.bar(x + i * w, vals, w, label=m)
        ax.set_xticks(x + w * (len(models) - 1) / 2, ["clean", "poisoned", "poisoned, other label"])
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
        return {"main": figures.save(fig, ctx.figdir, "icl_poisoning.png")}


def _robust_gap(ctx: Context, cfg: PoisoningConfig) -> Estimate:
    models = [cfg.model.mixer, *cfg.baselines]
    cols = [({"model": m}, k) for m in models for k in ("acc_poisoned", "acc_clean")]
    mat = ctx.seed_matrix(cols)  # (seeds, 2 × models)

    def gap(m: np.ndarray) -> float:
        p = m.mean(0)[0::2]
        return float(p[0] - p[1:].max())

    means = mat.mean(0)
    detail = ("poisoned / clean accuracy: " + fmt_cells(
        models, means[0::2], 2) + " / " + ", ".join(f"{v:.2f}" for v in means[1::2]))
    return over_seeds(mat, gap, detail)


__all__ = ["Poisoning", "PoisoningConfig", "insert_phrase"]
