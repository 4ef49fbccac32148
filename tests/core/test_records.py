"""The records every paper shares: the note on runs that are not ok, SkipRun, the seeding idiom."""

from __future__ import annotations

import torch

from ssmlab.records import RunRecord, RunResult, SkipRun, not_ok_note
from ssmlab.runner.testing import Sleepy, registered_test_experiments
from ssmlab.runner.worker import execute
from ssmlab.seeding import seeded


def rec(status: str, model: str = "mamba", reason: str = "") -> RunRecord:
    return RunRecord("x/y", "h", {"model": model}, 0, status, {}, {}, {}, reason=reason)


def test_not_ok_note_counts_every_status_but_ok():
    assert not_ok_note([rec("ok"), rec("ok")]) == ""
    runs = [rec("ok"), rec("diverged", reason="loss nan"), rec("skipped", reason="no data")]
    assert not_ok_note(runs) == "2 of 3 runs not ok: 1 diverged, 1 skipped (loss nan)"
    by = not_ok_note(runs + [rec("diverged", "s4d")], key="model")
    assert by.startswith("mamba: 2 of 3 runs not ok") and "s4d: 1 of 1 runs not ok" in by


def test_skip_run_is_stored_as_skipped(monkeypatch):
    def run(self, cfg, params, seed):
        raise SkipRun("no data at /nowhere")

    with registered_test_experiments():
        monkeypatch.setattr(Sleepy, "run", run)
        out = execute({"experiment": "builtin/test_sleepy", "module": Sleepy.__module__,
                       "config": {}, "params": {}, "seed": 0})
    assert (out["status"], out["reason"], out["error"]) == ("skipped", "no data at /nowhere", "")
    assert RunResult().status == "ok"


def test_seeded_restores_the_global_rng():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with seeded(123):
        a = torch.rand(2)
    with seeded(123):
        b = torch.rand(2)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), expected)
