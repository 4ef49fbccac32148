"""Shared pieces of the selectivity experiments: the token-model spec, training, accuracy.

Seeds: the run seed s gives disjoint streams (ssmlab.seeding): "train" draws the training set,
"test" the test set, "init" the model's weights (torch.manual_seed(split_seed(s, "init"))).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.models.selectivity import TokenLM, count_parameters
from ssmlab.seeding import split_seed
from ssmlab.train.trainer import TrainConfig, TrainResult, train

PAPER = "selectivity"
MIXER_LABELS = {"mamba": "Mamba", "mamba2": "Mamba-2", "s4d": "S4D", "mamba_dt": "Mamba-ΔT",
                "s4d_block": "S4D"}


class TrainSpec(StrictModel):
    """Adam on token cross-entropy (labels -100 ignored). Not published: ours."""

    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, ge=1)
    steps: int = Field(300, ge=1)
    grad_clip: float | None = Field(1.0, gt=0)
    n_train: int = Field(2048, ge=1, description="training sequences (a fixed set)")
    n_test: int = Field(256, ge=1, description="test sequences (disjoint seed stream)")

    def train_config(self) -> TrainConfig:
        return TrainConfig(optimizer="adam", lr=self.lr, loss="ce", batch_size=self.batch_size,
                           epochs=10**6, max_steps=self.steps, grad_clip=self.grad_clip,
                           eval_every=max(1, self.steps // 10), converge_error=None)


def block_kwargs(mixer: str, d_state: int, d_conv: int, expand: int, seq_len: int) -> tuple[str, dict[str, Any]]:
    """Registry name and options of one mixer at state size N (the paper's "Mamba architecture
    with different mixers": S4D runs inside the same gated block, `s4d_block`)."""
    if mixer == "mamba":
        return "mamba", dict(d_state=d_state, d_conv=d_conv, expand=expand)
    if mixer == "mamba_dt":
        return "mamba_dt", dict(d_state=d_state, d_conv=d_conv, expand=expand)
    if mixer == "mamba2":
        # headdim 8 so that small widths have several heads; chunks no longer than needed
        return "mamba2", dict(d_state=d_state, d_conv=d_conv, expand=expand, headdim=8,
                              chunk_size=min(64, max(8, seq_len // 2)))
    if mixer == "s4d":
        return "s4d_block", dict(d_state=d_state, d_conv=d_conv, expand=expand)
    raise UserError(f"unknown mixer {mixer!r}; one of mamba, mamba2, s4d, mamba_dt")


def build_lm(mixer: str, vocab: int, d_model: int, d_state: int, seq_len: int, seed: int,
             d_conv: int = 4, expand: int = 2,
             pos_encoding: Literal["learned", "sinusoidal"] | None = None) -> TokenLM:
    name, kw = block_kwargs(mixer, d_state, d_conv, expand, seq_len)
    torch.manual_seed(split_seed(seed, "init"))
    return TokenLM(vocab, d_model, name, mixer_kwargs=kw, pos_encoding=pos_encoding,
                   max_len=max(seq_len, 1))


def fit(model: TokenLM, spec: TrainSpec, inputs: Tensor, labels: Tensor, seed: int) -> TrainResult:
    return train(model, spec.train_config(), (inputs, labels), seed=split_seed(seed, "train"))


@torch.no_grad()
def token_accuracy(model: torch.nn.Module, inputs: Tensor, labels: Tensor, batch: int = 512) -> float:
    """Accuracy over the labelled positions (labels != -100)."""
    model.eval()
    hit = tot = 0
    for i in range(0, inputs.shape[0], batch):
        logits = model(inputs[i:i + batch])
        y = labels[i:i + batch]
        keep = y != -100
        hit += int((logits.argmax(-1)[keep] == y[keep]).sum())
        tot += int(keep.sum())
    return hit / max(tot, 1)


def run_metrics(model: TokenLM, res: TrainResult) -> dict[str, float]:
    m = {"params": float(count_parameters(model)), "steps": float(res.steps),
         "final_train_loss": float(res.history.get("train_loss", [float("nan")])[-1])}
    return m


def failed_note(runs: list, what: str = "") -> str:
    bad = [r for r in runs if r.status != "ok"]
    if not bad:
        return ""
    return f"{len(bad)} run(s) {what}not ok: " + "; ".join(f"{r.params} seed {r.seed}: {r.status} {r.reason}"
                                                      for r in bad[:3])
