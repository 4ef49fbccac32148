"""What an experiment is: a strict config, profiles, a grid of cells, a pure run, an analysis.

The runner (ssmlab.runner) owns everything else: seeds, the results store, resume, executors
(local pool or Dask), figures directory, the report. An experiment never touches the store.

    class MajorityGap(Experiment):
        '''filtering, Fig. 1 / Thm 1: steps to converge scale as (α_r - α_c)^-2.'''
        id = "filtering/convergence"
        paper = "filtering"
        Config = MajorityGapConfig            # subclass of ExperimentConfig
        profiles = {"quick": {...}, "paper": {...}}

        def cells(self, cfg):                  # one cell per grid point
            return [{"gap": g} for g in cfg.gaps]

        def run(self, cfg, params, seed):      # runs in a worker, pure in (cfg, params, seed)
            ...
            return RunResult(metrics={"steps": 120.0}, history={"cos_plus": [...]})

        def analyze(self, cfg, runs, figdir):  # all finished runs of this config
            ...
            return [Claim(...)]

Each (cell, seed) pair is one run keyed by (experiment id, config hash of cfg + params, seed).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ssmlab.config import StrictModel

PAPERS = ("filtering", "icl_outliers", "generalization", "selectivity", "builtin")
Status = Literal["ok", "diverged", "skipped", "failed"]
MAX_SEEDS = 1000  # per cell; a sweep's runs are cells × seeds


class ExperimentConfig(StrictModel):
    """Fields every experiment config has; subclasses add their own (grids, sizes, training)."""

    seeds: int = Field(3, ge=1, le=MAX_SEEDS, description="number of seeds per grid cell")
    seed_offset: int = Field(0, ge=0, le=2**31 - 1,
                             description="first seed; seeds are offset..offset+seeds-1")


@dataclass
class RunResult:
    """What one run returns. metrics: scalars; history: lists (per step / per epoch);
    info: small JSON-able extras (slice metadata, shapes); status 'skipped' carries a reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    status: Status = "ok"
    reason: str = ""


@dataclass
class RunRecord:
    """A stored run as the analysis sees it. config_hash is the hash of the config without
    its seed fields (runs are shared across seed counts; see docs/architecture.md)."""

    experiment: str
    config_hash: str
    params: dict[str, Any]
    seed: int
    status: Status
    metrics: dict[str, float]
    history: dict[str, list]
    info: dict[str, Any]
    seconds: float = 0.0
    reason: str = ""


class Claim(StrictModel):
    """A claim is data: what the paper says, what we measured, the tolerance, and the verdict.

    passed=None means the claim could not be checked (e.g. skipped: no IMDb data at PATH)."""

    paper: str
    experiment: str
    ref: str = Field(description="figure / table / theorem, e.g. 'Fig. 2', 'Thm 1'")
    claim: str = Field(description="the paper's statement, in one sentence")
    measured: str = Field(description="our number(s), formatted, e.g. 'slope -1.93 ± 0.12'")
    expected: str = Field(description="the paper's number or the tolerance, e.g. '-2 ± 0.5'")
    passed: bool | None
    value: float | None = None
    figure: str | None = Field(None, description="figure file name inside figdir")
    note: str = Field("", description="explanation, especially for FAIL")

    @field_validator("value", mode="before")
    @classmethod
    def _finite_or_none(cls, v: Any) -> Any:
        # a diverged run measures NaN / inf: there is no number to store, the text says why
        return None if isinstance(v, float) and not math.isfinite(v) else v

    @property
    def verdict(self) -> str:
        return "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")


class Experiment(ABC):
    """Subclass, set the class attributes, implement cells/run/analyze, decorate with @register.

    The class docstring must name the paper, the figure/table and the claim it reproduces, and
    every hyper-parameter choice the paper left open (with the default used)."""

    id: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type[ExperimentConfig]]
    profiles: ClassVar[dict[str, dict[str, Any]]] = {"quick": {}, "paper": {}}

    def cells(self, cfg: Any) -> list[dict[str, Any]]:
        """Grid points (JSON-able dicts). Default: a single cell.

        A cell may carry the reserved key "_seeds": n to run only the first n of the config's
        seeds (capped by `seeds`); the runner removes it before hashing and calling `run`."""
        return [{}]

    def memory_bytes(self, cfg: Any) -> int | None:
        """Estimated peak memory of one run, in bytes: its data tensors, parameters, the
        activations kept for the backward pass and the optimiser state (`ssmlab.memory` has the
        helpers). None when not estimated. Before anything runs or is stored, the runner refuses
        a config whose estimate times the concurrent workers exceeds the machine's memory."""
        return None

    def check_inputs(self, cfg: Any) -> None:
        """Pre-flight check of external inputs (data files), run in the parent process before
        anything is stored: raise `UserError` naming a corrupt or unreadable file. Absent data is
        not an error here: its runs are stored as skipped with the reason (and retried later)."""
        return None

    @abstractmethod
    def run(self, cfg: Any, params: dict[str, Any], seed: int) -> RunResult:
        """One run. Pure in (cfg, params, seed); sets its own torch seeds; one thread."""

    @abstractmethod
    def analyze(self, cfg: Any, runs: list[RunRecord], figdir: Path) -> list[Claim]:
        """Turn all runs of this config into figures (written into figdir) and claims.

        `runs` holds every finished run (status ok, diverged or skipped) of the config's cells
        and seeds; failed runs are left out (the runner retries them on the next invocation
        and names them in the claims' notes). figdir is results/figures/<id with / -> __>/
        <cfg_hash>/; return file names inside it in `Claim.figure`. An exception here is
        stored as a FAIL claim carrying the error; the runs are kept."""


REGISTRY: dict[str, type[Experiment]] = {}


def register(cls: type[Experiment]) -> type[Experiment]:
    if cls.paper not in PAPERS:
        raise ValueError(f"{cls.__name__}: unknown paper {cls.paper!r}; one of {PAPERS}")
    if not cls.id.startswith(cls.paper + "/"):
        raise ValueError(f"{cls.__name__}: id {cls.id!r} must start with '{cls.paper}/'")
    if cls.id in REGISTRY and REGISTRY[cls.id] is not cls:
        raise ValueError(f"duplicate experiment id {cls.id!r}")
    missing = {"quick", "paper"} - set(cls.profiles)
    if missing:
        raise ValueError(f"{cls.__name__}: profiles {sorted(missing)} missing")
    REGISTRY[cls.id] = cls
    return cls
