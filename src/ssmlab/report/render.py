"""The report, rebuilt from the results store alone: results/report/index.html and its Markdown
twin results/report/report.md.

Both list every claim of the latest analysed config of each experiment (all analysed configs with
`all_configs=True`) in one table — in the Markdown one row per claim:

    | paper | experiment | ref | claim | measured | expected | verdict |

with verdict PASS, FAIL or SKIP — followed by one section per experiment: its docstring (the
paper, figure and claim it reproduces), config JSON, claims with their figures, the runs'
provenance (ssmlab version, git commit, torch version, threads, hosts, executor) and timings.
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
from ssmlab.experiment import BUILTIN_PAPERS
from ssmlab.records import Claim
from ssmlab.report import swap
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

    @property
    def anchor(self) -> str:
        return self.cfg.experiment.replace("/", "__") + "-" + self.cfg.cfg_hash


def _paper_order(paper: str) -> int:
    return BUILTIN_PAPERS.index(paper) if paper in BUILTIN_PAPERS else len(BUILTIN_PAPERS)


def collect(store: Store, results: Path, outdir: Path, all_configs: bool = False) -> list[Section]:
    sections = []
    for cfg in store.configs(latest_only=not all_configs):
        claims = store.claims(cfg.experiment, cfg.cfg_hash)
        runs = store.runs(cfg.experiment, run_ids=cfg.run_ids)
        sec = Section(cfg, claims, runs, sweeps=store.sweeps(cfg.experiment, cfg.cfg_hash))
        src = results / cfg.figdir if cfg.figdir else None
        if src is not None and src.is_dir():
            dst = outdir / "figures" / cfg.figdir.removeprefix("figures/")
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    shutil.copy2(f, dst / f.name)
                    sec.figures.append(str((dst / f.name).relative_to(outdir)))
        sections.append(sec)
    sections.sort(key=lambda s: (_paper_order(s.cfg.paper), s.cfg.experiment, s.cfg.cfg_hash))
    return sections


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


def render_markdown(sections: list[Section], notes: list[str], generated: str) -> str:
    lines = ["# ssmlab report", ""]
    verdicts = Counter(c.verdict for s in sections for c in s.claims)
    lines.append(f"Generated {generated} by ssmlab {ssmlab.__version__}. Claims: "
                 + ", ".join(f"{verdicts.get(v, 0)} {v}" for v in ("PASS", "FAIL", "SKIP")) + ".")
    lines.append("")
    for n in notes:
        lines.append(f"- note: {_md(n)}")
    if notes:
        lines.append("")
    lines += ["## Claims", "",
              "| paper | experiment | ref | claim | measured | expected | verdict |",
              "|---|---|---|---|---|---|---|"]
    for s in sections:
        for c in s.claims:
            lines.append(f"| {_md(c.paper)} | {_md(c.experiment)} | {_md(c.ref)} | {_md(c.claim)}"
                         f" | {_md(c.measured)} | {_md(c.expected)} | {c.verdict} |")
    if not any(s.claims for s in sections):
        lines.append("| - | - | - | no claims stored yet | - | - | - |")
    lines.append("")
    for s in sections:
        cfg = s.cfg
        lines += [f"## {cfg.experiment}", "",
                  f"Paper `{cfg.paper}`, profile `{cfg.profile}`, config `{cfg.cfg_hash}`, "
                  f"analysed {cfg.analyzed}.", ""]
        if cfg.doc:
            lines += ["> " + line if line else ">" for line in cfg.doc.splitlines()]
            lines.append("")
        for c in s.claims:
            lines.append(f"- **{c.verdict}** {_md(c.ref)}: {_md(c.claim)} — measured "
                         f"{_md(c.measured)}, expected {_md(c.expected)}."
                         + (f" {_md(c.note)}" if c.note else ""))
            fig = _figure_path(s, c)
            if fig:
                lines.append(f"  ![{_md(c.ref)}]({fig})")
        shown = {_figure_path(s, c) for c in s.claims}
        for f in s.figures:
            if f not in shown:
                lines.append(f"- figure: ![{Path(f).stem}]({f})")
        lines += ["", "Provenance:", ""]
        for k, v in provenance_summary(s.runs).items():
            lines.append(f"- {k}: {_md(v)}")
        for k, v in timing_summary(s).items():
            lines.append(f"- {k}: {_md(v)}")
        lines += ["", "<details><summary>config</summary>", "", "```json",
                  json.dumps(cfg.config, indent=2, sort_keys=True), "```", "", "</details>", ""]
    return "\n".join(lines) + "\n"


# -- HTML -------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:0.85em}
.PASS{background:#d9f2d9;color:#145214;font-weight:bold}
.FAIL{background:#f8d4d4;color:#7a1010;font-weight:bold}
.SKIP{background:#eee;color:#555;font-weight:bold}
.claim{margin:1em 0;padding:0.5em 1em;border-left:4px solid #ccc}
img{max-width:100%;border:1px solid #eee} .doc{white-space:pre-wrap;color:#444}
"""


