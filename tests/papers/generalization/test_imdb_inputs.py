"""A user-supplied IMDb copy: absent data is a skipped run, corrupt data a one-line UserError
naming the path and the problem, from the experiments' `check_inputs` (the runner's pre-flight
check) and from the loader itself. Fixture directories are written into tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from ssmlab.data.imdb import ImdbConfig, check_imdb, find_imdb, imdb, read_imdb
from ssmlab.errors import UserError
from ssmlab.papers.generalization.experiments.length import ImdbLength
from ssmlab.papers.generalization.experiments.stability import StabilityMargin
from ssmlab.records import SkipRun
from ssmlab.runner.registry import resolve_config

TEXT = {"pos": "a wonderful film, loved it", "neg": "a boring film, hated it"}


def make_acl(root: Path, n: int = 3) -> Path:
    """root/aclImdb/{train,test}/{pos,neg}/<i>_<rating>.txt, n reviews per folder."""
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            d = root / "aclImdb" / split / lab
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}_{8 if lab == 'pos' else 2}.txt").write_text(f"{TEXT[lab]} #{i}")
    return root


def imdb_cfg(path: Path):
    return resolve_config(ImdbLength, "quick", overrides=[f"task.imdb_dir={path}"])


def review(root: Path, split: str = "train", lab: str = "pos", i: int = 1) -> Path:
    return root / "aclImdb" / split / lab / f"{i}_{8 if lab == 'pos' else 2}.txt"


# ----------------------------------------------------------------------------- valid / absent


def test_a_valid_copy_passes_and_loads(tmp_path):
    root = make_acl(tmp_path)
    check_imdb(str(root))
    ImdbLength().check_inputs(imdb_cfg(root))
    assert find_imdb(str(root)) == str(root / "aclImdb")
    raw = read_imdb(str(root / "aclImdb"))  # the aclImdb folder itself works too
    assert len(raw["train"][0]) == 6 and raw["test"][1].count(1) == 3


def test_a_few_undecodable_bytes_are_tolerated(tmp_path):
    """A Latin-1 'é' in a long review is replaced by U+FFFD, not refused."""
    root = make_acl(tmp_path)
    review(root).write_bytes(("great acting " * 20).encode() + b"caf\xe9 " + b"good" * 10)
    check_imdb(str(root))
    texts, _ = read_imdb(str(root))["train"]
    assert any("caf\ufffd" in t for t in texts)


def test_absent_data_is_not_an_error_and_runs_are_skipped(tmp_path):
    where = tmp_path / "not_there"
    check_imdb(str(where))
    check_imdb(None)  # the datasets cache: nothing to check
    cfg = imdb_cfg(where)
    ImdbLength().check_inputs(cfg)
    with pytest.raises(SkipRun, match="no IMDb data at") as skip:
        ImdbLength().run(cfg, {"T": 100}, 0)
    assert str(where) in str(skip.value)


# ----------------------------------------------------------------------------- corrupt copies


def _file_instead_of_dir(root: Path) -> Path:
    f = root / "imdb.tar"
    f.write_bytes(b"\x1f\x8b not a directory")
    return f


def _empty_dir(root: Path) -> Path:
    (root / "imdb").mkdir()
    return root / "imdb"


def _missing_split(root: Path) -> Path:
    make_acl(root)
    for f in (root / "aclImdb" / "test" / "neg").iterdir():
        f.unlink()
    (root / "aclImdb" / "test" / "neg").rmdir()
    return root


def _unrelated_dir(root: Path) -> Path:
    (root / "notes.txt").write_text("hello")
    return root


def _split_without_reviews(root: Path) -> Path:
    make_acl(root)
    for f in (root / "aclImdb" / "train" / "pos").iterdir():
        f.unlink()
    (root / "aclImdb" / "train" / "pos" / "README.md").write_text("no reviews here")
    return root


def _binary_review(root: Path) -> Path:
    make_acl(root)
    review(root).write_bytes(b"PK\x03\x04\x00\x00binary\x00junk")
    return root


def _latin1_review(root: Path) -> Path:
    make_acl(root)
    review(root).write_bytes(bytes(range(128, 256)) * 4)  # no valid UTF-8 at all
    return root


def _empty_review(root: Path) -> Path:
    make_acl(root)
    review(root, "test", "neg", 0).write_bytes(b"")
    return root


def _unreadable_review(root: Path) -> Path:
    make_acl(root)
    review(root).unlink()
    os.symlink(root / "gone.txt", review(root))  # a dangling link: reading it fails
    return root


CORRUPT: list[tuple[str, Callable[[Path], Path], str, Callable[[Path], Path]]] = [
    # (case, build the copy, problem in the message, the path the message must name)
    ("file", _file_instead_of_dir, "not a directory", lambda p: p),
    ("empty", _empty_dir, "is empty", lambda p: p),
    ("missing split", _missing_split, "missing split folder(s) test/neg", lambda p: p / "aclImdb"),
    ("unrelated", _unrelated_dir, "missing split folder(s) train/neg, train/pos", lambda p: p),
    ("no reviews", _split_without_reviews, "holds no .txt reviews",
     lambda p: p / "aclImdb" / "train" / "pos"),
    ("binary", _binary_review, "not text", review),
    ("latin-1", _latin1_review, "not UTF-8 text", review),
    ("empty review", _empty_review, "is empty", lambda p: review(p, "test", "neg", 0)),
    ("unreadable", _unreadable_review, "unreadable", review),
]


@pytest.mark.parametrize("case, build, problem, named", CORRUPT, ids=[c[0] for c in CORRUPT])
def test_corrupt_copies_are_user_errors_naming_path_and_problem(tmp_path, case, build, problem,
                                                                named):
    path = build(tmp_path)
    for check in (lambda: check_imdb(str(path)),
                  lambda: ImdbLength().check_inputs(imdb_cfg(path)),
                  lambda: imdb(ImdbConfig(T=8, imdb_dir=str(path), tokenizer="word"), 0)):
        with pytest.raises(UserError) as e:
            check()
        msg = str(e.value)
        assert problem in msg and str(named(path)) in msg and "\n" not in msg, msg


def test_a_run_on_a_corrupt_copy_raises_instead_of_skipping(tmp_path):
    """The loader refuses too (a copy corrupted after the pre-flight check fails the run with
    the same message rather than training on garbage)."""
    path = _binary_review(tmp_path)
    with pytest.raises(UserError, match="not text"):
        ImdbLength().run(imdb_cfg(path), {"T": 8}, 0)


def test_stability_checks_imdb_only_when_it_uses_it(tmp_path):
    path = _empty_dir(tmp_path)
    maj = resolve_config(StabilityMargin, "quick", overrides=[f"task.imdb_dir={path}"])
    StabilityMargin().check_inputs(maj)  # majority: the IMDb path is unused
    im = resolve_config(StabilityMargin, "quick",
                        overrides=[f"task.imdb_dir={path}", "task_name=imdb"])
    with pytest.raises(UserError, match="is empty"):
        StabilityMargin().check_inputs(im)
