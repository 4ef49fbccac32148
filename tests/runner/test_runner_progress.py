"""`ssmlab status`: runs done / total per experiment and profile, and the time left priced at
each cell's mean run time so far, or by the experiment's relative cost where a cell has none."""

from __future__ import annotations

import pytest

from ssmlab.cli import main
from ssmlab.runner.progress import sweep_progress
from ssmlab.runner.registry import resolve_config
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import cfg_key_of, plan, run_sweep
from ssmlab.runner.testing import Sleepy


def test_progress_counts_and_prices_the_rest(exps, tmp_path):
    # one seed of the quick profile's two: half the runs, and the runs are keyed without seeds
    run_sweep("builtin/test_sleepy", profile="quick", seeds=1, results=tmp_path,
              executor="serial")
    with Store.open(tmp_path) as st:
        times = {h: t for (h, _), (_, t) in st.run_times(Sleepy.id, _key()).items()}
        p = sweep_progress(st, Sleepy, "quick", workers=2)
        assert (p.total, p.done, p.skipped, p.failed, p.todo) == (12, 6, 0, 0, 6)
        # each missing run (one per cell) costs its cell's time; two workers share them, and
        # the rest takes at least its longest run
        left = max(sum(times.values()) / 2, max(times.values()))
        assert p.seconds_left == pytest.approx(left)
        assert p.seconds_per_run == pytest.approx(sum(times.values()) / 6)
        paper = sweep_progress(st, Sleepy, "paper", workers=2)
        assert (paper.done, paper.total, paper.seconds_left) == (0, 60, None)


def _key() -> str:
    return cfg_key_of(resolve_config(Sleepy, "quick"))


class CostlySleepy(Sleepy):
    """Cell i costs i + 1 (e.g. steps x T): the cells a sweep finishes first are the cheap ones."""

    def cost(self, cfg, params):
        return params["i"] + 1.0


class TimesOnly:
    """A store that holds run times only: seed 0 of cells 0..2 done, 2 s per unit of cost."""

    def __init__(self):
        runs = plan(CostlySleepy(), resolve_config(CostlySleepy, "quick"))
        self.times = {(r.cell_hash, r.seed): ("ok", 2.0 * (r.params["i"] + 1))
                      for r in runs if r.seed == 0 and r.params["i"] < 3}

    def run_times(self, experiment, cfg_key):
        return self.times


@pytest.mark.parametrize(("workers", "left"), [(2, 36.0), (8, 12.0)])
def test_untimed_cells_are_priced_by_their_cost(workers, left):
    # to do: seed 1 of cells 0..2 at their own means 2 + 4 + 6, both seeds of cells 3..5 at
    # 2 s x cost 4, 5, 6: 12 + 2 x 30 = 72 s. Two workers: 36 s; eight: the longest run, 12 s,
    # is more than 72 / 8 (the mean finished run, 4 s, would have said 18 and 4.5)
    p = sweep_progress(TimesOnly(), CostlySleepy, "quick", workers=workers)
    assert (p.done, p.todo, p.seconds_per_run) == (3, 9, 4.0)
    assert p.seconds_left == pytest.approx(left)


def test_status_command(exps, tmp_path, capsys):
    run_sweep("builtin/test_sleepy", profile="quick", seeds=1, results=tmp_path,
              executor="serial")
    with pytest.raises(SystemExit) as e:
        main(["status", "builtin", "--results", str(tmp_path), "-w", "2"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "builtin/test_sleepy" in out and "6 / 12" in out and "0 / 60" in out
    with pytest.raises(SystemExit) as e:
        main(["status", "--results", str(tmp_path / "none")])
    assert e.value.code == 2 and "no results store" in capsys.readouterr().err
