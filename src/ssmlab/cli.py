"""The `ssmlab` command line: list, run, reproduce, status, report, claims, show, export, probe.

Bad input (unknown experiment / paper / profile / config key, a value out of range, a missing or
corrupt results file) prints one line `error: ...` on stderr and exits with code 2; nothing
stored is touched. A crash of the machinery itself exits 1 with its traceback. Experiments are
imported lazily, so `ssmlab --help` stays fast.

Results live in --results DIR (default: $SSMLAB_RESULTS, else ./results):
results/ssmlab.db, results/figures/, results/report/{index.html, report.md}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ssmlab.errors import UserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="ssmlab: reproduce the theory of selective state-space models, as executable claims.",
)

ResultsOpt = Annotated[Path | None, typer.Option(
    "--results", envvar="SSMLAB_RESULTS",
    help="results folder (ssmlab.db, figures/, report/); default ./results")]
ProfileOpt = Annotated[str, typer.Option("--profile", "-p", help="quick | paper")]
ExecutorOpt = Annotated[str, typer.Option(
    "--executor", "-e", help="local (process pool, default) | serial | dask")]
WorkersOpt = Annotated[int | None, typer.Option(
    "--workers", "-w", help="worker processes (default: number of cores)")]
SchedulerOpt = Annotated[str | None, typer.Option(
    "--scheduler", help="Dask scheduler tcp://HOST:PORT, or 'local' for a LocalCluster")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
SeedsOpt = Annotated[int | None, typer.Option("--seeds", "-s", help="seeds per grid cell")]
ReferenceOpt = Annotated[Path | None, typer.Option(
    "--reference", help="shipped claims (e.g. docs/results/paper/claims.jsonl): profiles the "
                        "store lacks are shown from it, marked 'shipped'; the store wins")]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 140  # logs and pipes: do not wrap at 80 columns
    return Console(stderr=stderr, highlight=False, width=width)


def _results(results: Path | None) -> Path:
    from ssmlab.runner.sweep import results_dir

    return results_dir(results)


class _Progress:
    """Rich progress bars: runs of each sweep, and the training steps of the current run when
    runs execute in this process (--executor serial). Nothing when quiet or not a terminal."""

    def __init__(self, quiet: bool, executor: str = "local"):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar: Any = None
        self.train_task: Any = None
        self.executor = executor
        self._token: Any = None
        self.all_task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=_console(stderr=True), transient=False)
            self.bar.__enter__()
            if self.executor == "serial":
                from ssmlab.train.trainer import PROGRESS_HOOK

                self._token = PROGRESS_HOOK.set(self._train_step)
        return self

    def _train_step(self, step: int, total: int) -> None:
        if self.train_task is None:
            self.train_task = self.bar.add_task("  training", total=total)
        if step <= 1:
            self.bar.reset(self.train_task, total=total)
        self.bar.update(self.train_task, completed=step, total=total)

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            from ssmlab.train.trainer import PROGRESS_HOOK

            PROGRESS_HOOK.reset(self._token)
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def overall(self, total: int) -> None:
        """A bar over every run of a `reproduce`, advanced by the sweeps' bars."""
        if self.bar is not None:
            self.all_task = self.bar.add_task("all experiments", total=total)

    def callback(self, label: str) -> Any:
        if self.bar is None:
            return None
        task = self.bar.add_task(label, total=None)
        seen = [0]

        def update(done: int, total: int, run: Any) -> None:
            self.bar.update(task, completed=done, total=total)
            if self.all_task is not None:
                self.bar.advance(self.all_task, done - seen[0])
            seen[0] = done

        return update


def _run_one(exp_id: str, *, profile: str, config_file: Path | None, overrides: list[str],
             seeds: int | None, results: Path, executor: str, workers: int | None,
             scheduler: str | None, progress: _Progress, store: Any) -> Any:
    from ssmlab.runner.sweep import run_sweep

    return run_sweep(exp_id, profile=profile, config_file=config_file, overrides=overrides,
                     seeds=seeds, results=results, store=store, executor=executor,
                     workers=workers, scheduler=scheduler, progress=progress.callback(exp_id))


