"""The report, rebuilt from the results store alone: results/report/index.html and its Markdown
twin results/report/report.md (docs/report.md).

Top: per paper (and profile) the PASS / FAIL / INCONCLUSIVE / SKIP counts, and a warning naming
every FAIL whose diagnosis is "undiagnosed". Then every claim of the latest analysed config of
each experiment (all analysed configs with `all_configs=True`) in one table — in the Markdown
one row per claim:

    | paper | experiment | ref | claim | paper's number | measured | region | tolerance source
    | diagnosis | verdict |

When the store holds analysed configs of an experiment at several profiles (quick and paper),
the verdict column becomes one column per profile, so each claim (matched by id) shows its
quick and its paper verdict side by side. Then one section per experiment: the paper's figure /
table references, its docstring, per claim the statement, the paper's number, ours with its 95%
interval and n, the region and why, the verdict(s), the diagnosis of a FAIL (kind and
evidence) and, for an INCONCLUSIVE, about how many seeds would settle it, each beside its
figure; then the runs' provenance (ssmlab version, git commit, torch version, threads, hosts,
executor) and timings. The HTML page filters claims by paper and by verdict (a few lines of
inline script; no server, no CDN: it works from file://).

Figures are copied next to the report (report/figures/...) so the folder is self-contained.
The folder is rebuilt beside itself and swapped in atomically (`write_report`, `swap`), so
concurrent `ssmlab report` calls and readers never see a half-written report.
No template engine: plain strings, HTML-escaped.
"""

from __future__ import annotations

import html
import json
import shutil
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ssmlab
from ssmlab.records import Claim
from ssmlab.report import swap
from ssmlab.report.reference import RefConfig, Reference, is_shipped
from ssmlab.report.verdicts import (
    VERDICTS,
    Comparison,
    Entry,
    Tally,
    catalog,
    comparisons,
    diagnosis_text,
    latest,
    measured_text,
    paper_rank,
    profile_order,
    reference_tallies,
    settle_text,
    shipped_configs,
    tally,
)
from ssmlab.runner.store import ConfigRow, Store, StoredRun, now_iso

IMAGE_SUFFIXES = (".png", ".svg", ".jpg", ".jpeg", ".gif")


@dataclass
class Section:
    """One analysed config of one experiment, as the report shows it."""

    cfg: ConfigRow
    claims: list[Claim]
    runs: list[StoredRun]
    figures: list[str] = field(default_factory=list)  # paths relative to the report folder
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    comparison: Comparison | None = None  # the experiment's claims at every profile
    variant: str = ""  # '' = the paper's set-up
    shipped: str = ""  # taken from a reference file (its path): the store has no such config

    @property
    def refs(self) -> list[str]:
        """The paper's figure / table / theorem references of this experiment's claims."""
        return list(dict.fromkeys(c.ref for c in self.claims if c.ref))

    def verdicts(self, c: Claim) -> dict[str, str | None]:
        """profile -> verdict of claim `c` there (one entry, its own, without a comparison)."""
        if self.comparison is None or not self.comparison.shown:
            return {self.cfg.profile: c.verdict}
        return self.comparison.verdicts(self.cfg.profile, c)

    def claim_anchor(self, i: int) -> str:
        return f"{self.anchor}-c{i}"

    @property
    def anchor(self) -> str:
        return self.cfg.experiment.replace("/", "__") + "-" + self.cfg.cfg_hash


