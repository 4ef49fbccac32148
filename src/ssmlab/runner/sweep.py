"""A sweep: every (cell, seed) of one experiment config, resumable, then the analysis.

    from ssmlab.runner.sweep import run_sweep
    res = run_sweep("builtin/mixers", profile="quick", overrides=["seeds=1"],
                    results="results", executor="serial")
    res.claims          # list[Claim], also stored and shown by the report

Steps: `preflight` (every check that can fail on user input: executor options, the
experiment's input files, the plan, the memory estimate) and, for a remote Dask scheduler, the
connection, all before the store is opened, so a refused run leaves the results directory as it
was; then list the cells; skip every run key already done in the store (ok / diverged; failed
and skipped runs are retried); run the rest on the chosen executor, committing each outcome in
its own transaction as it arrives; then call `Experiment.analyze` on all finished runs of this
config (ok / diverged / skipped; figures into results/figures/<id with / -> __>/<cfg_hash>/) and
store its claims. An exception in `analyze` becomes a FAIL claim carrying the error, the runs
stay stored.

Several sweeps of one config may run at once on one store (two `ssmlab run`, here or on
another machine sharing the store): each leases a run before computing it, claiming a few at a
time as its workers free up, so the sweeps split the work. A run leased by another live sweep
is waited for (polling; progress still reported) and then counted as finished, so every sweep's
analysis covers all runs; a lease whose owner was killed expires (30 s, $SSMLAB_LEASE_SECONDS)
and its run is taken over.
"""

from __future__ import annotations

import inspect
import math
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssmlab.config import canonical_json, config_hash
from ssmlab.errors import UserError
from ssmlab.experiment import Claim, Experiment, ExperimentConfig
from ssmlab.runner import executors
from ssmlab.runner.provenance import sweep_provenance
from ssmlab.runner.registry import get_experiment, resolve_config
from ssmlab.runner.store import (
    DONE_STATUSES,
    FINAL_STATUSES,
    ConfigRow,
    Heartbeat,
    Store,
    StoredRun,
    lease_lifetime,
    lease_owner,
    now_iso,
    run_id_of,
)

SEED_FIELDS = ("seeds", "seed_offset")
CELL_SEEDS_KEY = "_seeds"
ProgressFn = Callable[[int, int, StoredRun | None], None]


def results_dir(results: str | Path | None = None) -> Path:
    """--results DIR, else $SSMLAB_RESULTS, else ./results."""
    return Path(results or os.environ.get("SSMLAB_RESULTS") or "results")


def figdir_for(results: Path, experiment: str, cfg_hash: str) -> Path:
    return results / "figures" / experiment.replace("/", "__") / cfg_hash


def config_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def cfg_key_of(cfg: ExperimentConfig) -> str:
    """Hash of the config without seed fields: runs are shared across seed counts."""
    d = {k: v for k, v in config_dict(cfg).items() if k not in SEED_FIELDS}
    return config_hash(d)


def cell_hash_of(cfg: ExperimentConfig, params: dict[str, Any]) -> str:
    d = {k: v for k, v in config_dict(cfg).items() if k not in SEED_FIELDS}
    return config_hash({"config": d, "params": params})


def seeds_of(cfg: ExperimentConfig) -> list[int]:
    return list(range(cfg.seed_offset, cfg.seed_offset + cfg.seeds))


@dataclass
class PlannedRun:
    run_id: str
    cell_hash: str
    params: dict[str, Any]
    seed: int


def plan(exp: Experiment, cfg: ExperimentConfig) -> list[PlannedRun]:
    """All runs of a config, in grid order then seed order."""
    import json

    cells = exp.cells(cfg)
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise TypeError(f"{type(exp).__name__}.cells must return a list of dicts")
    out, seen = [], set()
    for params in cells:
        params = json.loads(canonical_json(params))  # JSON-able and canonical
        # A cell may run fewer seeds than the config's (e.g. a cheap side sweep): the reserved
        # key "_seeds" caps them; it is not part of the cell's identity, so changing the cap
        # keeps the runs already stored.
        cap = params.pop(CELL_SEEDS_KEY, None)
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise ValueError(f"{type(exp).__name__}.cells: {CELL_SEEDS_KEY} must be an int >= 1")
        h = cell_hash_of(cfg, params)
        if h in seen:
            raise ValueError(f"{type(exp).__name__}.cells returned a duplicate cell {params}")
        seen.add(h)
        for s in seeds_of(cfg)[:cap]:
            out.append(PlannedRun(run_id_of(exp.id, h, s), h, params, s))
    return out