def _claims_table(results: list[Any], title: str) -> Any:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for col in ("paper", "experiment", "ref", "measured", "expected", "verdict"):
        t.add_column(col, overflow="fold")
    from rich.text import Text

    for r in results:
        for c in r.claims:  # Text: an experiment's "[...]" must not be read as rich markup
            t.add_row(*(Text(x) for x in (c.paper, c.experiment, c.ref, c.measured, c.expected)),
                      Text(c.verdict, style=VERDICT_STYLE.get(c.verdict, "")))
    return t


VERDICT_STYLE = {"PASS": "bold green", "FAIL": "bold red", "INCONCLUSIVE": "bold yellow",
                 "SKIP": "dim"}


def _sweep_line(r: Any) -> str:
    st = ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items()))
    return (f"{r.experiment} [{r.profile}] config {r.cfg_hash}: {r.total} runs "
            f"({r.cached} reused, {r.ran} ran"
            + (f", {r.others} by another process" if r.others else "")
            + f"; {st}) in {r.seconds:.1f} s")


@app.command("list")
def list_cmd(
    paper: Annotated[list[str] | None, typer.Argument(help="papers to list (default: all)")] = None,
) -> None:
    """List registered experiments: id, paper, reference, profiles, number of runs."""
    from rich.table import Table
    from rich.text import Text

    from ssmlab.runner.registry import experiments_of, load_errors, resolve_config
    from ssmlab.runner.sweep import plan

    groups = experiments_of(paper)
    t = Table(title="ssmlab experiments")
    for col in ("id", "reproduces", "profiles (runs)", "module"):
        t.add_column(col, overflow="fold")
    for exps in groups.values():
        for cls in exps:
            doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
            sizes = []
            for prof in cls.profiles:
                try:
                    sizes.append(f"{prof} ({len(plan(cls(), resolve_config(cls, prof)))})")
                except Exception as e:  # a broken profile must still be listed
                    sizes.append(f"{prof} (invalid: {str(e).splitlines()[0][:60]})")
            t.add_row(Text(cls.id), Text(doc[:200] + ("…" if len(doc) > 200 else "")),
                      Text(", ".join(sizes)), Text(cls.__module__))
    con = _console()
    con.print(t)
    for p, exps in groups.items():
        if not exps:
            con.print(f"no experiments yet for {p}")
    for mod, err in load_errors().items():
        _console(stderr=True).print(f"warning: {mod} failed to import: {err}", markup=False)


@app.command("run")
def run_cmd(
    experiment: Annotated[str, typer.Argument(help="experiment id, e.g. builtin/mixers")],
    profile: ProfileOpt = "quick",
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="YAML/JSON file merged over the profile")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="override a config key: --set train.lr=0.01 (repeatable)")] = None,
    seeds: SeedsOpt = None,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    results: ResultsOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Run (or resume) one experiment's sweep, analyse it, print its claims.

    Exits 1 when runs failed (they are stored as failed and retried by the next run)."""
    from ssmlab.runner.registry import get_experiment, resolve_config
    from ssmlab.runner.store import Store
    from ssmlab.runner.sweep import preflight

    res = _results(results)
    cls = get_experiment(experiment)
    cfg = resolve_config(cls, profile, config, list(set_ or []), seeds)
    preflight(cls, cfg, executor, workers, scheduler)  # every user-input check before the store
    with Store.open(res) as store, _Progress(quiet, executor) as prog:
        r = _run_one(experiment, profile=profile, config_file=config, overrides=list(set_ or []),
                     seeds=seeds, results=res, executor=executor, workers=workers,
                     scheduler=scheduler, progress=prog, store=store)
        db = store.path
    con = _console()
    con.print(_sweep_line(r), markup=False)
    con.print(_claims_table([r], f"claims of {r.experiment}"))
    con.print(f"figures: {r.figdir}   store: {db}   report: ssmlab report",
              markup=False)
    if r.failed:
        _fail(f"{r.failed} of {r.total} runs of {r.experiment} failed; `ssmlab show RUN` has "
              f"their errors, rerun to retry them")


def _fail(message: str) -> None:
    """Runs or experiments failed: say so on stderr and exit 1 (2 is kept for bad input)."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    raise typer.Exit(1)


