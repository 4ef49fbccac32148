"""The report folder is replaced atomically: concurrent `ssmlab report` calls never crash, and a
reader or a writer killed at any moment finds the previous complete report or the new complete
one — never a mix of two, a half-copied figures/ folder, or nothing."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ssmlab.report import swap
from ssmlab.report.render import write_report
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import figdir_for, run_sweep
from ssmlab.runner.testing import registered_test_experiments

N_FIGS = 6


def _make_store(res: Path) -> None:
    """Three analysed configs with N_FIGS figures each, one of them referenced by its claim."""
    with registered_test_experiments(), Store.open(res) as st:
        for seeds in (1, 2):
            run_sweep("builtin/test_sleepy", store=st, seeds=seeds)
        run_sweep("builtin/test_flaky", store=st)
        for cfg in st.configs(latest_only=False):
            fd = figdir_for(res, cfg.experiment, cfg.cfg_hash)
            for k in range(N_FIGS):
                (fd / f"fig{k}.png").write_bytes(b"\x89PNG" + bytes([k]) * 4000)
            claims = st.claims(cfg.experiment, cfg.cfg_hash)
            st.put_claims(cfg.experiment, cfg.cfg_hash,
                          [c.model_copy(update={"figure": "fig0.png"}) for c in claims])


@pytest.fixture
def res(tmp_path):
    _make_store(tmp_path)
    return tmp_path


def _referenced(report: Path) -> tuple[set[str], set[str]]:
    """Figures the HTML and the Markdown reference (relative to the report folder)."""
    html = (report / "index.html").read_text()
    md = (report / "report.md").read_text()
    return set(re.findall(r"<img src='([^']+)'", html)), set(re.findall(r"\]\((figures/[^)]+)\)",
                                                                         md))


def _assert_complete(report: Path) -> set[str]:
    """index.html and report.md exist, reference the same figures, and figures/ holds exactly
    those (a mix of two reports would leave extra or missing files)."""
    in_html, in_md = _referenced(report)
    assert in_html and in_html == in_md
    on_disk = {str(p.relative_to(report)) for p in (report / "figures").rglob("*") if p.is_file()}
    assert on_disk == in_html
    return in_html


def _temp_dirs(res: Path) -> list[str]:
    return sorted(p.name for p in res.iterdir() if p.name.startswith(".report-"))


def _exchange_works(folder: Path) -> bool:
    """Whether renameat2(RENAME_EXCHANGE) works on this platform and file system (without it
    the fallback leaves the folder missing for an instant, which readers may notice)."""
    a, b = folder / ".probe-a", folder / ".probe-b"
    a.mkdir()
    b.mkdir()
    try:
        return swap.exchange(a, b)
    finally:
        a.rmdir()
        b.rmdir()


def _snapshot(report: Path) -> dict[str, bytes]:
    return {str(p.relative_to(report)): p.read_bytes() for p in report.rglob("*") if p.is_file()}


# -- (a) the swap itself ----------------------------------------------------------------------
def _tree(path: Path, owner: str, n: int = 5) -> Path:
    """A small tree whose every file names its owner, so a mix of two trees is visible."""
    (path / "sub").mkdir(parents=True)
    (path / "owner").write_text(owner)
    for k in range(n):
        (path / "sub" / f"{k}.txt").write_text(owner)
    return path


def _owner_of(path: Path) -> str:
    """The single owner of every file of a tree (fails on a mix)."""
    owners = {p.read_text() for p in path.rglob("*") if p.is_file()}
    assert len(owners) == 1 and len(list((path / "sub").iterdir())) == 5, owners
    return owners.pop()


@pytest.fixture(params=["exchange", "fallback"])
def mode(request, monkeypatch):
    """Run a test with renameat2(RENAME_EXCHANGE), and again with the rename-aside fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(swap, "exchange", lambda a, b: False)
    return request.param