def _h(text: Any) -> str:
    return html.escape(str(text))


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    head = "".join(f"<th>{_h(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(c if raw else f"<td>{_h(c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(sections: list[Section], notes: list[str], generated: str) -> str:
    verdicts = Counter(c.verdict for s in sections for c in s.claims)
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>ssmlab report</title>",
             f"<style>{_CSS}</style></head><body><h1>ssmlab report</h1>",
             f"<p>Generated {_h(generated)} by ssmlab {_h(ssmlab.__version__)}. Claims: "
             + ", ".join(f"<span class='{v}'>{verdicts.get(v, 0)} {v}</span>"
                         for v in ("PASS", "FAIL", "SKIP")) + ". Markdown twin: "
             "<a href='report.md'>report.md</a>.</p>"]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_h(n)}</li>" for n in notes) + "</ul>")
    parts.append("<h2>Claims</h2>")
    rows = []
    for s in sections:
        for c in s.claims:
            rows.append(
                [f"<td>{_h(c.paper)}</td>",
                 f"<td><a href='#{_h(s.anchor)}'>{_h(c.experiment)}</a></td>",
                 f"<td>{_h(c.ref)}</td>", f"<td>{_h(c.claim)}</td>", f"<td>{_h(c.measured)}</td>",
                 f"<td>{_h(c.expected)}</td>", f"<td class='{c.verdict}'>{c.verdict}</td>"])
    parts.append(_table(["paper", "experiment", "ref", "claim", "measured", "expected",
                         "verdict"], rows, raw=True))
    for s in sections:
        cfg = s.cfg
        parts.append(f"<h2 id='{_h(s.anchor)}'>{_h(cfg.experiment)}</h2>")
        parts.append(f"<p>Paper <code>{_h(cfg.paper)}</code>, profile <code>{_h(cfg.profile)}"
                     f"</code>, config <code>{_h(cfg.cfg_hash)}</code>, analysed "
                     f"{_h(cfg.analyzed)}.</p>")
        if cfg.doc:
            parts.append(f"<div class='doc'>{_h(cfg.doc)}</div>")
        for c in s.claims:
            parts.append(f"<div class='claim'><p><span class='{c.verdict}'>{c.verdict}</span> "
                         f"<b>{_h(c.ref)}</b>: {_h(c.claim)}<br>measured {_h(c.measured)}; "
                         f"expected {_h(c.expected)}</p>")
            if c.note:
                parts.append(f"<pre>{_h(c.note)}</pre>")
            fig = _figure_path(s, c)
            if fig:
                parts.append(f"<img src='{_h(fig)}' alt='{_h(c.ref)}'>")
            parts.append("</div>")
        shown = {_figure_path(s, c) for c in s.claims}
        for f in s.figures:
            if f not in shown:
                parts.append(f"<p><img src='{_h(f)}' alt='{_h(Path(f).stem)}'></p>")
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
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


REPORT_FILES = ("index.html", "report.md", "figures")  # what write_report owns in report/


def write_report(store: Store, results: str | Path, all_configs: bool = False,
                 notes: list[str] | None = None) -> Path:
    """Write results/report/{index.html, report.md, figures/}; return the report folder.

    The whole report is built in a fresh temporary folder beside it (results/.report-<pid>-...)
    and swapped in with one atomic exchange (`ssmlab.report.swap`, which explains the mechanism
    and its fallback), so concurrent calls never delete each other's files, and a reader — or a
    kill at any moment — finds the previous complete report or the new complete one, never a mix
    or nothing (only where the exchange is unavailable may the folder be missing for an instant).
    Temporary folders of writers killed earlier are removed first. Files a user put
    into report/ besides the three above are carried over into the new folder.
    """
    results = Path(results)
    outdir = results / "report"
    results.mkdir(parents=True, exist_ok=True)
    swap.clean_stale(outdir)
    tmp = swap.make_temp_dir(outdir)
    try:
        sections = collect(store, results, tmp, all_configs)
        generated = now_iso()
        notes = list(notes or [])
        (tmp / "report.md").write_text(render_markdown(sections, notes, generated),
                                       encoding="utf-8")
        _carry_over(outdir, tmp)
        (tmp / "index.html").write_text(render_html(sections, notes, generated),
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
