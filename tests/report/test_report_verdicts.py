"""The report a researcher reads: verdict counts per paper and profile with the undiagnosed
FAILs named, per claim the paper's number, ours with its interval and n, the region and its
source, the diagnosis or the seeds that would settle it, each claim's quick and paper verdicts
side by side, and the filter markup (its behaviour in a browser: test_report_browser.py)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from reportkit import FLAKY, SLEEPY, md_table, two_profile_store

from ssmlab.records import Claim
from ssmlab.report.render import write_report
from ssmlab.report.verdicts import Comparison, claim_key, tally
from ssmlab.runner.store import Store


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    res = tmp_path_factory.mktemp("two_profiles")
    hashes = two_profile_store(res)
    with Store.open(res) as st:
        out = write_report(st, res)
    return res, out, hashes


@pytest.fixture(scope="module")
def md(report):
    return (report[1] / "report.md").read_text()


@pytest.fixture(scope="module")
def page(report):
    return (report[1] / "index.html").read_text()




def test_counts_per_paper_and_profile(md):
    header, _, *rows = md_table(md, "Verdicts per paper")
    assert header == ["paper", "profile", "PASS", "FAIL", "INCONCLUSIVE", "SKIP",
                      "FAIL undiagnosed"]
    # quick: sleepy FAIL, INCONCLUSIVE, SKIP, FAIL (undiagnosed) + flaky's legacy PASS;
    # paper: sleepy PASS, PASS, SKIP, FAIL (finding), PASS
    assert rows == [["builtin", "quick", "1", "2", "1", "1", "1"],
                    ["builtin", "paper", "3", "1", "0", "1", "0"]]
    assert f"**Warning:** 1 FAIL(s) undiagnosed: {SLEEPY}:wrong." in md


def test_quick_and_paper_verdicts_side_by_side_in_markdown(md):
    header, _, *rows = md_table(md, "Claims")
    assert header[-2:] == ["verdict (quick)", "verdict (paper)"]
    by_id = {r[3]: r for r in rows}
    assert by_id["the total claim holds"][-2:] == ["FAIL", "PASS"]
    assert by_id["the slope claim holds"][-2:] == ["INCONCLUSIVE", "PASS"]
    assert by_id["the absent claim holds"][-2:] == ["SKIP", "SKIP"]
    assert by_id["the wrong claim holds"][-2:] == ["FAIL", "FAIL"]
    assert by_id["there are runs"][-2:] == ["PASS", "-"]  # flaky: quick only
    assert len(rows) == 5  # the shown (quick) config's claims; extra is listed in its section
    total = by_id["the total claim holds"]
    assert total[4:9] == ["0.9", "accuracy: 0.55 [0.5, 0.6] (bootstrap, n=3)", "0.9 ± 0.1",
                          "seed spread", "profile-too-small: 150 steps cannot reach the "
                          "regime; paper profile 0.93"]
    assert by_id["the slope claim holds"][8] == "about 12 seeds would settle it"


def test_markdown_section_names_refs_interval_diagnosis_and_figure(md, report):
    _, _, hashes = report
    sec = md.split(f"\n## {SLEEPY}\n", 1)[1].split("\n## ", 1)[0]
    assert "Reproduces Fig. total, Fig. slope, Fig. absent, Fig. wrong." in sec
    assert (f"- quick **FAIL** · paper **PASS** Fig. total `{SLEEPY}:total`: the total claim "
            "holds") in sec
    assert "  - paper's number: 0.9" in sec
    assert "  - region: 0.9 ± 0.1 — tolerance source: seed spread" in sec
    assert "  - diagnosis: undiagnosed: no diagnosis recorded" in sec
    assert "  - about 12 seeds would settle it" in sec
    assert f"](figures/builtin__test_sleepy/{hashes['quick']}/total.png)" in sec
    assert f"- only at profile `paper`: **PASS** Fig. extra `{SLEEPY}:extra`" in sec


class _Page(HTMLParser):
    """Elements carrying data-verdicts, the filter's options, images and sections."""

    def __init__(self):
        super().__init__()
        self.filtered: list[dict] = []
        self.options: dict[str, list[str]] = {}
        self.select = None
        self.images: list[str] = []
        self.sections: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-verdicts" in a:
            self.filtered.append({"tag": tag, **a})
        if tag == "select":
            self.select = a["id"]
            self.options[self.select] = []
        if tag == "option":
            self.options[self.select].append(a["value"])
        if tag == "img":
            self.images.append(a["src"])
        if tag == "section":
            self.sections.append(a)


def test_html_filter_markup(page):
    p = _Page()
    p.feed(page)
    assert p.options == {"f-paper": ["", "builtin"],
                         "f-verdict": ["", "PASS", "FAIL", "INCONCLUSIVE", "SKIP"]}
    rows = [e for e in p.filtered if e["tag"] == "tr"]
    cards = [e for e in p.filtered if e["tag"] == "div"]
    assert len(rows) == len(cards) == 5
    # a claim matches every verdict it has at any profile
    assert sorted(r["data-verdicts"] for r in rows) == [
        "FAIL", "FAIL PASS", "INCONCLUSIVE PASS", "PASS", "SKIP"]
    assert {r["data-paper"] for r in rows} == {"builtin"}
    assert [s["data-paper"] for s in p.sections] == ["builtin", "builtin"]
    assert "<script>" in page and "getElementById('f-paper')" in page
    assert "src=" not in page.split("<script>")[1]  # inline, no CDN