def test_exchange_swaps_two_non_empty_trees(tmp_path):
    a, b = _tree(tmp_path / "a", "A"), _tree(tmp_path / "b", "B")
    if not swap.exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) unavailable on this platform / file system")
    assert _owner_of(a) == "B" and _owner_of(b) == "A"
    with pytest.raises(FileNotFoundError):
        swap.exchange(a, tmp_path / "missing")
    assert _owner_of(a) == "B"


def test_replace_dir_creates_then_replaces(tmp_path, mode):
    target = tmp_path / "report"
    swap.replace_dir(_tree(swap.make_temp_dir(target), "first"), target)
    assert _owner_of(target) == "first"
    new = _tree(swap.make_temp_dir(target), "second")
    assert new.name.startswith(f".report-{os.getpid()}-")
    swap.replace_dir(new, target)
    assert _owner_of(target) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # old tree deleted


def test_concurrent_replace_never_mixes_or_crashes(tmp_path, mode):
    """4 threads replace the same folder 20 times each while a reader keeps opening a file in
    it: no writer fails, the result is one writer's whole tree, nothing is left beside it, and
    (with the exchange) the reader never finds the folder missing."""
    target = tmp_path / "report"
    swap.replace_dir(_tree(swap.make_temp_dir(target), "w0-init"), target)
    errors: list[BaseException] = []
    misses = [0]
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            for i in range(20):
                swap.replace_dir(_tree(swap.make_temp_dir(target), f"w{w}-{i}"), target)
        except BaseException as e:  # collected and asserted below
            errors.append(e)

    def reader() -> None:
        while not stop.is_set():
            try:
                (target / "owner").read_text()
            except FileNotFoundError:
                misses[0] += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert errors == []
    assert _owner_of(target).endswith("-19")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    if mode == "exchange" and _exchange_works(tmp_path):
        assert misses[0] == 0


def test_fallback_puts_the_old_tree_back_when_interrupted(tmp_path, monkeypatch):
    """Interrupted between its two renames, the fallback restores the previous folder."""
    monkeypatch.setattr(swap, "exchange", lambda a, b: False)
    target = tmp_path / "report"
    swap.replace_dir(_tree(swap.make_temp_dir(target), "old"), target)
    new = _tree(swap.make_temp_dir(target), "new")
    real_rename = os.rename

    def rename(src, dst):
        if Path(src) == new:
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(swap.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        swap.replace_dir(new, target)
    assert _owner_of(target) == "old" and _owner_of(new) == "new"


def test_clean_stale_removes_only_abandoned_trees(tmp_path):
    target = tmp_path / "report"
    _tree(target, "current")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine, host = os.getpid(), swap._host_tag()
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    names = {
        "dead": f".report-{dead.pid}-{host}-{'a' * 12}",        # its writer is gone
        "live": f".report-{mine}-{host}-{'b' * 12}",            # a writer at work
        "old": f".report-{mine}-{host}-{'c' * 12}",             # untouched for 2 h
        "remote": f".report-{dead.pid}-{other_host}-{'d' * 12}",  # another host's, recent
        "remote_old": f".report-{mine}-{other_host}-{'e' * 12}",  # another host's, 2 h old
        "unrelated": f".reports-{dead.pid}-{host}-{'f' * 12}",  # not one of ours
    }
    for name in names.values():
        _tree(tmp_path / name, name)
    two_hours_ago = time.time() - 7200
    for key in ("old", "remote_old"):
        os.utime(tmp_path / names[key], (two_hours_ago, two_hours_ago))
    removed = {p.name for p in swap.clean_stale(target)}
    assert removed == {names["dead"], names["old"], names["remote_old"]}
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"report", names["live"], names["remote"], names["unrelated"]}
    assert _owner_of(target) == "current"