def collect(store: Store, results: Path, outdir: Path, all_configs: bool = False,
            entries: list[Entry] | None = None,
            reference: Reference | None = None) -> list[Section]:
    """The sections: the latest analysed config per experiment (per experiment and variant:
    a variant run last does not hide the paper's set-up), or every one with `all_configs`.
    With a `reference`, its verdicts join each section's comparison where the store lacks that
    profile, and an experiment the store has not analysed at all gets a shipped section."""
    entries = catalog(store) if entries is None else entries
    comp, _ = comparisons(entries, reference)
    sections = []
    for e in (entries if all_configs else latest(entries)):
        cfg, claims = e.cfg, e.claims
        runs = store.runs(cfg.experiment, run_ids=cfg.run_ids)
        sec = Section(cfg, claims, runs, sweeps=store.sweeps(cfg.experiment, cfg.cfg_hash),
                      comparison=comp.get((cfg.experiment, e.variant)), variant=e.variant)
        src = results / cfg.figdir if cfg.figdir else None
        if src is not None and src.is_dir():
            dst = outdir / "figures" / cfg.figdir.removeprefix("figures/")
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    shutil.copy2(f, dst / f.name)
                    sec.figures.append(str((dst / f.name).relative_to(outdir)))
        sections.append(sec)
    stored = {(e.cfg.experiment, e.variant) for e in entries}
    for rc in shipped_configs(entries, reference):
        if (rc.experiment, rc.variant) not in stored:
            assert reference is not None
            sections.append(_shipped_section(rc, reference, outdir,
                                             comp.get((rc.experiment, rc.variant))))
    profiles = profile_order({s.cfg.profile for s in sections})
    sections.sort(key=lambda s: (paper_rank(s.cfg.paper), s.cfg.experiment, s.variant,
                                 profiles.index(s.cfg.profile), s.cfg.cfg_hash))
    return sections


def _shipped_section(rc: RefConfig, reference: Reference, outdir: Path,
                     comparison: Comparison | None) -> Section:
    """A section for a config only the reference file has; its figures are copied when the
    file has them beside it (figures/<experiment>/<config hash>/, as `publish` leaves them)."""
    label = reference.label(rc.profile)
    cfg = ConfigRow(rc.experiment, rc.cfg_hash, "", rc.paper, label, {}, "", [], "",
                    rc.analyzed, rc.analyzed or None)
    sec = Section(cfg, rc.claims, [], comparison=comparison, variant=rc.variant,
                  shipped=str(reference.path))
    rel = Path(rc.experiment.replace("/", "__")) / rc.cfg_hash
    src = reference.path.parent / "figures" / rel
    if src.is_dir():
        dst = outdir / "figures" / "shipped" / rel
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                shutil.copy2(f, dst / f.name)
                sec.figures.append(str((dst / f.name).relative_to(outdir)))
    return sec


def summarize(entries: list[Entry], reference: Reference | None = None) -> list[Tally]:
    """Verdict counts per paper and profile, over the latest analysed config of each experiment
    at each profile (variants counted apart); with a `reference`, its whole counts per paper on
    rows of their own, under the shipped label."""
    _, by_profile = comparisons(entries)
    return tally({**by_profile, **reference_tallies(reference)}, paper_rank)


def _tallies_of(sections: list[Section]) -> list[Tally]:
    """Counts of the sections shown (when the caller has no store-wide summary)."""
    by_profile: dict[str, list[Claim]] = {}
    for s in sections:
        if not s.shipped:
            by_profile.setdefault(s.cfg.profile, []).extend(s.claims)
    return tally(by_profile, paper_rank)


def _verdict_columns(sections: list[Section]) -> list[str]:
    """['verdict'] when no experiment is stored at two profiles and nothing is shipped; else one
    column per profile (a shipped one under its label)."""
    profiles: set[str] = set()
    for s in sections:
        if s.comparison is not None and s.comparison.shown:
            profiles |= set(s.comparison.profiles)
        if s.shipped:
            profiles.add(s.cfg.profile)
    if not profiles:
        return []
    profiles |= {s.cfg.profile for s in sections}
    return profile_order(profiles)


def _claim_verdicts(sec: Section, c: Claim, columns: list[str]) -> list[str | None]:
    """The verdict cells of one claim: [its verdict], or one per profile column."""
    if not columns:
        return [c.verdict]
    by = sec.verdicts(c)
    return [by.get(p) for p in columns]


def _statement(c: Claim) -> str:
    """The claim as the tables show it: a variant's claims say which variant."""
    return f"[variant {c.variant}] {c.claim}" if c.variant else c.claim


def _variants_line(tallies: list[Tally]) -> str:
    n = sum(t.variants for t in tallies if not is_shipped(t.profile))
    return (f"{n} claim(s) of variants of a paper's set-up are shown apart and not counted "
            f"above." if n else "")