@app.command("reproduce")
def reproduce_cmd(
    papers: Annotated[list[str] | None, typer.Argument(
        help="papers: filtering icl_outliers generalization selectivity builtin (default: all)")]
    = None,
    profile: ProfileOpt = "quick",
    seeds: SeedsOpt = None,
    executor: ExecutorOpt = "local",
    workers: WorkersOpt = None,
    scheduler: SchedulerOpt = None,
    results: ResultsOpt = None,
    quiet: QuietOpt = False,
    reference: ReferenceOpt = None,
) -> None:
    """Run every experiment of the given papers, print the claims, write the report.

    Exits 0 even when claims FAIL (a FAIL is a finding); 1 when an experiment crashed (its
    package failed to import, or its sweep raised) or runs failed, after running the others and
    writing the report; 2 for bad input (checked for every experiment before anything runs)."""
    import traceback

    from ssmlab.experiment import MAX_SEEDS
    from ssmlab.report.reference import load_reference
    from ssmlab.report.render import write_report
    from ssmlab.runner.executors import check_executor
    from ssmlab.runner.registry import experiments_of, load_errors, paper_packages, resolve_config
    from ssmlab.runner.store import Store
    from ssmlab.runner.sweep import plan, preflight

    res = _results(results)
    ref = load_reference(reference) if reference is not None else None
    groups = experiments_of(papers)
    check_executor(executor, workers, scheduler)
    known = {p for exps in groups.values() for cls in exps for p in cls.profiles}
    if profile not in (known or {"quick", "paper"}):
        raise UserError(f"unknown profile {profile!r}; profiles: {', '.join(sorted(known))}")
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be in 1..{MAX_SEEDS}, got {seeds}")
    broken: dict[str, tuple[Exception, str]] = {}
    n_runs = 0
    for exps in groups.values():  # every experiment's checks before the store is touched
        for cls in exps:
            cfg = resolve_config(cls, profile, seeds=seeds)
            try:
                preflight(cls, cfg, executor, workers, scheduler)
                n_runs += len(plan(cls(), cfg))
            except UserError:
                raise
            except Exception as e:  # a bug in one experiment: report it, run the others
                broken[cls.id] = (e, traceback.format_exc())
    con, err_con = _console(), _console(stderr=True)
    notes: list[str] = []
    crashed: list[str] = []
    for mod, err in load_errors().items():
        paper = {pkg: p for p, pkg in paper_packages().items()}.get(mod)
        if paper is None or paper in groups:  # a plugin, or a paper asked for
            crashed.append(mod)
            notes.append(f"{mod} failed to import: {err}")
            err_con.print(f"error: {mod} failed to import: {err}", markup=False)
    done = []
    with Store.open(res) as store:
        with _Progress(quiet, executor) as prog:
            prog.overall(n_runs)
            for paper, exps in groups.items():
                if not exps:
                    con.print(f"no experiments yet for {paper}", markup=False)
                    notes.append(f"no experiments yet for {paper}")
                for cls in exps:
                    try:
                        if cls.id in broken:
                            raise broken[cls.id][0]
                        r = _run_one(cls.id, profile=profile, config_file=None, overrides=[],
                                     seeds=seeds, results=res, executor=executor,
                                     workers=workers, scheduler=scheduler, progress=prog,
                                     store=store)
                    except Exception as e:  # one broken experiment must not stop the others
                        crashed.append(cls.id)
                        notes.append(f"{cls.id} crashed: {type(e).__name__}: {e}")
                        err_con.print(f"error: {cls.id} crashed: {type(e).__name__}: {e}",
                                      markup=False)
                        if not quiet:
                            tb = broken[cls.id][1] if cls.id in broken else \
                                traceback.format_exc()
                            err_con.print(tb, markup=False)
                        continue
                    con.print(_sweep_line(r), markup=False)
                    done.append(r)
        out = write_report(store, store.folder, notes=notes, reference=ref)
    con.print(_claims_table(done, f"claims ({profile} profile)"))
    con.print(f"report: {out / 'index.html'}  and  {out / 'report.md'}", markup=False)
    failed = [f"{r.experiment} ({r.failed} of {r.total})" for r in done if r.failed]
    if crashed or failed:
        _fail("; ".join(
            ([f"{len(crashed)} experiment(s) crashed: {', '.join(crashed)}"] if crashed else [])
            + ([f"runs failed in {', '.join(failed)}; rerun to retry them"] if failed else [])))