def cell_costs(exp: Experiment, cfg: ExperimentConfig,
               runs: list[PlannedRun]) -> dict[str, float]:
    """cell hash -> `Experiment.cost` of its runs, checked positive and finite."""
    cost = {r.cell_hash: float(exp.cost(cfg, r.params)) for r in runs}
    bad = [c for c in cost.values() if not math.isfinite(c) or c <= 0]
    if bad:
        raise ValueError(f"{type(exp).__name__}.cost must be positive and finite, got {bad[0]}")
    return cost


def dispatch_order(exp: Experiment, cfg: ExperimentConfig,
                   runs: list[PlannedRun]) -> list[PlannedRun]:
    """Runs in the order workers take them: costliest first (`Experiment.cost`), plan order
    among equals (a stable sort). With W workers the last run to start then is a cheap one, so
    the sweep's wall time is close to its total work / W."""
    cost = cell_costs(exp, cfg, runs)
    return sorted(runs, key=lambda r: -cost[r.cell_hash])


def preflight(exp_cls: type[Experiment], cfg: ExperimentConfig, executor: str,
              workers: int | None, scheduler: str | None) -> int:
    """Every check of a sweep that can fail on user input, before any store is opened; returns
    the number of workers. Raises UserError (one line) for:

    - the executor options (`executors.check_executor`), and a remote Dask scheduler that does
      not accept a connection (a quick TCP probe; the sweep connects for real before its first
      write);
    - the experiment's external inputs (`Experiment.check_inputs`: corrupt data files);
    - a grid that cannot be planned (`plan`);
    - the memory estimate (`ssmlab.memory.check_memory`) of the runs that execute at once on
      this machine: 1 for serial, min(workers, number of runs) for local and a `--scheduler
      local` Dask cluster. It is skipped for a remote Dask scheduler: its workers' memory is
      not this machine's, and Dask's own worker memory limits apply there.
    """
    from ssmlab.memory import check_memory

    nworkers = executors.check_executor(executor, workers, scheduler)
    if executor == "dask" and scheduler and scheduler != "local":
        executors.probe_scheduler(scheduler)
    exp = exp_cls()
    exp.check_inputs(cfg)
    n_runs = len(plan(exp, cfg))
    if executor == "serial":
        check_memory(exp_cls.id, exp.memory_bytes(cfg), 1)
    elif executor == "local" or scheduler == "local":
        check_memory(exp_cls.id, exp.memory_bytes(cfg), max(1, min(nworkers, n_runs)))
    return nworkers


@dataclass
class SweepResult:
    experiment: str
    paper: str
    profile: str
    cfg_hash: str
    cfg_key: str
    total: int = 0
    cached: int = 0
    ran: int = 0
    others: int = 0  # runs another sweep (sharing the store) finished while this one ran
    statuses: Counter = field(default_factory=Counter)
    claims: list[Claim] = field(default_factory=list)
    seconds: float = 0.0
    figdir: Path | None = None
    run_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.statuses.get("failed", 0)


def _analysis_failure(exp: type[Experiment], ref: str, measured: str, note: str) -> Claim:
    return Claim(paper=exp.paper, experiment=exp.id, ref=ref,
                 claim="the analysis of the stored runs completes", measured=measured,
                 expected="no error", verdict="FAIL", diagnosis_kind="undiagnosed",
                 diagnosis="the analysis itself failed: a bug, not a finding", note=note[-2000:])


