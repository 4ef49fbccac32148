"""Bad input, table-driven: each row is a command a user might type wrongly. Every one must exit
with code 2, print exactly one line on stderr (`error: ...` naming the problem, no traceback),
and leave the results directory as it was: byte-identical, or absent if it was absent.

States of the results directory before the command:
    absent   --results points to a path that does not exist
    store    a valid store holding one finished sweep of builtin/test_sleepy
    corrupt  ssmlab.db holds random bytes
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from ssmlab.cli import main
from ssmlab.runner.testing import registered_test_experiments

SLEEPY = "builtin/test_sleepy"


@pytest.fixture(autouse=True)
def _exps():
    with registered_test_experiments():
        yield


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """One stored sweep, copied for each test that needs a store."""
    root = tmp_path_factory.mktemp("template")
    with registered_test_experiments(), pytest.raises(SystemExit) as e:
        main(["run", SLEEPY, "-e", "serial", "-q", "--results", str(root)])
    assert e.value.code == 0
    return root


def tree(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file()
            else "dir" for p in sorted(path.rglob("*"))}


def _sqlite(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    con.executescript(sql)
    con.close()


def _schema(value: str):
    def setup(res: Path) -> None:
        _sqlite(res / "ssmlab.db", f"UPDATE meta SET value='{value}' WHERE key='schema_version'")
    return setup


def _other_sqlite(res: Path) -> None:
    res.mkdir()
    _sqlite(res / "ssmlab.db", "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")


def _files(res: Path) -> None:
    """Bad input files beside the (absent) results dir: configs, a file where a dir belongs."""
    side = res.parent
    (side / "latin1.yaml").write_bytes("n_cells: 3  # café\n".encode("latin-1"))
    (side / "bad.yaml").write_text("n_cells: [1, 2\n")
    (side / "list.yaml").write_text("- 1\n- 2\n")
    (side / "unknown.yaml").write_text("n_cells: 3\nbogus: 1\n")
    (side / "nested.yaml").write_text("train:\n  bogus: 1\n")
    (side / "cfgdir").mkdir(exist_ok=True)
    (side / "afile").write_text("not a directory\n")
    (side / "outdir").mkdir(exist_ok=True)
    head = '{"format": "ssmlab-claims", "version": 1, "generated": "2025-06-01T12:00:00"}\n'
    (side / "notjson.jsonl").write_text(head + "{not json\n")
    (side / "noheader.jsonl").write_text('{"profile": "paper"}\n')
    (side / "badclaim.jsonl").write_text(head + '{"profile": "paper", "experiment": "a/b", '
                                         '"cfg_hash": "x", "claim": {"paper": "a"}}\n')
    (side / "newer.jsonl").write_text('{"format": "ssmlab-claims", "version": 7}\n')
    (side / "notgz.jsonl.gz").write_bytes(b"not gzip")
    (side / "notrun.jsonl.gz").write_bytes(gzip.compress(b'{"run_id": "x"}\n'))


# (id, state, argv (RES = the results dir, SIDE = its parent), env, needle in the message)
CASES = [
    # -- run: experiment, profile, overrides ----------------------------------------------------
    ("unknown-experiment", "store", ["run", "builtin/nope"], {}, "unknown experiment 'builtin/nope'"),
    ("unknown-paper-exp", "store", ["run", "nopaper/x"], {}, "unknown experiment 'nopaper/x'"),
    ("unknown-profile", "store", ["run", SLEEPY, "-p", "huge"], {}, "unknown profile 'huge'"),
    ("unknown-key", "store", ["run", SLEEPY, "--set", "bogus=1"], {}, "unknown config key 'bogus'"),
    ("unknown-nested-key", "store", ["run", "builtin/mixers", "--set", "train.bogus=1"], {},
     "unknown config key 'train.bogus'"),
    ("override-syntax", "store", ["run", SLEEPY, "--set", "novalue"], {}, "key=value"),
    ("override-not-section", "store", ["run", SLEEPY, "--set", "seeds.x=1"], {},
     "'seeds' is not a section"),
    ("seeds-zero", "store", ["run", SLEEPY, "--seeds", "0"], {}, "--seeds must be in 1..1000"),
    ("seeds-negative", "store", ["run", SLEEPY, "--seeds", "-3"], {}, "--seeds must be in"),
    ("seeds-huge", "absent", ["run", SLEEPY, "--seeds", "1000000000"], {}, "--seeds must be in"),
    ("seeds-not-int", "store", ["run", SLEEPY, "--seeds", "abc"], {}, "Invalid value for '--seeds'"),
    ("set-seeds-bool", "store", ["run", SLEEPY, "--set", "seeds=true"], {},
     "invalid config value for 'seeds'"),
    ("set-seeds-float", "store", ["run", SLEEPY, "--set", "seeds=2.5"], {},
     "invalid config value for 'seeds'"),
    ("set-seeds-huge", "absent", ["run", SLEEPY, "--set", "seeds=1000000000"], {},
     "invalid config value for 'seeds'"),
    ("seed-offset-negative", "store", ["run", SLEEPY, "--set", "seed_offset=-1"], {},
     "invalid config value for 'seed_offset'"),
    ("nan", "store", ["run", SLEEPY, "--set", "sleep=.nan"], {}, "'sleep': Input should be a finite"),
    ("inf", "store", ["run", SLEEPY, "--set", "sleep=.inf"], {}, "'sleep': Input should be a finite"),
    ("negative-float", "store", ["run", SLEEPY, "--set", "sleep=-1"], {},
     "invalid config value for 'sleep'"),
    ("size-zero", "absent", ["run", SLEEPY, "--set", "n_cells=0"], {},
     "invalid config value for 'n_cells'"),
    ("size-negative", "store", ["run", SLEEPY, "--set", "n_cells=-5"], {},
     "invalid config value for 'n_cells'"),
    ("size-bool", "store", ["run", SLEEPY, "--set", "n_cells=true"], {},
     "invalid config value for 'n_cells'"),
    ("size-string", "store", ["run", SLEEPY, "--set", "n_cells=abc"], {},
     "invalid config value for 'n_cells'"),
    ("size-list", "store", ["run", SLEEPY, "--set", "n_cells=[1, 2]"], {},
     "invalid config value for 'n_cells'"),
    ("size-float", "store", ["run", SLEEPY, "--set", "n_cells=2.5"], {},
     "invalid config value for 'n_cells'"),
    ("mixer-name", "store", ["run", "builtin/mixers", "--set", "mixers=[s6, nope]"], {},
     "invalid config value for 'mixers.1': Input should be 's6'"),
    ("optimizer-name", "store", ["run", "builtin/mixers", "--set", "train.optimizer=nope"], {},
     "invalid config value for 'train.optimizer'"),
    ("length-huge", "absent", ["run", "filtering/alignment", "--set", "data.L=1000000000"], {},
     "data.L"),
    ("length-zero", "store", ["run", "filtering/alignment", "--set", "data.L=0"], {}, "data.L"),
    ("length-negative", "absent", ["run", "selectivity/recall", "--set", "data.seq_len=-1"], {},
     "data.seq_len"),
    ("grid-empty", "store", ["run", "icl_outliers/tolerance", "--set", "alphas=[]"], {}, "alphas"),
    ("grid-element", "store", ["run", "generalization/length_majority", "--set", "T_values=[0]"],
     {}, "T_values"),
    ("grid-duplicate", "store", ["run", "icl_outliers/tolerance", "--set", "alphas=[0.1, 0.1]"],
     {}, "alphas"),
    # -- run: config files ----------------------------------------------------------------------
    ("config-missing", "store", ["run", SLEEPY, "--config", "SIDE/none.yaml"], {},
     "config file not found"),
    ("config-not-utf8", "store", ["run", SLEEPY, "--config", "SIDE/latin1.yaml"], {},
     "is not UTF-8"),
    ("config-bad-yaml", "store", ["run", SLEEPY, "--config", "SIDE/bad.yaml"], {},
     "is not valid YAML/JSON"),
    ("config-list", "store", ["run", SLEEPY, "--config", "SIDE/list.yaml"], {},
     "must hold a mapping"),
    ("config-directory", "store", ["run", SLEEPY, "--config", "SIDE/cfgdir"], {},
     "is not a regular file"),
    ("config-unknown-key", "absent", ["run", SLEEPY, "--config", "SIDE/unknown.yaml"], {},
     "unknown config key 'bogus'"),
    ("config-nested-key", "store", ["run", "builtin/mixers", "--config", "SIDE/nested.yaml"], {},
     "unknown config key 'train.bogus'"),
    # -- run: executors, memory, plugins ------------------------------------------------------
    ("executor", "absent", ["run", SLEEPY, "-e", "gpu"], {}, "unknown executor 'gpu'"),
    ("workers-zero", "absent", ["run", SLEEPY, "-w", "0"], {}, "--workers must be >= 1"),
    ("workers-negative", "store", ["run", SLEEPY, "-w", "-2"], {}, "--workers must be >= 1"),
    ("scheduler-without-dask", "absent", ["run", SLEEPY, "--scheduler", "tcp://x:1"], {},
     "--scheduler is only used with --executor dask"),
    ("dask-without-scheduler", "absent", ["run", SLEEPY, "-e", "dask"], {},
     "needs --scheduler"),
    ("dask-unreachable", "absent", ["run", SLEEPY, "-e", "dask", "--scheduler", "tcp://127.0.0.1:1"],
     {}, "cannot reach Dask scheduler"),
    ("memory", "absent", ["run", "builtin/mixers"], {"SSMLAB_MEMORY_LIMIT": "1K"},
     "estimated peak memory"),
    ("memory-store", "store", ["run", "filtering/alignment"], {"SSMLAB_MEMORY_LIMIT": "1K"},
     "estimated peak memory"),
    ("memory-env", "absent", ["run", "builtin/mixers"], {"SSMLAB_MEMORY_LIMIT": "lots"},
     "SSMLAB_MEMORY_LIMIT='lots' is not a size"),
    ("plugin-missing", "absent", ["run", SLEEPY], {"SSMLAB_PLUGINS": "no_such_module_xyz"},
     "SSMLAB_PLUGINS names module 'no_such_module_xyz'"),
    # -- the results directory ----------------------------------------------------------------
    ("results-is-file", "file", ["run", SLEEPY], {}, "RES"),
    ("results-under-file", "absent", ["run", SLEEPY, "--results", "SIDE/afile/sub"], {}, "afile"),
    ("corrupt-run", "corrupt", ["run", SLEEPY], {}, "is not a valid ssmlab store"),
    ("corrupt-report", "corrupt", ["report"], {}, "is not a valid ssmlab store"),
    ("corrupt-show", "corrupt", ["show", "ab"], {}, "is not a valid ssmlab store"),
    ("corrupt-export", "corrupt", ["export", "-o", "SIDE/x.csv"], {}, "is not a valid ssmlab store"),
    ("corrupt-reproduce", "corrupt", ["reproduce", "builtin"], {}, "is not a valid ssmlab store"),
    ("other-sqlite", "other-sqlite", ["run", SLEEPY], {}, "no ssmlab tables"),
    ("schema-text", "schema-text", ["report"], {}, "schema version"),
    ("schema-newer", "schema-newer", ["run", SLEEPY], {}, "schema version 99"),
    # -- reproduce --------------------------------------------------------------------------------
    ("reproduce-paper", "store", ["reproduce", "nopaper"], {}, "unknown paper 'nopaper'"),
    ("reproduce-profile", "absent", ["reproduce", "builtin", "-p", "huge"], {},
     "unknown profile 'huge'"),
    ("reproduce-seeds", "store", ["reproduce", "builtin", "--seeds", "0"], {}, "--seeds must be in"),
    ("reproduce-executor", "absent", ["reproduce", "builtin", "-e", "gpu"], {},
     "unknown executor 'gpu'"),
    ("reproduce-memory", "absent", ["reproduce", "builtin"], {"SSMLAB_MEMORY_LIMIT": "1K"},
     "estimated peak memory"),
    # -- show, export, report, list -----------------------------------------------------------
    ("show-no-store", "absent", ["show", "ab"], {}, "no results store"),
    ("show-not-hex", "store", ["show", "xyz!"], {}, "is not hexadecimal"),
    ("show-unknown", "store", ["show", "ffffffff"], {}, "no run with id 'ffffffff'"),
    ("export-format", "store", ["export", "-f", "xml"], {}, "unknown export format 'xml'"),
    ("export-unknown-exp", "store", ["export", "--experiment", "nope/x", "-o", "SIDE/x.csv"], {},
     "nope/x"),
    ("export-suffix", "store", ["export", "-f", "parquet", "-o", "SIDE/x.csv"], {}, "x.csv"),
    ("export-no-dir", "store", ["export", "-o", "SIDE/missing/x.csv"], {}, "missing"),
    ("export-to-dir", "store", ["export", "-o", "SIDE/outdir"], {}, "outdir"),
    ("export-no-store", "absent", ["export", "-o", "SIDE/x.csv"], {}, "no results store"),
    # -- archive / restore ------------------------------------------------------------------------
    ("archive-suffix", "store", ["archive", "SIDE/x.json"], {}, "must end in .jsonl.gz"),
    ("archive-no-store", "absent", ["archive", "SIDE/x.jsonl.gz"], {}, "no results store"),
    ("archive-unknown-exp", "store", ["archive", "SIDE/x.jsonl.gz", "--experiment", "nope/x"], {},
     "no stored runs of experiment 'nope/x'"),
    ("restore-missing", "absent", ["restore", "SIDE/none.jsonl.gz"], {}, "does not exist"),
    ("restore-not-gzip", "store", ["restore", "SIDE/notgz.jsonl.gz"], {}, "not a readable gzip"),
    ("restore-not-run", "store", ["restore", "SIDE/notrun.jsonl.gz"], {}, "line 1: not a run"),
    ("restore-corrupt-store", "corrupt", ["restore", "SIDE/notrun.jsonl.gz"], {}, "line 1"),
    ("report-no-store", "absent", ["report"], {}, "no results store"),
    # -- shipped results: report / reproduce --reference, claims --export --------------------------
    ("report-reference-missing", "store", ["report", "--reference", "SIDE/none.jsonl"], {},
     "none.jsonl not found"),
    ("report-reference-dir", "store", ["report", "--reference", "SIDE/cfgdir"], {},
     "is not a regular file"),
    ("report-reference-json", "store", ["report", "--reference", "SIDE/notjson.jsonl"], {},
     "notjson.jsonl line 2 is not JSON"),
    ("report-reference-header", "store", ["report", "--reference", "SIDE/noheader.jsonl"], {},
     "is not an ssmlab claims reference"),
    ("report-reference-claim", "store", ["report", "--reference", "SIDE/badclaim.jsonl"], {},
     "line 2 holds an invalid claim"),
    ("report-reference-newer", "store", ["report", "--reference", "SIDE/newer.jsonl"], {},
     "format version 7"),
    ("report-reference-latin1", "store", ["report", "--reference", "SIDE/latin1.yaml"], {},
     "is not UTF-8"),
    ("reproduce-reference-missing", "store", ["reproduce", "builtin", "--reference",
                                              "SIDE/none.jsonl"], {}, "not found"),
    ("reproduce-reference-corrupt", "absent", ["reproduce", "builtin", "--reference",
                                               "SIDE/notjson.jsonl"], {}, "is not JSON"),
    ("claims-export-no-dir", "store", ["claims", "--export", "SIDE/missing/c.jsonl"], {},
     "missing does not exist"),
    ("claims-export-to-dir", "store", ["claims", "--export", "SIDE/outdir"], {},
     "is a directory"),
    ("claims-export-json", "store", ["claims", "--json", "--export", "SIDE/c.jsonl"], {},
     "give one of them"),
    ("claims-export-empty", "store", ["claims", "--profile", "paper", "--export", "SIDE/c.jsonl"],
     {}, "no analysed claims to export"),
    ("claims-export-no-store", "absent", ["claims", "--export", "SIDE/c.jsonl"], {},
     "no results store"),
    ("list-paper", "absent", ["list", "nopaper"], {}, "unknown paper 'nopaper'"),
    # -- claims (read-only) ---------------------------------------------------------------------
    ("claims-paper", "store", ["claims", "nopaper"], {}, "unknown paper 'nopaper'"),
    ("claims-paper-json", "store", ["claims", "builtin", "nopaper", "--json"], {},
     "unknown paper 'nopaper'"),
    ("claims-profile", "store", ["claims", "--profile", "huge"], {}, "unknown profile 'huge'"),
    ("claims-no-store", "absent", ["claims"], {}, "no results store"),
    ("claims-no-store-json", "absent", ["claims", "builtin", "--json"], {}, "no results store"),
    ("claims-corrupt", "corrupt", ["claims"], {}, "is not a valid ssmlab store"),
    ("claims-schema", "schema-newer", ["claims", "--json"], {}, "schema version 99"),
    ("claims-option", "store", ["claims", "--format", "csv"], {}, "No such option: --format"),
    # -- the command line itself ----------------------------------------------------------------
    ("unknown-command", "absent", ["frobnicate"], {}, "No such command 'frobnicate'"),
    ("unknown-option", "store", ["run", SLEEPY, "--bogus"], {}, "No such option: --bogus"),
    ("missing-argument", "absent", ["run"], {}, "Missing argument"),
]


NO_STORE = {"list"}  # commands that take no --results


def _prepare(state: str, res: Path, template: Path) -> None:
    _files(res)
    if state == "absent":
        return
    if state == "file":
        res.write_text("a file where the results directory should be\n")
        return
    if state == "corrupt":
        res.mkdir()
        (res / "ssmlab.db").write_bytes(bytes(range(256)) * 40)
        return
    if state == "other-sqlite":
        return _other_sqlite(res)
    shutil.copytree(template, res)
    if state == "schema-text":
        _schema("two")(res)
    elif state == "schema-newer":
        _schema("99")(res)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, template, tmp_path, capfd, monkeypatch):
    _id, state, argv, env, needle = case
    res = tmp_path / "results"
    _prepare(state, res, template)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SSMLAB_RESULTS", raising=False)
    argv = [a.replace("SIDE", str(tmp_path)).replace("RES", str(res)) for a in argv]
    if "--results" not in argv and argv[0] not in NO_STORE:
        argv += ["--results", str(res)]
    before = tree(res)
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert e.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle.replace("RES", str(res)) in lines[0], lines[0]
    assert tree(res) == before
    assert not (tmp_path / "c.jsonl").exists()  # a refused export writes nothing


def test_the_table_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