@app.command("status")
def status_cmd(
    papers: Annotated[list[str] | None, typer.Argument(
        help="papers (default: all)")] = None,
    profile: Annotated[list[str] | None, typer.Option(
        "--profile", "-p", help="profiles to show (default: quick and paper)")] = None,
    workers: WorkersOpt = None,
    results: ResultsOpt = None,
) -> None:
    """Per experiment and profile: runs done / total, skipped and failed, and the time left
    (each run still to do priced at its cell's mean time so far, or by the experiment's
    relative cost where its cell has none, over the workers)."""
    import os

    from rich.table import Table
    from rich.text import Text

    from ssmlab.runner.progress import sweep_progress
    from ssmlab.runner.registry import experiments_of
    from ssmlab.runner.store import Store

    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    groups = experiments_of(papers)
    profiles = list(profile or ("quick", "paper"))
    res = _results(results)
    nworkers = workers or os.cpu_count() or 1
    t = Table(title=f"ssmlab status ({res}, {nworkers} workers)")
    for col in ("experiment", "profile", "done / total", "skipped", "failed", "per run",
                "time left"):
        t.add_column(col, justify="left" if col in ("experiment", "profile") else "right")
    with Store.open(res, create=False) as store:
        for exps in groups.values():
            for cls in exps:
                for prof in profiles:
                    if prof not in cls.profiles:
                        raise UserError(f"unknown profile {prof!r} for {cls.id}; profiles: "
                                        f"{', '.join(cls.profiles)}")
                    p = sweep_progress(store, cls, prof, nworkers)
                    left = "done" if not p.todo else _duration(p.seconds_left)
                    t.add_row(Text(p.experiment), Text(p.profile), f"{p.done} / {p.total}",
                              str(p.skipped or ""), str(p.failed or ""),
                              _duration(p.seconds_per_run), left)
    _console().print(t)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command("report")
def report_cmd(
    results: ResultsOpt = None,
    all_configs: Annotated[bool, typer.Option(
        "--all", help="every analysed config, not only the latest per experiment")] = False,
    reference: ReferenceOpt = None,
) -> None:
    """Rewrite results/report/index.html and report.md from the store (and --reference)."""
    from ssmlab.report.reference import load_reference
    from ssmlab.report.render import write_report
    from ssmlab.runner.store import Store

    res = _results(results)
    ref = load_reference(reference) if reference is not None else None
    with Store.open(res, create=False) as store:
        out = write_report(store, store.folder, all_configs=all_configs, reference=ref)
    _console().print(f"report: {out / 'index.html'}  and  {out / 'report.md'}", markup=False)