def _diagnosis_or_settle(c: Claim) -> str:
    return diagnosis_text(c) or settle_text(c)


def _warning(tallies: list[Tally]) -> str:
    """One sentence on the stored FAILs without a diagnosis ('' when there are none; shipped
    ones are the shipped report's to name)."""
    tallies = [t for t in tallies if not is_shipped(t.profile)]
    ids = [i for t in tallies for i in t.undiagnosed]
    legacy = sum(t.legacy_fails for t in tallies)
    parts = []
    if ids:
        parts.append(f"{len(ids)} FAIL(s) undiagnosed: {', '.join(dict.fromkeys(ids))}. A FAIL "
                     f"without a diagnosis is a bug or a finding still to be argued")
    if legacy:
        parts.append(f"{legacy} FAIL(s) stored by an older version carry no diagnosis "
                     f"(rerun to re-evaluate them)")
    return "; ".join(parts) + "." if parts else ""


def _figure_path(sec: Section, claim: Claim) -> str | None:
    if not claim.figure:
        return None
    for f in sec.figures:
        if Path(f).name == Path(claim.figure).name:
            return f
    return None


def provenance_summary(runs: list[StoredRun]) -> dict[str, str]:
    """Distinct values of each provenance field across runs (what a reader needs to rerun)."""
    keys = ("ssmlab", "git_commit", "torch", "python", "torch_threads", "host", "executor",
            "workers", "scheduler")
    out = {}
    for k in keys:
        vals = Counter(str(r.provenance.get(k)) for r in runs if r.provenance.get(k) is not None)
        if vals:
            out[k] = ", ".join(f"{v} ({n})" if len(vals) > 1 else v for v, n in vals.most_common())
    return out


def timing_summary(sec: Section) -> dict[str, str]:
    secs = [r.seconds for r in sec.runs if r.status != "failed" or r.seconds]
    st = Counter(r.status for r in sec.runs)
    out = {
        "runs": f"{len(sec.runs)} of {len(sec.cfg.run_ids)} stored ("
        + ", ".join(f"{k} {v}" for k, v in sorted(st.items())) + ")",
    }
    if secs:
        out["run time"] = (f"total {sum(secs):.1f} s, mean {statistics.fmean(secs):.2f} s, "
                           f"max {max(secs):.2f} s")
    walls = [s["seconds"] for s in sec.sweeps if s.get("seconds") is not None]
    if walls:
        last = sec.sweeps[-1]
        out["sweeps"] = (f"{len(sec.sweeps)} invocation(s), wall {sum(walls):.1f} s in total; last: "
                         f"{last['executor']} × {last['workers']}, ran {last['ran']}, "
                         f"reused {last['cached']}")
    return out


# -- Markdown ---------------------------------------------------------------------------------
def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()


def _counts_line(claims: list[Claim]) -> str:
    verdicts = Counter(c.verdict for c in claims)
    return ", ".join(f"{verdicts.get(v, 0)} {v}" for v in VERDICTS)