def analyze_config(exp_cls: type[Experiment], cfg: ExperimentConfig, store: Store,
                   run_ids: list[str], figdir: Path) -> list[Claim]:
    """Run `analyze` on the finished runs among `run_ids`; never raises for analysis errors."""
    runs = store.runs(exp_cls.id, run_ids=run_ids)
    done = [r for r in runs if r.status in FINAL_STATUSES]
    failed = [r for r in runs if r.status == "failed"]
    if not done:
        first = failed[0].reason if failed else "no runs stored"
        return [_analysis_failure(exp_cls, "runs", f"0 of {len(run_ids)} runs finished",
                                  f"every run failed; first error: {first}")]
    figdir.mkdir(parents=True, exist_ok=True)
    try:
        claims = exp_cls().analyze(cfg, [r.to_record() for r in done], figdir)
        claims = list(claims or [])
        bad = [c for c in claims if not isinstance(c, Claim)]
        if bad:
            raise TypeError(f"analyze returned {type(bad[0]).__name__}, not Claim")
    except Exception as e:
        return [_analysis_failure(exp_cls, "analysis", f"error: {type(e).__name__}: {e}",
                                  traceback.format_exc())]
    if failed:
        note = f"{len(failed)} of {len(run_ids)} runs failed (retried on the next run); " \
               f"first error: {failed[0].reason}"
        claims = [c.model_copy(update={"note": (c.note + " " if c.note else "") + note})
                  for c in claims]
    return claims


def run_sweep(
    experiment: str | type[Experiment],
    cfg: ExperimentConfig | None = None,
    *,
    profile: str = "quick",
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seeds: int | None = None,
    results: str | Path | None = None,
    store: Store | None = None,
    executor: str = "serial",
    workers: int | None = None,
    scheduler: str | None = None,
    analyze: bool = True,
    progress: ProgressFn | None = None,
    lease_seconds: float | None = None,
) -> SweepResult:
    """Run (or resume) one experiment config and analyse it. See the module docstring.

    `cfg`, when given, is used as is (profile is then only a label); otherwise it is resolved
    from profile / config_file / overrides / seeds. `store` overrides `results`' store (the
    caller keeps ownership); otherwise the store in `results` is opened and closed here, after
    `preflight` and after connecting to a remote Dask scheduler, so that a refused sweep writes
    nothing. `lease_seconds`: lifetime of this sweep's leases (default $SSMLAB_LEASE_SECONDS,
    else 30 s).
    """
    exp_cls = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if cfg is None:
        cfg = resolve_config(exp_cls, profile, config_file, overrides, seeds)
        label = profile + (" (custom)" if config_file or overrides else "")
    else:
        if not isinstance(cfg, exp_cls.Config):
            raise UserError(f"config for {exp_cls.id} must be a {exp_cls.Config.__name__}")
        label = profile
    nworkers = preflight(exp_cls, cfg, executor, workers, scheduler)
    ttl = lease_lifetime(lease_seconds)
    with executors.open_pool(executor, nworkers, scheduler) as pool:
        own = store is None
        st = Store.open(results_dir(results)) if own else store
        assert st is not None
        res_dir = st.folder  # figures live beside the database (--results may name the .db)
        try:
            return _sweep(exp_cls, cfg, label, st, res_dir, pool, executor, nworkers,
                          scheduler, analyze, progress, ttl)
        finally:
            if own:
                st.close()


def _task(exp_cls: type[Experiment], cfg_json: dict[str, Any], r: PlannedRun) -> dict[str, Any]:
    return {"run_id": r.run_id, "experiment": exp_cls.id, "module": exp_cls.__module__,
            "config": cfg_json, "params": r.params, "seed": r.seed, "threads": 1,
            "cell_hash": r.cell_hash}


