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

Runner-only (registered by `registered_test_experiments(runner=True)` and in subprocesses, not
by default, so that tests walking the builtin/test_* experiments do not see them):

    builtin/test_crashy       cell `crash_cell` kills its worker process with SIGKILL (what the
                              OOM killer does), after the cells listed in `wait_for` have
                              started (marker files in `sync_dir`); the others sleep and return
    builtin/test_data         reads the file named by $SSMLAB_TEST_DATA: its runs are skipped
                              while it is absent, `check_inputs` refuses one that starts with
                              "corrupt", and a run's memory estimate is 1000 bytes
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pydantic import Field

from ssmlab.errors import UserError
from ssmlab.experiment import (
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


class CrashyConfig(ExperimentConfig):
    n_cells: int = Field(4, ge=1, le=100)
    sleep: float = Field(0.5, ge=0, le=30)
    crash_cell: int = Field(-1, description="this cell kills its worker (-1: none)")
    wait_for: list[int] = Field(default_factory=list,
                                description="cells that must have started before the crash")
    sync_dir: str = Field("", description="directory of the 'started' marker files")


class Crashy(Experiment):
    """builtin (test only): one cell kills its worker process (SIGKILL, like the OOM killer).

    It only does so inside a local pool's worker (`worker.IN_POOL_WORKER`); run in the sweep's
    own process it raises instead of killing the test."""

    id = "builtin/test_crashy"
    paper = "builtin"
    Config = CrashyConfig
    profiles = {"quick": {"seeds": 1}, "paper": {"seeds": 1}}

    def cells(self, cfg):
        return [{"i": i} for i in range(cfg.n_cells)]

    def run(self, cfg, params, seed):
        from ssmlab.runner import worker

        i = params["i"]
        if cfg.sync_dir:
            (Path(cfg.sync_dir) / f"started-{i}-{os.getpid()}").touch()
        if i != cfg.crash_cell:
            time.sleep(cfg.sleep)
            return RunResult(metrics={"value": float(i * 10 + seed)})
        if not worker.IN_POOL_WORKER:
            raise RuntimeError("test_crashy kills only pool workers")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                any(Path(cfg.sync_dir).glob(f"started-{j}-*")) for j in cfg.wait_for):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")  # pragma: no cover

    def analyze(self, cfg, runs, figdir):
        return [Claim(paper="builtin", experiment=self.id, ref="Test 4",
                      claim="there are runs", measured=str(len(runs)), expected=">= 1",
                      passed=len(runs) >= 1)]


DATA_ENV = "SSMLAB_TEST_DATA"


class DataConfig(ExperimentConfig):
    n_cells: int = Field(3, ge=1, le=100)


class Data(Experiment):
    """builtin (test only): needs the data file $SSMLAB_TEST_DATA; skipped while it is absent."""

    id = "builtin/test_data"
    paper = "builtin"
    Config = DataConfig
    profiles = {"quick": {"seeds": 1}, "paper": {"seeds": 1}}

    def cells(self, cfg):
        return [{"i": i} for i in range(cfg.n_cells)]

    def memory_bytes(self, cfg):
        return 1000

    def check_inputs(self, cfg):
        path = os.environ.get(DATA_ENV, "")
        if path and Path(path).is_file() and Path(path).read_text().startswith("corrupt"):
            raise UserError(f"test data file {path} is corrupt")

    def run(self, cfg, params, seed):
        path = os.environ.get(DATA_ENV, "")
        if not path or not Path(path).is_file():
            return RunResult(status="skipped", reason=f"no test data at {path!r}")
        return RunResult(metrics={"value": float(len(Path(path).read_text()) + params["i"])})

    def analyze(self, cfg, runs, figdir):
        ok = [r for r in runs if r.status == "ok"]
        return [Claim(paper="builtin", experiment=self.id, ref="Test 5",
                      claim="the data was read", measured=f"{len(ok)} of {len(runs)} runs",
                      expected="all", passed=(len(ok) == len(runs)) if ok else None)]


TEST_EXPERIMENTS: tuple[type[Experiment], ...] = (Sleepy, Flaky, BadAnalysis)
RUNNER_TEST_EXPERIMENTS: tuple[type[Experiment], ...] = (Crashy, Data)


def register_all() -> None:
    for cls in TEST_EXPERIMENTS + RUNNER_TEST_EXPERIMENTS:
        register(cls)


@contextmanager
def registered_test_experiments(runner: bool = False) -> Iterator[dict[str, type[Experiment]]]:
    """Register the test experiments for the duration of a block (with `runner`, the
    runner-only ones too; otherwise those are unregistered for the block)."""
    classes = TEST_EXPERIMENTS + (RUNNER_TEST_EXPERIMENTS if runner else ())
    for c in RUNNER_TEST_EXPERIMENTS:
        REGISTRY.pop(c.id, None)
    for c in classes:
        register(c)
    try:
        yield {c.id: c for c in classes}
    finally:
        for c in TEST_EXPERIMENTS + RUNNER_TEST_EXPERIMENTS:
            REGISTRY.pop(c.id, None)


register_all()  # importing (e.g. as an SSMLAB_PLUGINS module) registers them