def render_markdown(sections: list[Section], notes: list[str], generated: str,
                    tallies: list[Tally] | None = None) -> str:
    tallies = _tallies_of(sections) if tallies is None else tallies
    lines = ["# ssmlab report", ""]
    lines.append(f"Generated {generated} by ssmlab {ssmlab.__version__}. Claims: "
                 + _counts_line([c for s in sections if not s.shipped for c in s.claims
                                 if not c.variant])
                 + ".")
    lines.append("")
    for n in notes:
        lines.append(f"- note: {_md(n)}")
    if notes:
        lines.append("")
    lines += ["## Verdicts per paper", "",
              "| paper | profile | " + " | ".join(VERDICTS) + " | FAIL undiagnosed |",
              "|---|---|" + "---|" * (len(VERDICTS) + 1)]
    for t in tallies:
        lines.append(f"| {_md(t.paper)} | {_md(t.profile)} | "
                     + " | ".join(str(t.counts.get(v, 0)) for v in VERDICTS)
                     + f" | {len(t.undiagnosed)} |")
    if not tallies:
        lines.append("| - | - |" + " 0 |" * (len(VERDICTS) + 1))
    warning = _warning(tallies)
    lines.append("")
    if _variants_line(tallies):
        lines += [_variants_line(tallies), ""]
    if warning:
        lines += [f"**Warning:** {_md(warning)}", ""]
    columns = _verdict_columns(sections)
    vheads = [f"verdict ({p})" for p in columns] or ["verdict"]
    lines += ["## Claims", "",
              "| paper | experiment | ref | claim | paper's number | measured | region | "
              "tolerance source | diagnosis | " + " | ".join(vheads) + " |",
              "|---|---|---|---|---|---|---|---|---|" + "---|" * len(vheads)]
    for s in sections:
        for c in s.claims:
            cells = [c.paper, c.experiment, c.ref, _statement(c), c.paper_value or "-",
                     measured_text(c), c.expected, c.tolerance_source or "-",
                     _diagnosis_or_settle(c) or "-"]
            lines.append("| " + " | ".join(_md(x) for x in cells) + " | "
                         + " | ".join(v or "-" for v in _claim_verdicts(s, c, columns)) + " |")
    if not any(s.claims for s in sections):
        lines.append("| - | - | - | no claims stored yet |" + " - |" * (5 + len(vheads)))
    lines.append("")
    for s in sections:
        lines += _md_section(s)
    return "\n".join(lines) + "\n"


def _md_section(s: Section) -> list[str]:
    cfg = s.cfg
    lines = [f"## {cfg.experiment}", ""]
    if s.variant:
        lines += [f"Variant `{s.variant}` of the paper's set-up: its verdicts are not the "
                  f"paper's and are not counted.", ""]
    if s.refs:
        lines += [f"Reproduces {_md(', '.join(s.refs))}.", ""]
    if s.shipped:
        lines += [f"Shipped: not run in this store. Paper `{cfg.paper}`, `{cfg.profile}` from "
                  f"`{s.shipped}`, config `{cfg.cfg_hash}`, analysed {cfg.analyzed}.", ""]
    else:
        lines += [f"Paper `{cfg.paper}`, profile `{cfg.profile}`, config `{cfg.cfg_hash}`, "
                  f"analysed {cfg.analyzed}.", ""]
    if cfg.doc:
        lines += ["> " + line if line else ">" for line in cfg.doc.splitlines()]
        lines.append("")
    for c in s.claims:
        verdicts = s.verdicts(c)
        head = (" · ".join(f"{p} **{v or '-'}**" for p, v in verdicts.items())
                if len(verdicts) > 1 else f"**{c.verdict}**")
        lines.append(f"- {head} {_md(c.ref)}" + (f" `{c.id}`" if c.id else "")
                     + f": {_md(c.claim)}")
        if c.paper_value:
            lines.append(f"  - paper's number: {_md(c.paper_value)}")
        lines.append(f"  - measured: {_md(measured_text(c))}")
        lines.append(f"  - region: {_md(c.expected)}"
                     + (f" — tolerance source: {_md(c.tolerance_source)}"
                        if c.tolerance_source else ""))
        if diagnosis_text(c):
            lines.append(f"  - diagnosis: {_md(diagnosis_text(c))}")
        if settle_text(c):
            lines.append(f"  - {settle_text(c)}")
        if c.note:
            lines.append(f"  - note: {_md(c.note)}")
        fig = _figure_path(s, c)
        if fig:
            lines.append(f"  ![{_md(c.ref)}]({fig})")
    if s.comparison is not None and s.comparison.shown:
        for prof, c in s.comparison.missing_from(cfg.profile, s.claims):
            lines.append(f"- only at profile `{prof}`: **{c.verdict}** {_md(c.ref)}"
                         + (f" `{c.id}`" if c.id else "") + f": {_md(c.claim)} — measured "
                         f"{_md(measured_text(c))}, region {_md(c.expected)}.")
    shown = {_figure_path(s, c) for c in s.claims}
    for f in s.figures:
        if f not in shown:
            lines.append(f"- figure: ![{Path(f).stem}]({f})")
    if s.shipped:
        return [*lines, ""]
    lines += ["", "Provenance:", ""]
    for k, v in provenance_summary(s.runs).items():
        lines.append(f"- {k}: {_md(v)}")
    for k, v in timing_summary(s).items():
        lines.append(f"- {k}: {_md(v)}")
    lines += ["", "<details><summary>config</summary>", "", "```json",
              json.dumps(cfg.config, indent=2, sort_keys=True), "```", "", "</details>", ""]
    return lines


