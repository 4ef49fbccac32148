"""How far a sweep has got, and how long the rest will take: `ssmlab status`.

For one experiment at one profile: the planned runs (`sweep.plan`), which of them the store
holds done (ok, diverged: never computed again), skipped (absent data: retried once it is there)
or failed (retried by the next run), and an estimate of the time left for the rest. The estimate
prices each run still to do at the mean time of the finished runs of its own grid cell (cells
differ by orders of magnitude: L = 16 against L = 256); a run whose cell has none yet is priced
by the experiment's relative cost (`Experiment.cost`) times the seconds per unit of cost of the
finished runs, so that the cheap cells a sweep happens to finish first do not make its costly
ones look cheap (with the default cost of 1 this is the mean run time). The time left is the
larger of the total over the workers that run at once and the longest single run still to do
(a run is not split over workers): both are lower bounds of the time the rest takes. No
finished run: no estimate.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from ssmlab.experiment import Experiment
from ssmlab.runner.registry import resolve_config
from ssmlab.runner.store import DONE_STATUSES, Store
from ssmlab.runner.sweep import cell_costs, cfg_key_of, plan


@dataclass
class SweepProgress:
    experiment: str
    profile: str
    total: int
    done: int  # ok or diverged
    skipped: int  # absent data; retried by the next run
    failed: int  # retried by the next run
    seconds_per_run: float | None  # mean over the finished runs
    seconds_left: float | None  # for the runs not finished, with `workers` at once

    @property
    def todo(self) -> int:
        return self.total - self.done


def sweep_progress(store: Store, cls: type[Experiment], profile: str,
                   workers: int) -> SweepProgress:
    cfg = resolve_config(cls, profile)
    exp = cls()
    runs = plan(exp, cfg)
    stored = store.run_times(cls.id, cfg_key_of(cfg))
    cost = cell_costs(exp, cfg, runs)
    finished: dict[str, list[float]] = {}
    todo: list[str] = []  # cell hash of each run still to do
    done = skipped = failed = 0
    for r in runs:
        status, seconds = stored.get((r.cell_hash, r.seed), ("", 0.0))
        if status in DONE_STATUSES:
            done += 1
            finished.setdefault(r.cell_hash, []).append(seconds)
        else:
            todo.append(r.cell_hash)
        skipped += status == "skipped"
        failed += status == "failed"
    every = [t for ts in finished.values() for t in ts]
    per_run = statistics.fmean(every) if every else None
    left = None
    if per_run is not None:
        per_cost = sum(every) / sum(cost[h] * len(ts) for h, ts in finished.items())
        prices = [statistics.fmean(finished[h]) if h in finished else per_cost * cost[h]
                  for h in todo]
        left = max(sum(prices) / max(1, min(workers, len(todo))), max(prices, default=0.0))
    return SweepProgress(cls.id, profile, len(runs), done, skipped, failed, per_run, left)