# -- (b) concurrent processes -----------------------------------------------------------------
@pytest.mark.slow
def test_concurrent_report_processes_never_crash(res):
    """3 `ssmlab report` processes at a time, 15 rounds, while a thread keeps reading the report:
    every call exits 0, the reader always finds index.html and every figure it references, and
    the final report is complete with no temporary folder left behind."""
    with Store.open(res) as st:
        write_report(st, res, all_configs=True)
    expected = _assert_complete(res / "report")
    stop, seen, problems = threading.Event(), [0], []

    def reader() -> None:
        while not stop.is_set():
            try:
                html = (res / "report" / "index.html").read_text()
            except OSError as e:
                problems.append(f"index.html: {e}")
                continue
            for src in re.findall(r"<img src='([^']+)'", html):
                if not (res / "report" / src).is_file():
                    problems.append(f"missing {src}")
            seen[0] += 1

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    cmd = [sys.executable, "-m", "ssmlab.cli", "report", "--all", "--results", str(res)]
    failures = []
    try:
        for _ in range(15):
            procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True) for _ in range(3)]
            for p in procs:
                _, err = p.communicate(timeout=120)
                if p.returncode != 0:
                    failures.append(err.strip().splitlines()[-1] if err.strip() else "?")
    finally:
        stop.set()
        t.join()
    assert failures == [], f"{len(failures)} of 45 calls failed: {failures[:3]}"
    assert seen[0] > 0
    if _exchange_works(res):
        assert problems == [], problems[:3]
    assert _assert_complete(res / "report") == expected
    assert _temp_dirs(res) == []


# -- (c) a writer killed between steps --------------------------------------------------------
_KILLER = """
import os, shutil, signal, sys
import ssmlab.report.render as render
from ssmlab.runner.store import Store

point, n = sys.argv[2], int(sys.argv[3])
calls = [0]

def die(orig):
    def f(*a, **k):
        calls[0] += 1
        if calls[0] >= n:
            os.kill(os.getpid(), signal.SIGKILL)
        return orig(*a, **k)
    return f

if point == "copy":            # in the middle of copying the figures
    shutil.copy2 = die(shutil.copy2)
elif point == "render":        # report.md written, index.html not yet
    render.render_html = die(render.render_html)
else:                          # inside the swap: before / after the exchange
    import ssmlab.report.swap as swap
    setattr(swap, point, die(getattr(swap, point)))
with Store.open(sys.argv[1]) as st:
    render.write_report(st, sys.argv[1], all_configs=True)
"""

KILL_POINTS = [("copy", 1), ("copy", 7), ("render", 1), ("_swap_in", 1), ("remove_tree", 1)]


@pytest.mark.parametrize("point,n", KILL_POINTS)
def test_killed_writer_leaves_a_complete_report(res, point, n):
    """SIGKILL a writer at several points: before the swap the previous report is in place byte
    for byte; after it the new one is, complete. Either way the next call cleans up the killed
    writer's temporary folder and succeeds."""
    with Store.open(res) as st:
        write_report(st, res, all_configs=True)
    before = _snapshot(res / "report")
    old_figs = _assert_complete(res / "report")
    # the killed writer would add a figure, so the new report is distinguishable from the old
    with Store.open(res) as st:
        cfg = st.configs("builtin/test_flaky")[0]
    (res / cfg.figdir / "zz_new.png").write_bytes(b"\x89PNG new")
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(res), point, str(n)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    figs = _assert_complete(res / "report")
    if point == "remove_tree":  # killed after the exchange: the new report is in place
        assert figs == old_figs | {f"figures/{cfg.figdir.removeprefix('figures/')}/zz_new.png"}
    else:
        assert _snapshot(res / "report") == before
    assert len(_temp_dirs(res)) == 1  # what the killed writer left (its pid is now dead)
    with Store.open(res) as st:
        write_report(st, res, all_configs=True)
    assert _temp_dirs(res) == []
    assert any(f.endswith("zz_new.png") for f in _assert_complete(res / "report"))


def test_exception_mid_write_keeps_previous_report(res, monkeypatch):
    """An exception while writing (disk full, a bug) leaves the previous report untouched and no
    temporary folder."""
    import ssmlab.report.render as render

    with Store.open(res) as st:
        write_report(st, res)
        before = _snapshot(res / "report")

        def boom(*a, **k):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(render, "render_html", boom)
        with pytest.raises(OSError, match="No space"):
            write_report(st, res)
    assert _snapshot(res / "report") == before
    assert _temp_dirs(res) == []
    assert os.listdir(res / "report")