def test_html_claim_shows_everything_beside_its_figure(page, report):
    _, out, hashes = report
    anchor = f"builtin__test_sleepy-{hashes['quick']}-c0"
    card = re.search(rf"<div class='claim' id='{anchor}' [^>]*>(.*?)</div>\n", page, re.S)
    assert card is not None
    text = card.group(1)
    assert text.count("<div class='claim'") == 0
    assert text.index("<div class='text'>") < text.index("<figure>")  # text, figure beside it
    for needle in ("the total claim holds", f"<code>{SLEEPY}:total</code>", "0.9",
                   "accuracy: 0.55 [0.5, 0.6] (bootstrap, n=3)", "0.9 ± 0.1", "seed spread",
                   "<b>profile-too-small</b>: 150 steps",
                   "<table class='side'><tr><th>quick</th><th>paper</th></tr><tr>"
                   "<td class='FAIL'>FAIL</td><td class='PASS'>PASS</td></tr></table>",
                   f"figures/builtin__test_sleepy/{hashes['quick']}/total.png"):
        assert needle in text, needle
    assert "to settle</th><td>about 12 seeds would settle it" in page
    assert "<p class='warn' id='undiagnosed'><b>Warning:</b> 1 FAIL(s) undiagnosed" in page
    p = _Page()
    p.feed(page)
    assert p.images and all((out / src).is_file() for src in p.images)


def test_one_profile_keeps_one_verdict_column(tmp_path):
    from reportkit import QUICK

    from ssmlab.runner.sweep import run_sweep
    from ssmlab.runner.testing import registered_test_experiments

    with registered_test_experiments(), Store.open(tmp_path) as st:
        r = run_sweep(SLEEPY, store=st)
        st.put_claims(SLEEPY, r.cfg_hash, QUICK)
        out = write_report(st, tmp_path)
    md = (out / "report.md").read_text()
    header = md_table(md, "Claims")[0]
    assert header[-1] == "verdict" and "verdict (quick)" not in md
    assert "<table class='side'>" not in (out / "index.html").read_text()


def test_legacy_claims_match_by_text_and_count():
    legacy = Claim(paper="p", experiment="p/e", ref="Fig. 1", claim="c", measured="1",
                   expected="> 0", passed=False)
    new = legacy.model_copy(update={"verdict": "PASS"})
    assert legacy.id == "" and claim_key(legacy) == "p/e|Fig. 1|c"
    comp = Comparison({"quick": {claim_key(legacy): legacy}, "paper": {claim_key(new): new}})
    assert comp.verdicts("quick", legacy) == {"quick": "FAIL", "paper": "PASS"}
    [t] = tally({"quick": [legacy]})
    assert t.counts["FAIL"] == 1 and t.undiagnosed == [] and t.legacy_fails == 1


def test_all_configs_compare_against_the_latest_of_the_other_profile(report):
    res, _, hashes = report
    with Store.open(res) as st:
        out = write_report(st, res, all_configs=True)
    md = (out / "report.md").read_text()
    _, _, *rows = md_table(md, "Claims")
    # sleepy at quick (4) and at paper (5), flaky (1)
    assert len(rows) == 10
    extra = [r for r in rows if r[3] == "the extra claim holds"]
    assert extra == [[*extra[0][:-2], "-", "PASS"]]
    assert FLAKY in md


def test_a_variant_run_last_neither_hides_nor_joins_the_papers_verdicts(tmp_path):
    from reportkit import QUICK

    from ssmlab.runner.sweep import run_sweep
    from ssmlab.runner.testing import registered_test_experiments

    two_profile_store(tmp_path)
    with registered_test_experiments(), Store.open(tmp_path) as st:
        r = run_sweep(SLEEPY, store=st, seeds=1)  # another config, analysed last
        st.put_claims(SLEEPY, r.cfg_hash, [c.model_copy(update={
            "variant": "model.mixer=gla", "verdict": "PASS", "diagnosis_kind": "",
            "diagnosis": ""}) for c in QUICK])
        out = write_report(st, tmp_path)
    md = (out / "report.md").read_text()
    _, _, *counts = md_table(md, "Verdicts per paper")
    assert counts == [["builtin", "quick", "1", "2", "1", "1", "1"],  # as without the variant
                      ["builtin", "paper", "3", "1", "0", "1", "0"]]
    assert "4 claim(s) of variants of a paper's set-up are shown apart and not counted" in md
    _, _, *rows = md_table(md, "Claims")
    total = [r for r in rows if r[3].endswith("the total claim holds")]
    # the paper's set-up still compared with the paper profile; the variant has no paper run
    assert [r[3] for r in total] == ["the total claim holds",
                                     "[variant model.mixer=gla] the total claim holds"]
    assert [r[-2:] for r in total] == [["FAIL", "PASS"], ["PASS", "-"]]
    assert "Variant `model.mixer=gla` of the paper's set-up" in md


def test_settle_text_caps_knife_edge_estimates():
    from ssmlab.records import Claim
    from ssmlab.report.verdicts import SETTLE_CAP, settle_text

    base = dict(paper="p", experiment="p/e", ref="r", claim="c", measured="m", expected="e",
                verdict="INCONCLUSIVE")
    assert settle_text(Claim(**base, seeds_needed=7)) == "about 7 seeds would settle it"
    far = settle_text(Claim(**base, seeds_needed=SETTLE_CAP * 6, n_unit="points"))
    assert far.startswith(f"more than {SETTLE_CAP} points") and "at the bound" in far
