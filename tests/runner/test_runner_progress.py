"""`ssmlab status`: runs done / total per experiment and profile, and the time left priced at
each cell's mean run time so far."""

from __future__ import annotations

import pytest

from ssmlab.cli import main
from ssmlab.runner.progress import sweep_progress
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep
from ssmlab.runner.testing import Sleepy


def test_progress_counts_and_prices_the_rest(exps, tmp_path):
    # one seed of the quick profile's two: half the runs, and the runs are keyed without seeds
    run_sweep("builtin/test_sleepy", profile="quick", seeds=1, results=tmp_path,
              executor="serial")
    with Store.open(tmp_path) as st:
        times = {h: t for (h, _), (_, t) in st.run_times(Sleepy.id, _key()).items()}
        p = sweep_progress(st, Sleepy, "quick", workers=2)
        assert (p.total, p.done, p.skipped, p.failed, p.todo) == (12, 6, 0, 0, 6)
        # each missing run (one per cell) costs its cell's time; two workers share them
        assert p.seconds_left == pytest.approx(sum(times.values()) / 2)
        assert p.seconds_per_run == pytest.approx(sum(times.values()) / 6)
        paper = sweep_progress(st, Sleepy, "paper", workers=2)
        assert (paper.done, paper.total, paper.seconds_left) == (0, 60, None)


def _key() -> str:
    from ssmlab.runner.registry import resolve_config
    from ssmlab.runner.sweep import cfg_key_of

    return cfg_key_of(resolve_config(Sleepy, "quick"))


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