@app.command("claims")
def claims_cmd(
    papers: Annotated[list[str] | None, typer.Argument(
        help="papers (default: every paper in the store)")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="one JSON object per claim and line: id, paper, experiment, ref, "
                       "statement, paper_value, measured, ci_low, ci_high, tolerance, "
                       "tolerance_source, verdict, diagnosis")] = False,
    profile: Annotated[str | None, typer.Option(
        "--profile", "-p", help="only configs of this profile (default: the latest analysed "
                                "config per experiment, whatever its profile)")] = None,
    variants: Annotated[bool, typer.Option(
        "--variants", help="also the claims of variants of the papers' set-ups (e.g. another "
                           "mixer); with --json each record then ends with 'variant'")] = False,
    export: Annotated[Path | None, typer.Option(
        "--export", help="write a reference file instead (JSON lines: a header, then one "
                         "stored claim per line with its profile and config hash): the latest "
                         "analysed config of each experiment at each profile (only --profile's "
                         "when given); `report --reference` reads it")] = None,
    merge: Annotated[bool, typer.Option(
        "--merge", help="with --export: keep the existing file's claims of experiments this "
                        "export does not hold (an experiment exported again replaces its old "
                        "claims), so papers run at different times ship in one file")] = False,
    results: ResultsOpt = None,
) -> None:
    """The claims of the latest analysed config of each experiment, with their verdicts: the
    paper's number, ours with its 95% interval, the region, the diagnosis. Never writes the
    store."""
    from rich.table import Table
    from rich.text import Text

    from ssmlab.report.verdicts import (
        catalog,
        claim_json,
        diagnosis_text,
        latest,
        measured_text,
        paper_rank,
        settle_text,
    )
    from ssmlab.runner.registry import known_papers, paper_packages
    from ssmlab.runner.store import Store

    if export is not None and as_json:
        raise UserError("--export writes a file and --json prints: give one of them")
    if merge and export is None:
        raise UserError("--merge only goes with --export FILE")
    with Store.open(_results(results), create=False, readonly=True) as store:
        entries = catalog(store)
        where = store.path
    stored_profiles = {e.cfg.profile for e in entries} | {"quick", "paper"}
    if profile is not None and profile not in stored_profiles:
        raise UserError(f"unknown profile {profile!r}; profiles: "
                        f"{', '.join(sorted(stored_profiles))}")
    stored_papers = {e.cfg.paper for e in entries}
    wanted = list(dict.fromkeys(papers or []))
    if any(p not in stored_papers and p not in paper_packages() for p in wanted):
        known = list(dict.fromkeys([*known_papers(), *sorted(stored_papers)]))  # imports papers
        for p in wanted:
            if p not in known:
                raise UserError(f"unknown paper {p!r}; papers: {', '.join(known)}")
    if export is not None:
        return _export_claims(entries, export, wanted, profile, variants, where, merge)
    shown = sorted((e for e in latest(entries, profile)
                    if (not wanted or e.cfg.paper in wanted) and (variants or not e.variant)),
                   key=lambda e: (paper_rank(e.cfg.paper), e.cfg.experiment, e.variant))
    if as_json:
        for e in shown:
            for c in e.claims:
                typer.echo(json.dumps(claim_json(c, with_variant=variants), ensure_ascii=False))
        return
    con = _console()
    rows = [(e, c) for e in shown for c in e.claims]
    if not rows:
        con.print(f"no analysed claims in {where}"
                  + (f" for {', '.join(wanted)}" if wanted else "")
                  + (f" at profile {profile}" if profile else ""), markup=False)
        return
    cells: dict[str, Any] = {  # column -> cell of one claim; Text: "[...]" is not markup
        "experiment": lambda e, c: Text(e.cfg.experiment + (
            f" [variant {e.variant}]" if e.variant else "")),
        "profile": lambda e, c: Text(e.cfg.profile),
        "ref": lambda e, c: Text(c.ref),
        "claim": lambda e, c: Text(c.claim),
        "paper's number": lambda e, c: Text(c.paper_value or "-"),
        "measured": lambda e, c: Text(measured_text(c)),
        "region": lambda e, c: Text(c.expected),
        "verdict": lambda e, c: Text(c.verdict, style=VERDICT_STYLE.get(c.verdict, "")),
        "diagnosis": lambda e, c: Text(diagnosis_text(c) or settle_text(c) or "-"),
    }
    if profile:
        del cells["profile"]
    for col in ("paper's number", "diagnosis"):  # a column no claim fills only takes room
        if all(cells[col](e, c).plain == "-" for e, c in rows):
            del cells[col]
    t = Table(title="claims of the latest analysed config per experiment"
                    + (f" at profile {profile}" if profile else "") + f" in {where}")
    for col in cells:  # ids and verdicts whole; the texts share the rest of the width
        t.add_column(col, overflow="fold", no_wrap=col in ("experiment", "profile", "verdict"))
    for e, c in rows:
        t.add_row(*(cell(e, c) for cell in cells.values()))
    con.print(t)


