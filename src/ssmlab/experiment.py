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

        def specs(self, cfg):                  # the claims, checked by one evaluator
            return [ClaimSpec(name="gap_slope", ref="Fig. 1 / Thm 1", ...)]

        def figures(self, ctx):                # optional: figures from ctx.runs
            return {"main": figures.save(fig, ctx.figdir, "convergence.png")}

Each (cell, seed) pair is one run keyed by (experiment id, config hash of cfg + params, seed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from ssmlab.claims.spec import ClaimSpec, Context, evaluate_all
from ssmlab.config import StrictModel
from ssmlab.records import Claim, RunRecord, RunResult, Status

__all__ = ["BUILTIN_PAPERS", "MAX_SEEDS", "REGISTRY", "Claim", "Experiment", "ExperimentConfig",
           "RunRecord", "RunResult", "Status", "register"]

# the papers shipped in ssmlab.papers, in report order; more join through entry points
BUILTIN_PAPERS = ("filtering", "icl_outliers", "generalization", "selectivity", "builtin")
MAX_SEEDS = 1000  # per cell; a sweep's runs are cells × seeds


class ExperimentConfig(StrictModel):
    """Fields every experiment config has; subclasses add their own (grids, sizes, training)."""

    seeds: int = Field(3, ge=1, le=MAX_SEEDS, description="number of seeds per grid cell")
    seed_offset: int = Field(0, ge=0, le=2**31 - 1,
                             description="first seed; seeds are offset..offset+seeds-1")


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

    def cost(self, cfg: Any, params: dict[str, Any]) -> float:
        """Relative compute cost of one run of cell `params` (any positive scale; default 1:
        all alike). The runner hands out the costliest runs first (longest-processing-time
        order), so that a long run does not start last and leave the other workers idle at the
        end of a sweep, and `ssmlab status` prices a run of a cell not yet timed by it. Only the
        order and that estimate depend on it, never a result."""
        return 1.0

    def check_inputs(self, cfg: Any) -> None:
        """Pre-flight check of external inputs (data files), run in the parent process before
        anything is stored: raise `UserError` naming a corrupt or unreadable file. Absent data is
        not an error here: its runs are stored as skipped with the reason (and retried later)."""
        return None

    @abstractmethod
    def run(self, cfg: Any, params: dict[str, Any], seed: int) -> RunResult:
        """One run. Pure in (cfg, params, seed); sets its own torch seeds; one thread."""

    def specs(self, cfg: Any) -> list[ClaimSpec]:
        """The claims this experiment checks (ssmlab.claims.ClaimSpec), for this config. The
        default `analyze` evaluates them on the stored runs."""
        return []

    def variant(self, cfg: Any) -> str:
        """'' when cfg runs the paper's own set-up; otherwise what differs, e.g.
        'model.mixer=gla' for a stack experiment run with another mixer. The report shows a
        variant's claims apart and never counts them among the paper's verdicts."""
        return ""

    def figures(self, ctx: Context) -> dict[str, str]:
        """Write this experiment's figures into ctx.figdir from ctx.runs; return key -> file
        name (a spec's `figure` names a key). Default: none."""
        return {}

    def analyze(self, cfg: Any, runs: list[RunRecord], figdir: Path) -> list[Claim]:
        """Turn all runs of this config into figures (written into figdir) and claims.

        Default: `figures`, then every spec of `specs(cfg)` through the one evaluator
        (ssmlab.claims.evaluate_all). Override only for what specs cannot say.

        `runs` holds every finished run (status ok, diverged or skipped) of the config's cells
        and seeds; failed runs are left out (the runner retries them on the next invocation
        and names them in the claims' notes). figdir is results/figures/<id with / -> __>/
        <cfg_hash>/; return file names inside it in `Claim.figure`. An exception here is
        stored as a FAIL claim carrying the error; the runs are kept."""
        ctx = Context(cfg, runs, figdir)
        if ctx.ok:
            ctx.figures = self.figures(ctx)
        return evaluate_all(self.specs(cfg), ctx, self.paper, self.id, self.variant(cfg))


REGISTRY: dict[str, type[Experiment]] = {}


def register(cls: type[Experiment]) -> type[Experiment]:
    if not cls.paper.isidentifier():
        raise ValueError(f"{cls.__name__}: paper id {cls.paper!r} must be a Python identifier")
    if not cls.id.startswith(cls.paper + "/"):
        raise ValueError(f"{cls.__name__}: id {cls.id!r} must start with '{cls.paper}/'")
    if cls.id in REGISTRY and REGISTRY[cls.id] is not cls:
        raise ValueError(f"duplicate experiment id {cls.id!r}")
    missing = {"quick", "paper"} - set(cls.profiles)
    if missing:
        raise ValueError(f"{cls.__name__}: profiles {sorted(missing)} missing")
    REGISTRY[cls.id] = cls
    return cls
