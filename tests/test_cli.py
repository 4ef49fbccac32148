"""The CLI: one-line errors with exit code 2 for bad input (nothing stored lost), and the
commands list / run / show / export / report / reproduce working together."""

from __future__ import annotations

import hashlib
import json

import pytest

from ssmlab.cli import main
from ssmlab.runner.store import Store
from ssmlab.runner.testing import registered_test_experiments


@pytest.fixture(autouse=True)
def _exps():
    with registered_test_experiments():
        yield


def cli(*args: str) -> int:
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: ")
    return err


def snapshot(results) -> dict:
    with Store.open(results, create=False) as st:
        return {r.run_id: (r.status, r.metrics, r.finished) for r in st.runs()}


@pytest.fixture
def stored(tmp_path, capsys):
    assert cli("run", "builtin/test_sleepy", "-e", "serial", "--results", str(tmp_path)) == 0
    capsys.readouterr()
    return tmp_path


@pytest.mark.parametrize("args, needle", [
    (["run", "builtin/nope"], "unknown experiment 'builtin/nope'; known experiments:"),
    (["run", "builtin/test_sleepy", "--set", "bogus=1"],
     "unknown config key 'bogus'; allowed keys: n_cells, seed_offset, seeds, sleep"),
    (["run", "builtin/test_sleepy", "--set", "sleep=-1"], "invalid config value for 'sleep'"),
    (["run", "builtin/test_sleepy", "--seeds", "0"], "--seeds must be in 1..1000"),
    (["run", "builtin/test_sleepy", "--profile", "huge"], "unknown profile 'huge'"),
    (["run", "builtin/test_sleepy", "--executor", "spark"], "unknown executor 'spark'"),
    (["run", "builtin/test_sleepy", "--bogus"], "No such option: --bogus"),
    (["run", "builtin/mixers", "--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
    (["reproduce", "nopaper"], "unknown paper 'nopaper'"),
    (["show", "ffffff"], "no run with id 'ffffff'"),
    (["export", "--format", "xlsx"], "unknown export format 'xlsx'"),
    (["claims", "nopaper"], "unknown paper 'nopaper'"),
], ids=["experiment", "key", "range", "seeds", "profile", "executor", "option", "nested-key",
        "paper", "run-id", "format", "claims-paper"])
def test_bad_input_exits_2_with_one_line_and_keeps_the_store(stored, capsys, args, needle):
    before = snapshot(stored)
    assert cli(*args, "--results", str(stored)) == 2
    assert needle in one_line_error(capsys)
    assert snapshot(stored) == before


@pytest.mark.parametrize("command", [["run", "builtin/test_sleepy"], ["report"], ["show", "ab"],
                                     ["export"], ["reproduce", "builtin"], ["claims", "--json"]])
def test_corrupt_store_exits_2_and_is_left_untouched(tmp_path, capsys, command):
    db = tmp_path / "ssmlab.db"
    db.write_bytes(bytes(range(256)) * 40)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    assert cli(*command, "--results", str(tmp_path)) == 2
    assert "is not a valid ssmlab store" in one_line_error(capsys)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssmlab.db"]


@pytest.mark.parametrize("command", [["report"], ["show", "ab"], ["export"], ["claims"]])
def test_missing_store_exits_2(tmp_path, capsys, command):
    assert cli(*command, "--results", str(tmp_path / "none")) == 2
    assert "no results store" in one_line_error(capsys)
    assert not (tmp_path / "none").exists()


def test_results_env_var(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSMLAB_RESULTS", str(tmp_path / "env"))
    assert cli("run", "builtin/test_flaky", "-e", "serial", "-q") == 0
    assert (tmp_path / "env" / "ssmlab.db").is_file()


def test_run_show_export_report(stored, capsys, tmp_path):
    assert cli("run", "builtin/test_sleepy", "-e", "serial", "--results", str(stored)) == 0
    out = capsys.readouterr().out
    assert "12 runs (12 reused, 0 ran; ok 12)" in out and "PASS" in out

    with Store.open(stored) as st:
        run = st.runs("builtin/test_sleepy")[3]
    assert cli("show", run.run_id[:10], "--results", str(stored)) == 0
    out = capsys.readouterr().out
    assert run.run_id in out and "metric value" in out and "provenance torch" in out
    assert cli("show", run.run_id[:8], "--json", "--results", str(stored)) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == run.metrics

    csv = tmp_path / "runs.csv"
    assert cli("export", "--format", "csv", "--out", str(csv), "--results", str(stored)) == 0
    assert csv.read_text().count("\n") == 13

    assert cli("report", "--results", str(stored)) == 0
    md = (stored / "report" / "report.md").read_text()
    assert "| builtin | builtin/test_sleepy | Test 1 |" in md and "| PASS |" in md
    assert (stored / "report" / "index.html").is_file()


def test_reproduce_reports_every_paper_and_exits_0_on_fail(tmp_path, capsys, monkeypatch):
    import ssmlab.runner.registry as registry
    from ssmlab.experiment import REGISTRY

    def only_test_experiments(papers=None):
        papers = papers or ["filtering", "builtin"]
        return {p: [REGISTRY[k] for k in sorted(REGISTRY)
                    if k.startswith("builtin/test_") and REGISTRY[k].paper == p] for p in papers}

    monkeypatch.setattr(registry, "experiments_of", only_test_experiments)
    assert cli("reproduce", "-e", "serial", "-q", "--results", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "no experiments yet for filtering" in out
    assert "FAIL" in out and "PASS" in out  # test_badanalysis fails, the others pass
    md = (tmp_path / "report" / "report.md").read_text()
    assert "note: no experiments yet for filtering" in md
    verdicts = [line.rsplit("|", 2)[-2].strip() for line in md.splitlines()
                if line.startswith("| builtin | builtin/")]
    assert sorted(verdicts) == ["FAIL", "PASS", "PASS"]


def test_reproduce_continues_after_a_crashed_experiment(tmp_path, capsys, monkeypatch):
    import ssmlab.runner.registry as registry
    from ssmlab.experiment import REGISTRY
    from ssmlab.runner.testing import Sleepy

    def broken_cells(self, cfg):
        raise RuntimeError("cells exploded")

    monkeypatch.setattr(Sleepy, "cells", broken_cells)
    monkeypatch.setattr(registry, "experiments_of", lambda papers=None: {
        "builtin": [REGISTRY["builtin/test_sleepy"], REGISTRY["builtin/test_flaky"]]})
    assert cli("reproduce", "-e", "serial", "-q", "--results", str(tmp_path)) == 1
    captured = capsys.readouterr()
    assert "builtin/test_sleepy crashed: RuntimeError: cells exploded" in captured.err
    assert "builtin/test_flaky" in captured.out  # the next experiment still ran
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| builtin | builtin/test_flaky |" in md and "cells exploded" in md


def test_reproduce_with_reference_shows_the_shipped_paper_verdicts(tmp_path, capsys,
                                                                   monkeypatch):
    """`make reproduce` from a fresh clone: the quick profile runs, the committed paper claims
    (docs/results/paper/claims.jsonl) fill the paper column, marked as shipped."""
    import sys
    from pathlib import Path

    import ssmlab.runner.registry as registry
    from ssmlab.experiment import REGISTRY

    sys.path.insert(0, str(Path(__file__).parent / "report"))
    from reportkit import SHIPPED_DATE, reference_file

    monkeypatch.setattr(registry, "experiments_of", lambda papers=None: {
        "builtin": [REGISTRY["builtin/test_sleepy"]]})
    ref = reference_file(tmp_path / "claims.jsonl")
    res = tmp_path / "results"
    assert cli("reproduce", "-e", "serial", "-q", "--results", str(res),
               "--reference", str(ref)) == 0
    md = (res / "report" / "report.md").read_text()
    label = f"paper (shipped, {SHIPPED_DATE})"
    assert f"| verdict (quick) | verdict ({label}) |" in md
    assert f"| builtin | {label} | 3 | 1 | 0 | 1 | 0 |" in md
    assert f"| filtering | {label} | 1 | 1 | 0 | 0 | 0 |" in md
    assert "Shipped: not run in this store." in md  # filtering/fake: only in the file
    # test_sleepy's own claim (id-less, not in the file) has no shipped verdict
    row = next(line for line in md.splitlines() if line.startswith("| builtin | builtin/"))
    assert row.endswith("| PASS | - |")


def test_list_shows_experiments_and_run_counts(capsys):
    assert cli("list") == 0
    out = capsys.readouterr().out
    assert "builtin/mixers" in out and "quick (6)" in out
    assert "builtin/test_sleepy" in out and "quick (12), paper (60)" in out


def test_help_and_no_args(capsys):
    assert cli("--help") == 0
    assert "reproduce" in capsys.readouterr().out
    assert cli() == 0


def test_run_exits_1_when_runs_fail_and_0_once_retried(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLAKY_FAIL", "1")
    assert cli("run", "builtin/test_flaky", "-e", "serial", "-q", "--results", str(tmp_path)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "runs of builtin/test_flaky failed" in err
    monkeypatch.delenv("FLAKY_FAIL")
    assert cli("run", "builtin/test_flaky", "-e", "serial", "-q", "--results", str(tmp_path)) == 0


def test_reproduce_exits_1_when_runs_fail(tmp_path, capsys, monkeypatch):
    from ssmlab.experiment import REGISTRY
    from ssmlab.runner import registry

    monkeypatch.setenv("FLAKY_FAIL", "1")
    monkeypatch.setattr(registry, "experiments_of",
                        lambda papers=None: {"builtin": [REGISTRY["builtin/test_flaky"]]})
    assert cli("reproduce", "builtin", "-e", "serial", "-q", "--results", str(tmp_path)) == 1
    assert "runs failed in builtin/test_flaky" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["serial", "local"])
def test_ctrl_c_says_how_to_resume(tmp_path, executor):
    """SIGINT mid-sweep: exit 130 and the resume hint (typer used to swallow it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "SSMLAB_PLUGINS": "ssmlab.runner.testing"}
    p = subprocess.Popen([sys.executable, "-m", "ssmlab.cli", "run", "builtin/test_sleepy",
                          "--set", "sleep=1", "-e", executor, "-q", "--results", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (tmp_path / "ssmlab.db").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted: finished runs are stored; rerun to resume" in err


def test_reproduce_overall_bar_adds_up_the_sweeps():
    from ssmlab.cli import _Progress

    prog = _Progress(quiet=False)
    prog.enabled = True  # as on a terminal
    with prog:
        prog.overall(7)
        a, b = prog.callback("a"), prog.callback("b")
        a(1, 3, None)
        a(3, 3, None)
        b(2, 4, None)
        total = next(t for t in prog.bar.tasks if t.description == "all experiments")
        assert (total.completed, total.total) == (5, 7)
