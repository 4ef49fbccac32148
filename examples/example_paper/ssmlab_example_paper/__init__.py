"""Paper `example`: a one-experiment paper package living outside ssmlab.

Claim (a textbook property, standing in for a paper's): an S4D layer with A < 0 forgets, so its
implied attention |M_{t,s}| averaged over channels and positions is smaller at distance t - s =
`far` than at distance `near`. Importing this package registers `example/decay`.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator

from ssmlab.claims import ClaimSpec, Context, Region, mean_ci
from ssmlab.experiment import Experiment, ExperimentConfig, RunResult, register
from ssmlab.layers import build_mixer
from ssmlab.seeding import generator, split_seed


class DecayConfig(ExperimentConfig):
    """Layer width and length, and the two distances compared."""

    d_model: int = Field(8, ge=1, le=256)
    length: int = Field(32, ge=2, le=1024)
    near: int = Field(1, ge=0, le=1023)
    far: int = Field(16, ge=1, le=1023)

    @model_validator(mode="after")
    def _distances(self) -> DecayConfig:
        if not self.near < self.far < self.length:
            raise ValueError(f"need near < far < length, got {self.near}, {self.far}, "
                             f"{self.length}")
        return self


@register
class Decay(Experiment):
    """example, Claim 1: S4D's implied attention decays with distance (mean |M| at `far` <
    mean |M| at `near`)."""

    id = "example/decay"
    paper = "example"
    Config = DecayConfig
    profiles = {"quick": {"seeds": 2}, "paper": {"seeds": 5, "d_model": 32, "length": 128}}

    def cells(self, cfg: DecayConfig) -> list[dict[str, Any]]:
        return [{}]

    def run(self, cfg: DecayConfig, params: dict[str, Any], seed: int) -> RunResult:
        torch.manual_seed(split_seed(seed, "init"))
        layer = build_mixer("s4d", d_model=cfg.d_model)
        g = generator(seed, "test")
        x = torch.randn(1, cfg.length, cfg.d_model, generator=g)
        with torch.no_grad():
            M = layer.attention_matrix(x).abs()  # (1, H, L, L)
        near = M.diagonal(-cfg.near, dim1=-2, dim2=-1).mean().item()
        far = M.diagonal(-cfg.far, dim1=-2, dim2=-1).mean().item()
        return RunResult(metrics={"near": near, "far": far})

    def specs(self, cfg: DecayConfig) -> list[ClaimSpec]:
        def ratio(ctx: Context):  # per seed far / near, mean over seeds with its interval
            near, far = ctx.values("near"), ctx.values("far")
            return mean_ci([f / n for f, n in zip(far, near, strict=True)])

        return [ClaimSpec(
            name="decay", ref="Claim 1", statement="S4D's implied attention decays with distance",
            quantity=f"mean|M| at distance {cfg.far} / at distance {cfg.near}", metric=ratio,
            region=Region.below(1.0, strict=True),
            tolerance_source="the claim itself: decay means a ratio below 1")]