# -- HTML -------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:0.85em}
.PASS{background:#d9f2d9;color:#145214;font-weight:bold}
.FAIL{background:#f8d4d4;color:#7a1010;font-weight:bold}
.INCONCLUSIVE{background:#fcefc7;color:#6b4e00;font-weight:bold}
.SKIP{background:#eee;color:#555;font-weight:bold}
.none{color:#999}
.warn{background:#fff4e5;border-left:4px solid #e69500;padding:0.5em 1em}
.claim{display:flex;gap:1.5em;align-items:flex-start;margin:1em 0;padding:0.5em 1em;
border-left:4px solid #ccc}
.claim .text{flex:1 1 55%;min-width:0} .claim figure{flex:1 1 45%;margin:0}
.claim table{margin:0.5em 0} .kv th{width:11em}
#filters{position:sticky;top:0;background:#fff;padding:0.5em 0;border-bottom:1px solid #ddd}
#filters label{margin-right:1.5em}
img{max-width:100%;border:1px solid #eee} .doc{white-space:pre-wrap;color:#444}
[hidden]{display:none !important}
"""

# Filter by paper and verdict: every element carrying data-verdicts (a claims-table row, a claim
# of a section) is hidden unless it matches; a section is hidden when its paper does not match
# or no claim of it does; per-paper count rows follow the paper filter. The state lives in the
# URL's hash (#paper=P&verdict=V), so a filtered view can be bookmarked or linked.
_SCRIPT = """
(function(){
  var fp=document.getElementById('f-paper'), fv=document.getElementById('f-verdict');
  function match(e,p,v){
    return (!p||e.getAttribute('data-paper')===p) &&
           (!v||(' '+e.getAttribute('data-verdicts')+' ').indexOf(' '+v+' ')>=0);
  }
  function apply(){
    var p=fp.value, v=fv.value, shown=0;
    document.querySelectorAll('[data-verdicts]').forEach(function(e){
      e.hidden=!match(e,p,v); if(!e.hidden&&e.tagName==='TR') shown++;});
    document.querySelectorAll('section.exp').forEach(function(s){
      var any=s.querySelector('.claim:not([hidden])');
      s.hidden=(p&&s.getAttribute('data-paper')!==p)||(v&&!any);});
    document.querySelectorAll('tr.count').forEach(function(r){
      r.hidden=!!p&&r.getAttribute('data-paper')!==p;});
    document.getElementById('f-count').textContent=shown+' claim(s) shown';
    var h=[]; if(p) h.push('paper='+encodeURIComponent(p));
    if(v) h.push('verdict='+encodeURIComponent(v));
    if(history.replaceState) history.replaceState(null,'',h.length?'#'+h.join('&'):'#');
  }
  location.hash.replace(/^#/,'').split('&').forEach(function(kv){
    var i=kv.indexOf('='); if(i<0) return;
    var k=kv.slice(0,i), val=decodeURIComponent(kv.slice(i+1));
    var sel=k==='paper'?fp:(k==='verdict'?fv:null);
    if(sel&&Array.prototype.some.call(sel.options,function(o){return o.value===val;}))
      sel.value=val;
  });
  fp.addEventListener('change',apply); fv.addEventListener('change',apply);
  document.getElementById('f-reset').addEventListener('click',function(){
    fp.value=''; fv.value=''; apply();});
  apply();
})();
"""


def _h(text: Any) -> str:
    return html.escape(str(text))


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(c if raw else f"<td>{_h(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _vcell(v: str | None, tag: str = "td") -> str:
    return f"<{tag} class='{v}'>{v}</{tag}>" if v else f"<{tag} class='none'>-</{tag}>"


def _data(paper: str, verdicts: list[str | None]) -> str:
    vs = " ".join(dict.fromkeys(v for v in verdicts if v))
    return f"data-paper='{_h(paper)}' data-verdicts='{_h(vs)}'"


def _filters(papers: list[str], n: int) -> str:
    popts = "".join(f"<option value='{_h(p)}'>{_h(p)}</option>" for p in papers)
    vopts = "".join(f"<option value='{v}'>{v}</option>" for v in VERDICTS)
    return ("<form id='filters' onsubmit='return false'>"
            f"<label>paper <select id='f-paper'><option value=''>all</option>{popts}</select>"
            "</label>"
            f"<label>verdict <select id='f-verdict'><option value=''>all</option>{vopts}"
            "</select></label>"
            "<button type='button' id='f-reset'>show all</button> "
            f"<span id='f-count'>{n} claim(s) shown</span></form>")


def render_html(sections: list[Section], notes: list[str], generated: str,
                tallies: list[Tally] | None = None) -> str:
    tallies = _tallies_of(sections) if tallies is None else tallies
    all_claims = [c for s in sections for c in s.claims]
    verdicts = Counter(c.verdict for s in sections if not s.shipped for c in s.claims
                       if not c.variant)
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             "<title>ssmlab report</title>",
             f"<style>{_CSS}</style></head><body><h1>ssmlab report</h1>",
             f"<p>Generated {_h(generated)} by ssmlab {_h(ssmlab.__version__)}. Claims: "
             + ", ".join(f"<span class='{v}'>{verdicts.get(v, 0)} {v}</span>"
                         for v in VERDICTS) + ". Markdown twin: "
             "<a href='report.md'>report.md</a>.</p>"]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_h(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Verdicts per paper</h2>")
    head = "".join(f"<th>{h}</th>" for h in ("paper", "profile", *VERDICTS, "FAIL undiagnosed"))
    rows = "".join(
        f"<tr class='count' data-paper='{_h(t.paper)}'><td>{_h(t.paper)}</td>"
        f"<td>{_h(t.profile)}</td>"
        + "".join(f"<td class='{v if t.counts.get(v) else ''}'>{t.counts.get(v, 0)}</td>"
                  for v in VERDICTS)
        + f"<td class='{'FAIL' if t.undiagnosed else ''}'>{len(t.undiagnosed)}</td></tr>"
        for t in tallies)
    parts.append(f"<table id='counts'><tr>{head}</tr>{rows}</table>")
    warning = _warning(tallies)
    if _variants_line(tallies):
        parts.append(f"<p>{_h(_variants_line(tallies))}</p>")
    if warning:
        parts.append(f"<p class='warn' id='undiagnosed'><b>Warning:</b> {_h(warning)}</p>")

    parts.append("<h2>Claims</h2>")
    papers = list(dict.fromkeys([s.cfg.paper for s in sections]
                                + [c.paper for c in all_claims]))
    parts.append(_filters(papers, len(all_claims)))
    columns = _verdict_columns(sections)
    vheads = [f"verdict ({p})" for p in columns] or ["verdict"]
    header = ["paper", "experiment", "ref", "claim", "paper's number", "measured", "region",
              "tolerance source", "diagnosis", *vheads]
    trs = []
    for s in sections:
        for i, c in enumerate(s.claims):
            vs = _claim_verdicts(s, c, columns)
            trs.append(
                f"<tr {_data(c.paper, vs)}><td>{_h(c.paper)}</td>"
                f"<td><a href='#{_h(s.anchor)}'>{_h(c.experiment)}</a></td>"
                f"<td>{_h(c.ref)}</td>"
                f"<td><a href='#{_h(s.claim_anchor(i))}'>{_h(_statement(c))}</a></td>"
                f"<td>{_h(c.paper_value or '-')}</td><td>{_h(measured_text(c))}</td>"
                f"<td>{_h(c.expected)}</td><td>{_h(c.tolerance_source or '-')}</td>"
                f"<td>{_h(_diagnosis_or_settle(c) or '-')}</td>"
                + "".join(_vcell(v) for v in vs) + "</tr>")
    parts.append("<table id='claims'><tr>" + "".join(f"<th>{_h(h)}</th>" for h in header)
                 + "</tr>" + "".join(trs) + "</table>")
    for s in sections:
        parts += _html_section(s)
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_claim(s: Section, i: int, c: Claim) -> str:
    verdicts = s.verdicts(c)
    kv: list[tuple[str, str]] = [("claim", _h(c.claim))]
    if c.id:
        kv.append(("id", f"<code>{_h(c.id)}</code>"))
    kv += [("paper's number", _h(c.paper_value or "-")), ("measured", _h(measured_text(c))),
           ("region", _h(c.expected)), ("tolerance source", _h(c.tolerance_source or "-"))]
    if len(verdicts) > 1:
        kv.append(("verdicts", "<table class='side'><tr>"
                   + "".join(f"<th>{_h(p)}</th>" for p in verdicts) + "</tr><tr>"
                   + "".join(_vcell(v) for v in verdicts.values()) + "</tr></table>"))
    if diagnosis_text(c):
        kv.append(("diagnosis", f"<b>{_h(c.diagnosis_kind)}</b>"
                   + (f": {_h(c.diagnosis)}" if c.diagnosis else "")))
    if settle_text(c):
        kv.append(("to settle", _h(settle_text(c))))
    if c.note:
        kv.append(("note", _h(c.note)))
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in kv)
    fig = _figure_path(s, c)
    figure = (f"<figure><img src='{_h(fig)}' alt='{_h(c.ref)}' loading='eager'>"
              f"<figcaption>{_h(c.ref)}</figcaption></figure>" if fig else "")
    return (f"<div class='claim' id='{_h(s.claim_anchor(i))}' "
            f"{_data(c.paper, list(verdicts.values()))}><div class='text'>"
            f"<p>{_vcell(c.verdict, 'span')} <b>{_h(c.ref)}</b>: {_h(c.claim)}</p>"
            f"<table class='kv'>{rows}</table></div>{figure}</div>")


def _html_section(s: Section) -> list[str]:
    cfg = s.cfg
    parts = [f"<section class='exp' id='{_h(s.anchor)}' data-paper='{_h(cfg.paper)}'>",
             f"<h2>{_h(cfg.experiment)}</h2>"]
    if s.variant:
        parts.append(f"<p class='warn'>Variant <code>{_h(s.variant)}</code> of the paper's "
                     f"set-up: its verdicts are not the paper's and are not counted.</p>")
    if s.refs:
        parts.append(f"<p class='refs'>Reproduces <b>{_h(', '.join(s.refs))}</b>.</p>")
    if s.shipped:
        parts.append(f"<p class='shipped'><b>Shipped: not run in this store.</b> Paper <code>"
                     f"{_h(cfg.paper)}</code>, <code>{_h(cfg.profile)}</code> from <code>"
                     f"{_h(s.shipped)}</code>, config <code>{_h(cfg.cfg_hash)}</code>, analysed "
                     f"{_h(cfg.analyzed)}.</p>")
    else:
        parts.append(f"<p>Paper <code>{_h(cfg.paper)}</code>, profile <code>"
                     f"{_h(cfg.profile)}</code>, config <code>{_h(cfg.cfg_hash)}</code>, "
                     f"analysed {_h(cfg.analyzed)}.</p>")
    if cfg.doc:
        parts.append(f"<div class='doc'>{_h(cfg.doc)}</div>")
    for i, c in enumerate(s.claims):
        parts.append(_html_claim(s, i, c))
    if s.comparison is not None and s.comparison.shown:
        missing = s.comparison.missing_from(cfg.profile, s.claims)
        if missing:
            parts.append("<h3>Claims stored only at another profile</h3>" + _table(
                ["profile", "ref", "claim", "measured", "region", "verdict"],
                [[f"<td>{_h(p)}</td>", f"<td>{_h(c.ref)}</td>", f"<td>{_h(c.claim)}</td>",
                  f"<td>{_h(measured_text(c))}</td>", f"<td>{_h(c.expected)}</td>",
                  _vcell(c.verdict)] for p, c in missing], raw=True))
    shown = {_figure_path(s, c) for c in s.claims}
    for f in s.figures:
        if f not in shown:
            parts.append(f"<p><img src='{_h(f)}' alt='{_h(Path(f).stem)}'></p>")
    if s.shipped:
        parts.append("</section>")
        return parts
    info = {**provenance_summary(s.runs), **timing_summary(s)}
    parts.append("<h3>Provenance and timings</h3>")
    parts.append(_table(["", ""], [[k, v] for k, v in info.items()]))
    parts.append("<details><summary>config</summary><pre>"
                 + _h(json.dumps(cfg.config, indent=2, sort_keys=True)) + "</pre></details>")
    run_rows = [[r.run_id[:10], json.dumps(r.params, sort_keys=True), str(r.seed), r.status,
                 f"{r.seconds:.2f}", r.provenance.get("host", ""),
                 ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(r.metrics.items())[:8]),
                 r.reason] for r in s.runs]
    parts.append(f"<details><summary>runs ({len(s.runs)})</summary>"
                 + _table(["run", "params", "seed", "status", "seconds", "host", "metrics",
                           "reason"], run_rows) + "</details>")
    parts.append("</section>")
    return parts


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


REPORT_FILES = ("index.html", "report.md", "figures")  # what write_report owns in report/


def write_report(store: Store, results: str | Path, all_configs: bool = False,
                 notes: list[str] | None = None, reference: Reference | None = None) -> Path:
    """Write results/report/{index.html, report.md, figures/}; return the report folder.

    The whole report is built in a fresh temporary folder beside it (results/.report-<pid>-...)
    and swapped in with one atomic exchange (`ssmlab.report.swap`, which explains the mechanism
    and its fallback), so concurrent calls never delete each other's files, and a reader — or a
    kill at any moment — finds the previous complete report or the new complete one, never a mix
    or nothing (only where the exchange is unavailable may the folder be missing for an instant).
    Temporary folders of writers killed earlier are removed first. Files a user put
    into report/ besides the three above are carried over into the new folder.

    `reference` (shipped results, `ssmlab.report.reference.load_reference`): its verdicts fill
    the profiles the store lacks, marked 'paper (shipped, <date>)'; the store's claims win.
    """
    results = Path(results)
    outdir = results / "report"
    results.mkdir(parents=True, exist_ok=True)
    swap.clean_stale(outdir)
    tmp = swap.make_temp_dir(outdir)
    try:
        entries = catalog(store)
        sections = collect(store, results, tmp, all_configs, entries, reference)
        tallies = summarize(entries, reference)
        generated = now_iso()
        notes = list(notes or []) + ([reference.summary()] if reference is not None else [])
        (tmp / "report.md").write_text(render_markdown(sections, notes, generated, tallies),
                                       encoding="utf-8")
        _carry_over(outdir, tmp)
        (tmp / "index.html").write_text(render_html(sections, notes, generated, tallies),
                                        encoding="utf-8")
        swap.replace_dir(tmp, outdir)
    finally:
        # after the swap `tmp` holds the previous report (replace_dir removed it already unless
        # interrupted); before it, our partial one: either way it goes
        swap.remove_tree(tmp)
    return outdir


def _carry_over(old: Path, new: Path) -> None:
    """Copy the entries of the current report/ that ssmlab does not write (a user's notes) into
    the new folder, so that replacing the folder does not lose them. Best effort: a concurrent
    writer may be swapping `old` away while we read it; hidden entries (temporary files of older
    versions) are not carried."""
    try:
        entries = [p for p in old.iterdir() if p.name not in REPORT_FILES
                   and not p.name.startswith(".")]
    except OSError:
        return
    for p in entries:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.copytree(p, new / p.name, symlinks=True)
            else:
                shutil.copy2(p, new / p.name, follow_symlinks=False)
        except (OSError, shutil.Error):
            continue