def _sweep(exp_cls: type[Experiment], cfg: ExperimentConfig, label: str, st: Store,
           res_dir: Path, pool: executors.Pool, executor: str, nworkers: int,
           scheduler: str | None, analyze: bool, progress: ProgressFn | None,
           ttl: float) -> SweepResult:
    t0 = time.perf_counter()
    exp = exp_cls()
    runs = plan(exp, cfg)
    cfg_json = config_dict(cfg)
    out = SweepResult(exp_cls.id, exp_cls.paper, label, config_hash(cfg_json), cfg_key_of(cfg),
                      total=len(runs), run_ids=[r.run_id for r in runs])
    out.figdir = figdir_for(res_dir, exp_cls.id, out.cfg_hash)
    st.put_config(ConfigRow(
        experiment=exp_cls.id, cfg_hash=out.cfg_hash, cfg_key=out.cfg_key, paper=exp_cls.paper,
        profile=label, config=cfg_json, doc=inspect.getdoc(exp_cls) or "",
        run_ids=out.run_ids, figdir=str(out.figdir.relative_to(res_dir)), created=now_iso(),
        analyzed=None,
    ))
    stored = st.run_states(exp_cls.id, out.cfg_key)
    # runs to compute, with the attempts seen now: a run attempted again meanwhile was
    # computed by another sweep sharing the store (see Store.claim)
    waiting: dict[str, PlannedRun] = {}
    seen: dict[str, int] = {}
    for r in dispatch_order(exp, cfg, runs):
        status, attempts = stored.get((r.cell_hash, r.seed), ("", 0))
        if status in DONE_STATUSES:
            out.statuses[status] += 1
        else:
            waiting[r.run_id] = r
            seen[r.run_id] = attempts
    out.cached = len(runs) - len(waiting)
    prov = sweep_provenance(executor, nworkers, scheduler)
    sweep_id = st.start_sweep(exp_cls.id, out.cfg_hash, executor, nworkers, len(runs), out.cached)
    done = out.cached
    if progress:
        progress(done, len(runs), None)
    owner = lease_owner()
    # how often to look again at runs leased by other sweeps (one short write transaction)
    poll = min(0.25, ttl / 6)
    try:
        with Heartbeat(st.path, owner, ttl):
            next_claim = 0.0
            while waiting or pool.busy():
                free = pool.free()
                if waiting and free > 0 and time.monotonic() >= next_claim:
                    c = st.claim(((rid, seen[rid]) for rid in waiting), owner, ttl, free)
                    for rid, status in c.settled.items():  # finished by another sweep
                        del waiting[rid]
                        out.others += 1
                        out.statuses[status] += 1
                        done += 1
                        if progress:
                            progress(done, len(runs), None)
                    for rid in c.claimed:
                        pool.submit(_task(exp_cls, cfg_json, waiting.pop(rid)))
                    # nothing to take: the rest is leased by others; look again in `poll` s
                    next_claim = 0.0 if c.claimed else time.monotonic() + poll
                if pool.busy():
                    arrived = pool.collect(timeout=poll)
                else:
                    time.sleep(max(0.0, min(poll, next_claim - time.monotonic())))
                    continue
                for task, o in arrived:
                    row = StoredRun(
                        run_id=task["run_id"], experiment=exp_cls.id,
                        cell_hash=task["cell_hash"], seed=task["seed"], cfg_key=out.cfg_key,
                        params=task["params"], config=cfg_json, status=o["status"],
                        metrics=o["metrics"], history=o["history"], info=o["info"],
                        reason=o["reason"], error=o["error"], seconds=o["seconds"],
                        started=o["started"], finished=o["finished"],
                        provenance={**prov, **o["provenance"]},
                    )
                    st.put_run(row, owner=owner)
                    out.ran += 1
                    out.statuses[row.status] += 1
                    done += 1
                    if progress:
                        progress(done, len(runs), row)
    finally:
        _release(st, owner)
    if analyze:
        out.claims = analyze_config(exp_cls, cfg, st, out.run_ids, out.figdir)
        st.put_claims(exp_cls.id, out.cfg_hash, out.claims)
    out.seconds = time.perf_counter() - t0
    st.finish_sweep(sweep_id, out.ran, out.failed, out.seconds)
    return out


def _release(st: Store, owner: str) -> None:
    """Drop this sweep's leases on the way out (normal end, exception, Ctrl-C), so that another
    sweep need not wait for them to expire. Must not mask the exception being raised."""
    try:
        st.release(owner)
    except Exception:  # pragma: no cover - the store went away; the leases will expire
        pass
