"""Shipped results: a reference file of claims (`ssmlab claims --export`) read beside a store
that lacks a profile (`ssmlab report --reference`): its verdicts fill the paper column, marked
'paper (shipped, <date>)', its counts get their own rows, an experiment only it has gets a
shipped section, and the store's own claims always win. The file round trips every Claim field.
(The CLI and its bad inputs: tests/test_cli_claims.py, tests/test_bad_inputs.py.)"""

from __future__ import annotations

import json
import re

import pytest
from reportkit import (
    FLAKY,
    PAPER,
    QUICK,
    SHIPPED_DATE,
    SLEEPY,
    md_table,
    png,
    quick_store,
    reference_file,
    two_profile_store,
)

from ssmlab.errors import UserError
from ssmlab.records import Claim
from ssmlab.report.reference import (
    RefConfig,
    base_profile,
    is_shipped,
    load_reference,
    publish,
    shrink_png,
    write_reference,
)
from ssmlab.report.render import write_report
from ssmlab.report.verdicts import profile_order
from ssmlab.runner.store import Store

LABEL = f"paper (shipped, {SHIPPED_DATE})"




@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A quick-only store, a reference file (sleepy and filtering/fake at paper) with a figure
    beside it for filtering/fake, and the report written from both."""
    root = tmp_path_factory.mktemp("shipped")
    res = root / "results"
    quick_hash = quick_store(res)
    (root / "docs").mkdir()
    ref_path = reference_file(root / "docs" / "claims.jsonl")
    figs = root / "docs" / "figures" / "filtering__fake" / "5h1pp3df4k3"
    figs.mkdir(parents=True)
    (figs / "ordering.png").write_bytes(png())
    with Store.open(res) as st:
        out = write_report(st, res, reference=load_reference(ref_path))
    return out, quick_hash, ref_path


def test_round_trip_is_lossless(tmp_path):
    odd = Claim(paper="builtin", experiment=SLEEPY, id=f"{SLEEPY}:odd", ref="Thm 1 | (b)",
                claim="ünïcode, \"quotes\", a\nnewline", measured="x: 1e-300 [-0.0, 1.7976931348623157e308]",
                expected="< 2", verdict="INCONCLUSIVE", value=1e-300, ci_low=-0.0,
                ci_high=1.7976931348623157e308, n=7, n_unit="fitted points", seeds_needed=40,
                note="a note", variant="model.mixer=gla", figure=None)
    legacy = Claim.model_validate({"paper": "builtin", "experiment": FLAKY, "ref": "Test 2",
                                   "claim": "c", "measured": "4", "expected": ">= 1",
                                   "passed": None})
    configs = [RefConfig("paper", SLEEPY, "abc", "2025-06-01T10:00:00+00:00", [*PAPER, odd]),
               RefConfig("quick", SLEEPY, "def", "", list(QUICK)),
               RefConfig("quick", FLAKY, "0123", "t", [legacy])]
    path = tmp_path / "claims.jsonl"
    assert write_reference(configs, path, "2025-06-01T12:00:00+00:00") == len(PAPER) + 6
    ref = load_reference(path)
    assert ref.generated == "2025-06-01T12:00:00+00:00" and ref.date == "2025-06-01"
    assert [(rc.profile, rc.experiment, rc.cfg_hash, rc.analyzed) for rc in ref.configs] == [
        (rc.profile, rc.experiment, rc.cfg_hash, rc.analyzed) for rc in configs]
    for got, want in zip(ref.configs, configs, strict=True):
        assert len(got.claims) == len(want.claims)
        for a, b in zip(got.claims, want.claims, strict=True):
            assert a == b and a.model_dump() == b.model_dump()  # every field, floats exact
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["format"] == "ssmlab-claims"
    # one stored claim per line, as Claim.model_dump_json() writes it
    assert json.loads(lines[1])["claim"] == json.loads(PAPER[0].model_dump_json())


def test_labels_and_profile_order():
    assert is_shipped(LABEL) and base_profile(LABEL) == "paper"
    assert not is_shipped("paper") and base_profile("quick") == "quick"
    assert profile_order(["zz", LABEL, "paper", "quick", f"quick (shipped, {SHIPPED_DATE})"]) \
        == ["quick", f"quick (shipped, {SHIPPED_DATE})", "paper", LABEL, "zz"]


def test_markdown_shows_shipped_paper_verdicts_beside_quick(shipped):
    out, quick_hash, ref_path = shipped
    md = (out / "report.md").read_text()
    counts = md_table(md, "Verdicts per paper")[2:]
    assert ["builtin", "quick", "1", "2", "1", "1", "1"] in counts
    # the reference's own counts per paper, on rows of their own marked as shipped
    assert ["builtin", LABEL, "3", "1", "0", "1", "0"] in counts
    assert ["filtering", LABEL, "1", "1", "0", "0", "0"] in counts
    assert md.count(f"| {LABEL} |") == 2
    header, _, *rows = md_table(md, "Claims")
    assert header[-2:] == ["verdict (quick)", f"verdict ({LABEL})"]
    by = {r[3]: r[-2:] for r in rows}
    assert by["the total claim holds"] == ["FAIL", "PASS"]
    assert by["the slope claim holds"] == ["INCONCLUSIVE", "PASS"]
    assert by["the wrong claim holds"] == ["FAIL", "FAIL"]
    assert by["there are runs"] == ["PASS", "-"]
    assert by["ordering holds"] == ["-", "PASS"] and by["locality holds"] == ["-", "FAIL"]
    # the headline counts the store's claims only
    assert "Claims: 1 PASS, 2 FAIL, 1 INCONCLUSIVE, 1 SKIP." in md
    assert f"shipped results from {ref_path}" in md
    sec = md.split(f"\n## {SLEEPY}\n", 1)[1].split("\n## ", 1)[0]
    assert (f"- quick **FAIL** · {LABEL} **PASS** Fig. total `{SLEEPY}:total`") in sec
    assert f"- only at profile `{LABEL}`: **PASS** Fig. extra" in sec
    assert f"profile `quick`, config `{quick_hash}`" in sec
    fake = md.split("\n## filtering/fake\n", 1)[1].split("\n## ", 1)[0]
    assert "Shipped: not run in this store." in fake and "Provenance" not in fake
    assert "](figures/shipped/filtering__fake/5h1pp3df4k3/ordering.png)" in fake
    assert (out / "figures/shipped/filtering__fake/5h1pp3df4k3/ordering.png").is_file()
    # the undiagnosed warning names stored FAILs only
    assert "**Warning:** 1 FAIL(s) undiagnosed: builtin/test_sleepy:wrong." in md


def test_html_shows_shipped_paper_verdicts_beside_quick(shipped):
    out, quick_hash, _ = shipped
    page = (out / "index.html").read_text()
    assert f"<th>verdict ({LABEL})</th>" in page
    assert f"<td>{LABEL}</td>" in page  # a count row
    card = re.search(rf"<div class='claim' id='builtin__test_sleepy-{quick_hash}-c0' "
                     r"[^>]*>(.*?)</div>\n", page, re.S).group(1)
    assert (f"<table class='side'><tr><th>quick</th><th>{LABEL}</th></tr><tr>"
            "<td class='FAIL'>FAIL</td><td class='PASS'>PASS</td></tr></table>") in card
    assert "<p class='shipped'><b>Shipped: not run in this store.</b>" in page
    assert "<h3>Claims stored only at another profile</h3>" in page  # sleepy:extra
    # the filter finds a quick FAIL that PASSes at the shipped paper profile
    assert re.search(r"<tr data-paper='builtin' data-verdicts='FAIL PASS'>", page)
    assert "<option value='filtering'>filtering</option>" in page


def test_store_wins_over_the_reference(tmp_path):
    res = tmp_path / "results"
    two_profile_store(res)  # sleepy stored at quick and paper
    everything_fails = [c.model_copy(update={"verdict": "FAIL", "diagnosis_kind": "finding",
                                             "diagnosis": "shipped"}) for c in PAPER]
    ref = load_reference(reference_file(tmp_path / "claims.jsonl", everything_fails))
    with Store.open(res) as st:
        out = write_report(st, res, reference=ref)
    md = (out / "report.md").read_text()
    header, _, *rows = md_table(md, "Claims")
    # sleepy's paper verdicts are the store's; only filtering/fake (not stored) is shipped
    assert header[-3:] == ["verdict (quick)", "verdict (paper)", f"verdict ({LABEL})"]
    by = {r[3]: r[-3:] for r in rows}
    assert by["the total claim holds"] == ["FAIL", "PASS", "-"]
    assert by["the slope claim holds"] == ["INCONCLUSIVE", "PASS", "-"]
    assert by["ordering holds"] == ["-", "-", "PASS"]
    assert "shipped" not in md.split(f"\n## {SLEEPY}\n", 1)[1].split("\n## ", 1)[0]
    counts = md_table(md, "Verdicts per paper")[2:]
    assert ["builtin", "paper", "3", "1", "0", "1", "0"] in counts  # the store's
    assert ["builtin", LABEL, "0", "5", "0", "0", "0"] in counts  # the file's, apart


def test_without_reference_nothing_changes(tmp_path):
    res = tmp_path / "results"
    quick_store(res)
    with Store.open(res) as st:
        md = (write_report(st, res) / "report.md").read_text()
    assert "shipped" not in md
    assert md_table(md, "Claims")[0][-1] == "verdict"


@pytest.mark.parametrize("content, needle", [
    (None, "not found"),
    (b"\xff\xfe", "is not UTF-8"),
    (b"", "is not an ssmlab claims reference"),
    (b'{"format": "other"}\n', "is not an ssmlab claims reference"),
    (b"not json\n", "line 1 is not JSON"),
    (b'{"format": "ssmlab-claims", "version": 99}\n', "format version 99"),
    (b'{"format": "ssmlab-claims", "version": 1}\n[1]\n', "line 2 is not an object"),
    (b'{"format": "ssmlab-claims", "version": 1}\n{"profile": "paper"}\n', "lacks 'experiment'"),
    (b'{"format": "ssmlab-claims", "version": 1}\n{"profile": "paper", "experiment": "a/b", '
     b'"cfg_hash": "x", "claim": {"paper": "a"}}\n', "line 2 holds an invalid claim"),
])
def test_bad_reference_files(tmp_path, content, needle):
    path = tmp_path / "claims.jsonl"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=re.escape(needle)) as e:
        load_reference(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_publish_copies_the_report_and_shrinks_large_pngs(tmp_path):
    pytest.importorskip("PIL")
    import numpy as np
    from PIL import Image

    res = tmp_path / "results"
    quick_store(res)
    with Store.open(res) as st:
        out = write_report(st, res)
    big = next(out.glob("figures/*/*/total.png"))
    noise = np.random.default_rng(0).integers(0, 255, (400, 500, 3), dtype=np.uint8)
    Image.fromarray(noise).save(big)
    assert big.stat().st_size > 200_000
    dest = tmp_path / "docs"
    dest.mkdir()
    (dest / "claims.jsonl").write_text("kept\n")
    pngs = publish(res, dest)
    assert (dest / "report.md").read_text() == (out / "report.md").read_text()
    assert (dest / "claims.jsonl").read_text() == "kept\n"
    assert len(pngs) == len(QUICK) and all(p.stat().st_size <= 200_000 for p in pngs)
    shrunk = dest / big.relative_to(out)
    with Image.open(shrunk) as im:
        assert im.size[0] < 500
    for link in re.findall(r"\]\((figures/[^)]+)\)", (dest / "report.md").read_text()):
        assert (dest / link).is_file()


def test_shrink_png_fails_naming_the_file(tmp_path):
    pytest.importorskip("PIL")
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG" + b"0" * 1000)
    with pytest.raises(UserError, match="broken.png"):
        shrink_png(bad, limit=100)
    assert shrink_png(bad, limit=10_000) == 1004  # small enough: left alone



def test_publish_keeps_the_figures_of_papers_shipped_earlier(tmp_path):
    """Papers published at different times: a report written with the shipped claims as its
    reference copies their figures under figures/shipped/; published, they return to
    figures/<experiment>/<config hash>/, where the next round looks for them, and every link of
    report.md resolves."""
    dest = tmp_path / "docs"
    shipped_fig = dest / "figures" / "filtering__alignment" / ("f" * 12) / "gate.png"
    shipped_fig.parent.mkdir(parents=True)
    shipped_fig.write_bytes(b"\x89PNG earlier")
    claim = Claim(id="filtering/alignment:gate", paper="filtering",
                  experiment="filtering/alignment", ref="Fig. 2", claim="w_delta aligns",
                  measured="0.9", expected="> 0.5", verdict="PASS", figure="gate.png")
    write_reference([RefConfig("paper", "filtering/alignment", "f" * 12, "2026-01-01T00:00:00",
                               [claim])], dest / "claims.jsonl", "2026-01-01T00:00:00")
    res = tmp_path / "results"
    quick_store(res)
    with Store.open(res) as st:
        out = write_report(st, res, reference=load_reference(dest / "claims.jsonl"))
    assert (out / "figures/shipped/filtering__alignment" / ("f" * 12) / "gate.png").is_file()
    publish(res, dest)
    assert shipped_fig.read_bytes() == b"\x89PNG earlier"
    assert not (dest / "figures" / "shipped").exists()
    md = (dest / "report.md").read_text()
    links = re.findall(r"\]\((figures/[^)]+)\)", md)
    assert f"figures/filtering__alignment/{'f' * 12}/gate.png" in links
    assert all((dest / link).is_file() for link in links)
