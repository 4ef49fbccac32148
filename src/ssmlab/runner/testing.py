"""Tiny experiments for testing the machinery (runner, store, report, CLI), not science.

Importing this module registers them; subprocesses get them with
SSMLAB_PLUGINS=ssmlab.runner.testing. In a test process, use the context manager
`registered_test_experiments()` (registers, then removes them, so that they do not leak into
other tests that walk the registry).

    builtin/test_sleepy       sleeps `sleep` s, returns numbers that depend on (params, seed) and
                              on the global torch RNG (seeded by the runner), so resume / executor
                              tests can compare tables exactly
    builtin/test_flaky        odd cells raise while the env var FLAKY_FAIL is set (retry tests);
                              cell 0 returns status "diverged"
    builtin/test_badanalysis  its analysis raises
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import Field

from ssmlab.experiments.base import (
    REGISTRY,
    Claim,
    Experiment,
    ExperimentConfig,
    RunRecord,
    RunResult,
    register,
)


class SleepyConfig(ExperimentConfig):
    n_cells: int = Field(6, ge=1, le=100)
    sleep: float = Field(0.0, ge=0, le=10)


class Sleepy(Experiment):
    """builtin (test only): sleep and return deterministic numbers; claim: total is positive."""

    id = "builtin/test_sleepy"
    paper = "builtin"
    Config = SleepyConfig
    profiles = {"quick": {"n_cells": 6, "seeds": 2}, "paper": {"n_cells": 20, "seeds": 3}}

    def cells(self, cfg):
        return [{"i": i} for i in range(cfg.n_cells)]

    def run(self, cfg, params, seed):
        time.sleep(cfg.sleep)
        noise = float(torch.rand(()))  # global RNG: seeded by the runner per (seed)
        return RunResult(metrics={"value": params["i"] * 10 + seed, "noise": noise},
                         history={"curve": [params["i"], seed, noise]})

    def analyze(self, cfg, runs: list[RunRecord], figdir: Path):
        total = sum(r.metrics["value"] for r in runs)
        return [Claim(paper="builtin", experiment=self.id, ref="Test 1",
                      claim="the values sum to a positive number", measured=f"{total}",
                      expected="> 0", passed=total > 0, value=float(total))]


class FlakyConfig(ExperimentConfig):
    n_cells: int = Field(4, ge=1)


class Flaky(Experiment):
    """builtin (test only): odd cells raise while the env var FLAKY_FAIL is set."""

    id = "builtin/test_flaky"
    paper = "builtin"
    Config = FlakyConfig
    profiles = {"quick": {"seeds": 1}, "paper": {"seeds": 1}}

    def cells(self, cfg):
        return [{"i": i} for i in range(cfg.n_cells)]

    def run(self, cfg, params, seed):
        if params["i"] % 2 and os.environ.get("FLAKY_FAIL"):
            raise RuntimeError(f"flaky cell {params['i']}")
        if params["i"] == 0:
            return RunResult(status="diverged", metrics={"v": float("nan")})
        return RunResult(metrics={"v": float(params["i"])})

    def analyze(self, cfg, runs, figdir):
        return [Claim(paper="builtin", experiment=self.id, ref="Test 2",
                      claim="there are runs", measured=str(len(runs)), expected=">= 1",
                      passed=len(runs) >= 1)]


class BadAnalysis(Experiment):
    """builtin (test only): its analysis raises."""

    id = "builtin/test_badanalysis"
    paper = "builtin"
    Config = ExperimentConfig
    profiles = {"quick": {"seeds": 1}, "paper": {"seeds": 1}}

    def run(self, cfg, params, seed):
        return RunResult(metrics={"x": 1.0})

    def analyze(self, cfg, runs, figdir):
        raise ZeroDivisionError("analysis blew up")


TEST_EXPERIMENTS: tuple[type[Experiment], ...] = (Sleepy, Flaky, BadAnalysis)


def register_all() -> None:
    for cls in TEST_EXPERIMENTS:
        register(cls)


@contextmanager
def registered_test_experiments() -> Iterator[dict[str, type[Experiment]]]:
    """Register the test experiments for the duration of a block."""
    register_all()
    try:
        yield {c.id: c for c in TEST_EXPERIMENTS}
    finally:
        for c in TEST_EXPERIMENTS:
            REGISTRY.pop(c.id, None)


register_all()  # importing (e.g. as an SSMLAB_PLUGINS module) registers them