def _export_claims(entries: list[Any], path: Path, papers: list[str], profile: str | None,
                   variants: bool, where: Path, merge: bool = False) -> None:
    """`claims --export`: the latest analysed config of each (experiment, variant) at each
    profile, as a reference file (ssmlab.report.reference); with `merge`, plus the existing
    file's configs of the experiments the export does not hold."""
    from ssmlab.report.reference import RefConfig, load_reference, write_reference
    from ssmlab.report.verdicts import latest_per_profile, paper_rank, profile_order
    from ssmlab.runner.store import now_iso

    configs = []
    for (_exp, variant), by in latest_per_profile(entries).items():
        for prof in profile_order(by):
            e = by[prof]
            if ((profile is None or prof == profile) and (variants or not variant)
                    and (not papers or e.cfg.paper in papers) and e.claims):
                configs.append(RefConfig(prof, e.cfg.experiment, e.cfg.cfg_hash,
                                         e.cfg.analyzed or "", e.claims))
    if not configs:
        raise UserError(f"no analysed claims to export in {where}"
                        + (f" for {', '.join(papers)}" if papers else "")
                        + (f" at profile {profile}" if profile else ""))
    kept = 0
    if merge and path.exists():
        fresh = {rc.experiment for rc in configs}
        old = [rc for rc in load_reference(path).configs if rc.experiment not in fresh]
        configs += old
        kept = sum(len(rc.claims) for rc in old)
    configs.sort(key=lambda rc: (paper_rank(rc.paper), rc.experiment, rc.variant,
                                 profile_order({rc.profile, "quick", "paper"}).index(rc.profile)))
    n = write_reference(configs, path, now_iso())
    profs = ", ".join(profile_order({rc.profile for rc in configs}))
    _console().print(f"exported {n} claims of {len(configs)} configs ({profs}) to {path}"
                     + (f", {kept} of them kept from the file" if merge else ""), markup=False)


@app.command("show")
def show_cmd(
    run: Annotated[str, typer.Argument(help="run id or a unique prefix of it")],
    results: ResultsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the full record as JSON")] = False,
) -> None:
    """Show one stored run: key, status, config, params, metrics, history, provenance."""
    from dataclasses import asdict

    from rich.table import Table
    from rich.text import Text

    from ssmlab.runner.store import Store

    with Store.open(_results(results), create=False) as store:
        r = store.find_run(run)
    if as_json:
        typer.echo(json.dumps(asdict(r), indent=2, sort_keys=True, default=str))
        return
    con = _console()
    t = Table(title=f"run {r.run_id}", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("experiment", r.experiment), ("status", r.status), ("seed", str(r.seed)),
        ("params", json.dumps(r.params, sort_keys=True)), ("cell hash", r.cell_hash),
        ("config key", r.cfg_key), ("seconds", f"{r.seconds:.3f}"),
        ("started", str(r.started)), ("finished", str(r.finished)),
        ("attempts", str(r.attempts)),
    ]
    if r.reason:
        rows.append(("reason", r.reason))
    for k, v in sorted(r.metrics.items()):
        rows.append((f"metric {k}", f"{v:.6g}" if isinstance(v, float) else json.dumps(v)))
    for k, v in sorted(r.history.items()):
        last = v[-1] if v else None
        rows.append((f"history {k}", f"{len(v)} points, last {last!r}"))
    for k, v in sorted(r.info.items()):
        rows.append((f"info {k}", json.dumps(v)[:200]))
    for k, v in sorted(r.provenance.items()):
        rows.append((f"provenance {k}", str(v)))
    rows.append(("config", json.dumps(r.config, sort_keys=True)))
    for k, v in rows:
        t.add_row(Text(k), Text(v))
    con.print(t, markup=False)
    if r.error and r.status == "failed":
        con.print(r.error, markup=False)


@app.command("export")
def export_cmd(
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="csv | parquet (default: from -o's suffix, else csv)")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="output file (default: results/runs.<format>)")] = None,
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="only this experiment id (or paper prefix ending in '/')")] = None,
    histories: Annotated[bool, typer.Option(
        "--histories", help="add each run's history as a JSON column")] = False,
    results: ResultsOpt = None,
) -> None:
    """Export the runs table (one row per run, params / metrics flattened) for pandas & co."""
    from ssmlab.runner.export import export_runs
    from ssmlab.runner.store import Store

    res = _results(results)
    if fmt is None:
        fmt = "parquet" if out is not None and out.suffix.lower() in (".parquet", ".pq") else "csv"
    if fmt not in ("csv", "parquet"):
        raise UserError(f"unknown export format {fmt!r}; formats: csv, parquet")
    with Store.open(res, create=False) as store:
        path = out or store.folder / f"runs.{fmt}"
        n = export_runs(store, path, fmt, experiment=experiment, histories=histories)
    _console().print(f"exported {n} runs to {path}", markup=False)


