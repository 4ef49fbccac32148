"""`ssmlab claims`: the claims of the latest analysed config per experiment as a table or as
JSON lines with exactly the documented fields, filtered by paper and profile, never writing the
store (bad input: tests/test_bad_inputs.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from ssmlab.cli import main
from ssmlab.runner.testing import registered_test_experiments

sys.path.insert(0, str(Path(__file__).parent / "report"))
from reportkit import FLAKY, SLEEPY, two_profile_store  # noqa: E402

FIELDS = ["id", "paper", "experiment", "ref", "statement", "paper_value", "measured", "ci_low",
          "ci_high", "tolerance", "tolerance_source", "verdict", "diagnosis"]


@pytest.fixture(autouse=True)
def _exps():
    with registered_test_experiments():
        yield


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    res = tmp_path_factory.mktemp("claims")
    two_profile_store(res)
    return res


@pytest.fixture
def res(template, tmp_path) -> Path:
    dst = tmp_path / "results"
    shutil.copytree(template, dst)
    return dst


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(list(args))
    return e.value.code, capsys.readouterr().out


def records(capsys, res: Path, *args: str) -> list[dict]:
    code, out = cli(capsys, "claims", "--json", *args, "--results", str(res))
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_json_has_exactly_the_fields_of_the_latest_config_per_experiment(res, capsys):
    before = tree(res)
    recs = records(capsys, res)
    assert all(list(r) == FIELDS for r in recs)
    # sleepy's latest analysed config is the quick one (4 claims); flaky has its legacy claim
    assert [r["id"] for r in recs] == ["", f"{SLEEPY}:total", f"{SLEEPY}:slope",
                                       f"{SLEEPY}:absent", f"{SLEEPY}:wrong"]
    by = {r["id"]: r for r in recs}
    assert by[f"{SLEEPY}:total"] == {
        "id": f"{SLEEPY}:total", "paper": "builtin", "experiment": SLEEPY, "ref": "Fig. total",
        "statement": "the total claim holds", "paper_value": "0.9",
        "measured": "accuracy: 0.55 [0.5, 0.6] (bootstrap, n=3)", "ci_low": 0.5, "ci_high": 0.6,
        "tolerance": "0.9 ± 0.1", "tolerance_source": "seed spread", "verdict": "FAIL",
        "diagnosis": "profile-too-small: 150 steps cannot reach the regime; paper profile 0.93"}
    assert by[f"{SLEEPY}:wrong"]["diagnosis"] == "undiagnosed: no diagnosis recorded"
    assert by[f"{SLEEPY}:slope"]["verdict"] == "INCONCLUSIVE"
    assert by[f"{SLEEPY}:absent"]["ci_low"] is None and by[f"{SLEEPY}:absent"]["verdict"] == "SKIP"
    legacy = by[""]
    assert legacy["experiment"] == FLAKY and legacy["verdict"] == "PASS"
    assert legacy["diagnosis"] == "" and legacy["ci_low"] is None
    assert tree(res) == before  # read-only: not even a -wal / -shm file


def test_profile_picks_that_profiles_latest_config(res, capsys):
    recs = records(capsys, res, "--profile", "paper")
    assert [(r["id"], r["verdict"]) for r in recs] == [
        (f"{SLEEPY}:total", "PASS"), (f"{SLEEPY}:slope", "PASS"), (f"{SLEEPY}:absent", "SKIP"),
        (f"{SLEEPY}:wrong", "FAIL"), (f"{SLEEPY}:extra", "PASS")]
    assert recs[3]["diagnosis"].startswith("finding: the verdict does not flip")
    quick = records(capsys, res, "-p", "quick")
    assert len(quick) == 5 and {r["experiment"] for r in quick} == {SLEEPY, FLAKY}


def test_paper_filter(res, capsys):
    assert len(records(capsys, res, "builtin")) == 5
    assert records(capsys, res, "filtering") == []  # a known paper with nothing stored
    code, out = cli(capsys, "claims", "filtering", "--results", str(res))
    assert code == 0 and "no analysed claims in" in out and "for filtering" in out


def test_table(res, capsys):
    before = tree(res)
    code, out = cli(capsys, "claims", "builtin", "--results", str(res))
    assert code == 0
    lines = [line.split("│")[1:-1] for line in out.splitlines() if line.count("│") > 3]
    starts = [i for i, cells in enumerate(lines) if cells[0].strip()]  # a claim's first line
    rows = [[" ".join(" ".join(cells[k] for cells in lines[a:b]).split())
             for k in range(len(lines[a]))]
            for a, b in zip(starts, [*starts[1:], len(lines)], strict=True)]
    assert [r[:4] for r in rows] == [
        [FLAKY, "quick", "Test 2", "there are runs"],
        [SLEEPY, "quick", "Fig. total", "the total claim holds"],
        [SLEEPY, "quick", "Fig. slope", "the slope claim holds"],
        [SLEEPY, "quick", "Fig. absent", "the absent claim holds"],
        [SLEEPY, "quick", "Fig. wrong", "the wrong claim holds"]]


    def bare(cells):  # a word folded across lines gains a space: compare without any
        return ["".join(c.split()) for c in cells]

    assert bare(rows[1][4:]) == bare(["0.9", "accuracy: 0.55 [0.5, 0.6] (bootstrap, n=3)",
                                      "0.9 ± 0.1", "FAIL", "profile-too-small: 150 steps cannot "
                                      "reach the regime; paper profile 0.93"])
    assert bare(rows[2][7:]) == bare(["INCONCLUSIVE", "about 12 seeds would settle it"])
    assert bare(rows[4][8:]) == bare(["undiagnosed: no diagnosis recorded"])
    assert "Fig. extra" not in out  # only at the paper profile
    code, out = cli(capsys, "claims", "--profile", "paper", "--results", str(res))
    assert code == 0 and "Fig. extra" in out and FLAKY not in out
    assert tree(res) == before


def test_variants_only_on_request(res, capsys):
    from ssmlab.runner.store import Store

    with Store.open(res) as st:
        [cfg] = st.configs(FLAKY)
        claims = st.claims(FLAKY, cfg.cfg_hash)
        st.put_claims(FLAKY, cfg.cfg_hash, [c.model_copy(update={"variant": "n_cells=4"})
                                            for c in claims])
    assert [r["experiment"] for r in records(capsys, res)] == [SLEEPY] * 4
    recs = records(capsys, res, "--variants")
    assert len(recs) == 5 and list(recs[0]) == [*FIELDS, "variant"]
    assert recs[0]["variant"] == "n_cells=4" and recs[1]["variant"] == ""


# -- shipped results: claims --export, report --reference -----------------------------------------
def test_export_round_trips_every_claim_field_and_never_writes_the_store(res, capsys, tmp_path):
    from ssmlab.report.reference import load_reference
    from ssmlab.runner.store import Store

    before = tree(res)
    path = tmp_path / "claims.jsonl"
    code, out = cli(capsys, "claims", "--export", str(path), "--results", str(res))
    assert code == 0 and f"exported 10 claims of 3 configs (quick, paper) to {path}" in out
    assert tree(res) == before
    ref = load_reference(path)
    with Store.open(res, readonly=True) as st:
        stored = {(c.experiment, c.cfg_hash): (c, st.claims(c.experiment, c.cfg_hash))
                  for c in st.configs(latest_only=False)}
    assert {(rc.profile, rc.experiment) for rc in ref.configs} == {
        ("quick", SLEEPY), ("paper", SLEEPY), ("quick", FLAKY)}
    for rc in ref.configs:
        cfg, claims = stored[(rc.experiment, rc.cfg_hash)]
        assert rc.profile == cfg.profile and rc.analyzed == cfg.analyzed
        assert [c.model_dump() for c in rc.claims] == [c.model_dump() for c in claims]
        assert rc.claims == claims


def test_export_one_profile_then_report_with_reference(res, capsys, tmp_path):
    """The shipped-results path: export the paper profile from one store, show it beside a
    store that ran only the quick profile."""
    path = tmp_path / "claims.jsonl"
    code, out = cli(capsys, "claims", "--profile", "paper", "--export", str(path),
                    "--results", str(res))
    assert code == 0 and "exported 5 claims of 1 configs (paper)" in out
    quick_only = tmp_path / "quick"
    from reportkit import quick_store

    quick_store(quick_only)
    code, out = cli(capsys, "report", "--reference", str(path), "--results", str(quick_only))
    assert code == 0
    md = (quick_only / "report" / "report.md").read_text()
    generated = json.loads(path.read_text().splitlines()[0])["generated"]
    label = f"paper (shipped, {generated[:10]})"
    assert f"| verdict (quick) | verdict ({label}) |" in md
    assert f"| builtin | {label} | 3 | 1 | 0 | 1 | 0 |" in md
    row = next(line for line in md.splitlines() if "| the total claim holds |" in line)
    assert row.endswith("| FAIL | PASS |")


def test_export_filters_papers_and_variants(res, capsys, tmp_path):
    from ssmlab.report.reference import load_reference
    from ssmlab.runner.store import Store

    with Store.open(res) as st:
        [cfg] = st.configs(FLAKY)
        st.put_claims(FLAKY, cfg.cfg_hash, [c.model_copy(update={"variant": "n_cells=4"})
                                            for c in st.claims(FLAKY, cfg.cfg_hash)])
    path = tmp_path / "c.jsonl"
    assert cli(capsys, "claims", "--export", str(path), "--results", str(res))[0] == 0
    assert {rc.experiment for rc in load_reference(path).configs} == {SLEEPY}
    assert cli(capsys, "claims", "--variants", "--export", str(path), "--results",
               str(res))[0] == 0
    assert {rc.variant for rc in load_reference(path).configs} == {"", "n_cells=4"}
    code = cli(capsys, "claims", "filtering", "--export", str(path), "--results", str(res))[0]
    assert code == 2  # nothing stored for that paper: nothing to export


def test_export_merge_keeps_the_other_papers_and_replaces_its_own(res, capsys, tmp_path):
    """Papers run at different times ship in one file: --merge keeps the claims of experiments
    the export does not hold and replaces those of the experiments it does."""
    from ssmlab.report.reference import RefConfig, load_reference, write_reference

    path = tmp_path / "claims.jsonl"
    assert cli(capsys, "claims", "--profile", "paper", "--export", str(path),
               "--results", str(res))[0] == 0
    [mine] = load_reference(path).configs
    other = RefConfig("paper", "filtering/alignment", "f" * 12, "2026-01-01T00:00:00",
                      [c.model_copy(update={"paper": "filtering", "experiment":
                                            "filtering/alignment"}) for c in mine.claims])
    stale = RefConfig("paper", mine.experiment, "0" * 12, "2026-01-01T00:00:00", mine.claims)
    write_reference([stale, other], path, "2026-01-01T00:00:00")
    code, out = cli(capsys, "claims", "--profile", "paper", "--export", str(path), "--merge",
                    "--results", str(res))
    assert code == 0 and "5 of them kept from the file" in " ".join(out.split())
    got = {(rc.experiment, rc.cfg_hash) for rc in load_reference(path).configs}
    assert got == {(mine.experiment, mine.cfg_hash), ("filtering/alignment", "f" * 12)}
    assert cli(capsys, "claims", "--merge", "--results", str(res))[0] == 2  # needs --export
