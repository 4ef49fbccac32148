"""The report: one Markdown row per claim naming its paper id and PASS / FAIL, the HTML twin,
figures copied next to it, provenance and timings, latest config per experiment (the verdict
counts, filters and the quick / paper comparison: test_report_verdicts.py)."""

from __future__ import annotations

import re

import pytest

from ssmlab.experiment import Claim
from ssmlab.report.render import write_report
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import figdir_for, run_sweep
from ssmlab.runner.testing import registered_test_experiments


@pytest.fixture
def results(tmp_path):
    with registered_test_experiments():
        run_sweep("builtin/test_sleepy", results=tmp_path)
        run_sweep("builtin/test_badanalysis", results=tmp_path)
        yield tmp_path


CLAIMS_HEADER = ("| paper | experiment | ref | claim | paper's number | measured | region | "
                 "tolerance source | diagnosis | verdict |")


def _claim_rows(md: str) -> list[list[str]]:
    """The rows of the table under '## Claims' (its header excluded), split into cells."""
    lines = md.split("\n## Claims\n", 1)[1].splitlines()
    rows = []
    for line in lines[3:]:  # blank, header, separator
        if not line.startswith("| "):
            break
        rows.append(line)
    return [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


def test_markdown_has_one_row_per_claim(results):
    with Store.open(results) as st:
        out = write_report(st, results)
    md = (out / "report.md").read_text()
    assert CLAIMS_HEADER in md
    rows = _claim_rows(md)
    assert len(rows) == 2
    by_exp = {r[1]: r for r in rows}
    assert by_exp["builtin/test_sleepy"][0] == "builtin" and by_exp["builtin/test_sleepy"][9] == "PASS"
    assert by_exp["builtin/test_badanalysis"][9] == "FAIL"
    assert "ZeroDivisionError" in by_exp["builtin/test_badanalysis"][5]
    assert by_exp["builtin/test_badanalysis"][8].startswith("undiagnosed: ")
    assert "Claims: 1 PASS, 1 FAIL, 0 INCONCLUSIVE, 0 SKIP" in md
    assert "| builtin | quick | 1 | 1 | 0 | 0 | 1 |" in md  # per paper, undiagnosed counted
    assert "**Warning:** 1 FAIL(s) undiagnosed: builtin/test_badanalysis" in md
    assert "- torch_threads: 1" in md and "run time:" in md and "git_commit" in md


def test_html_colours_verdicts_and_escapes(results):
    with Store.open(results) as st:
        html = (write_report(st, results) / "index.html").read_text()
    assert "<td class='PASS'>PASS</td>" in html and "<td class='FAIL'>FAIL</td>" in html
    assert "builtin (test only): sleep and return deterministic numbers" in html  # docstring
    assert "runs (12)" in html
    # the only script is the inline filter: nothing loaded from elsewhere
    assert html.count("<script") == 1 and "<script>" in html and "src='http" not in html


def test_figures_are_copied_and_linked(results):
    with Store.open(results) as st:
        [cfg] = st.configs("builtin/test_sleepy")
        figdir = figdir_for(results, cfg.experiment, cfg.cfg_hash)
        (figdir / "fig.png").write_bytes(b"\x89PNG fake")
        claims = st.claims(cfg.experiment, cfg.cfg_hash)
        st.put_claims(cfg.experiment, cfg.cfg_hash,
                      [c.model_copy(update={"figure": "fig.png"}) for c in claims])
        out = write_report(st, results)
    rel = f"figures/builtin__test_sleepy/{cfg.cfg_hash}/fig.png"
    assert (out / rel).read_bytes() == b"\x89PNG fake"
    assert f"]({rel})" in (out / "report.md").read_text()
    assert f"src='{rel}'" in (out / "index.html").read_text()


def test_pipes_in_claims_do_not_break_the_table(tmp_path):
    with registered_test_experiments(), Store.open(tmp_path) as st:
        r = run_sweep("builtin/test_sleepy", store=st)
        st.put_claims(r.experiment, r.cfg_hash, [Claim(
            paper="builtin", experiment=r.experiment, ref="Fig. 1", claim="a | b\nc",
            measured="|x|", expected="1", passed=None)])
        md = (write_report(st, tmp_path) / "report.md").read_text()
    [row] = _claim_rows(md)
    assert len(row) == 10 and row[9] == "SKIP" and row[3] == "a \\| b c"


def test_latest_config_per_experiment_unless_all(results):
    with registered_test_experiments(), Store.open(results) as st:
        run_sweep("builtin/test_sleepy", store=st, seeds=1)
        md = (write_report(st, results) / "report.md").read_text()
        md_all = (write_report(st, results, all_configs=True) / "report.md").read_text()
    assert len(_claim_rows(md)) == 2 and len(_claim_rows(md_all)) == 3


def test_rewrite_replaces_figures_and_keeps_user_files(results):
    """A rewrite drops figures that left the store's folder, keeps what a user put into report/
    (but not hidden leftovers such as older versions' temporary files), and returns the report
    folder itself (not the temporary one it was built in)."""
    with Store.open(results) as st:
        [cfg] = st.configs("builtin/test_sleepy")
        figdir = figdir_for(results, cfg.experiment, cfg.cfg_hash)
        (figdir / "gone.png").write_bytes(b"\x89PNG gone")
        out = write_report(st, results)
        assert out == results / "report"
        rel = f"figures/builtin__test_sleepy/{cfg.cfg_hash}/gone.png"
        assert (out / rel).is_file()
        (out / "notes.txt").write_text("mine")
        (out / "extra").mkdir()
        (out / "extra" / "a.csv").write_text("1,2")
        (out / ".index.html.tmp").write_text("half")
        (figdir / "gone.png").unlink()
        assert write_report(st, results) == out
    assert not (out / rel).exists() and rel not in (out / "index.html").read_text()
    assert (out / "notes.txt").read_text() == "mine" and (out / "extra" / "a.csv").is_file()
    assert not (out / ".index.html.tmp").exists()
    assert sorted(p.name for p in results.iterdir() if p.name.startswith(".")) == []