@app.command("archive")
def archive_cmd(
    out: Annotated[Path, typer.Argument(help="archive file to write, NAME.jsonl.gz")],
    experiment: Annotated[str | None, typer.Option(
        "--experiment", help="only this experiment id (or paper prefix ending in '/')")] = None,
    results: ResultsOpt = None,
) -> None:
    """Write the finished runs to an archive that `ssmlab restore` loads into another store."""
    from ssmlab.runner.archive import archive_runs
    from ssmlab.runner.store import Store

    with Store.open(_results(results), create=False) as store:
        n = archive_runs(store, out, experiment=experiment)
    _console().print(f"archived {n} finished runs to {out}", markup=False)


@app.command("restore")
def restore_cmd(
    archive: Annotated[Path, typer.Argument(help="an archive written by `ssmlab archive`")],
    results: ResultsOpt = None,
) -> None:
    """Load an archive's runs into the store; runs finished there already are kept."""
    from ssmlab.runner.archive import read_archive, restore_runs
    from ssmlab.runner.store import Store

    runs = read_archive(archive)  # a missing or corrupt archive fails before a store is made
    with Store.open(_results(results)) as store:
        added, kept = restore_runs(store, runs)
    _console().print(f"restored {added} runs from {archive} ({kept} already in the store, kept)",
                     markup=False)


@app.command("probe")
def probe_cmd(
    path: Annotated[Path, typer.Argument(
        help="a local checkpoint: a transformers directory (config.json + model.safetensors, "
             "Mamba or Mamba-2) or a mamba_ssm state dict; never a hub id")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")],
    text_file: Annotated[Path | None, typer.Option(
        "--text-file", help="UTF-8 text, tokenised with tokenizer.json beside the model")] = None,
    tokens: Annotated[str | None, typer.Option(
        "--tokens", help="comma-separated token ids, e.g. 1,2,3")] = None,
    layers: Annotated[str | None, typer.Option(
        "--layers", help="layer indices and ranges, e.g. 0,5,10-12 (default: all)")] = None,
    channels: Annotated[str | None, typer.Option(
        "--channels", help="channels (Mamba) or heads (Mamba-2) to draw, e.g. 0,7,42 "
                           "(default: 8 evenly spaced)")] = None,
    quiet: QuietOpt = False,
) -> None:
    """The papers' quantities on a real checkpoint: per layer the spectrum of A, where Δ opens,
    implied attention, memory factors and the capacity term; writes index.html + probe.json."""
    from ssmlab.interop.cli import probe_command

    page = probe_command(path, out, text_file, tokens, layers, channels, quiet)
    _console().print(f"probe: {page}  and  {page.parent / 'probe.json'}", markup=False)


INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def one_line(text: str) -> str:
    """Error messages are one line (a wrapped library message must not become several)."""
    return " ".join(text.split())


def _click_exceptions() -> Any:
    """typer >= 0.2x vendors click as typer._click; older ones use click itself."""
    try:
        from typer._click import exceptions as ce
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions as ce
    return ce


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for bad input."""
    ce = _click_exceptions()
    no_args = getattr(ce, "NoArgsIsHelpError", ())
    try:
        rc = app(args=argv, standalone_mode=False, prog_name="ssmlab")
    except UserError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(2)
    except no_args as e:  # `ssmlab` alone: the help, exit 0
        print(e.ctx.get_help() if e.ctx else "")
        sys.exit(0)
    except ce.ClickException as e:  # usage errors: unknown option, missing argument, bad type
        print(f"error: {one_line(e.format_message())}", file=sys.stderr)
        sys.exit(2)
    except (typer.Exit, getattr(ce, "Exit", typer.Exit)) as e:
        sys.exit(getattr(e, "exit_code", 0))
    except (typer.Abort, getattr(ce, "Abort", typer.Abort), KeyboardInterrupt):
        rc = INTERRUPTED
    if rc == INTERRUPTED:  # typer turns Ctrl-C into a returned 130 when not standalone
        print("interrupted: finished runs are stored; rerun to resume", file=sys.stderr)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    main()
