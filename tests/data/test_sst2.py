"""SST-2 loader on a small GLUE-layout fixture the test writes: absent data, corrupt data,
subsampling and tokenisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssmlab.data.sst2 import Sst2Config, check_sst2, find_sst2, read_sst2, sst2
from ssmlab.errors import UserError

TRAIN = [("a gripping , funny film", 1), ("dull and lifeless", 0), ("a joy to watch", 1),
         ("the worst script of the year", 0), ("funny and warm", 1), ("lifeless , dull , long", 0)]
DEV = [("warm and funny", 1), ("long and dull", 0), ("a joy", 1)]


def write_split(path: Path, rows, header="sentence\tlabel") -> None:
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")


@pytest.fixture
def sst_dir(tmp_path: Path) -> Path:
    d = tmp_path / "SST-2"
    d.mkdir()
    write_split(d / "train.tsv", TRAIN)
    write_split(d / "dev.tsv", DEV)
    (d / "test.tsv").write_text("index\tsentence\n0\tunlabelled\n", encoding="utf-8")
    return d


def test_reads_both_splits_from_the_folder_or_its_parent(sst_dir: Path):
    for where in (sst_dir, sst_dir.parent):
        raw = read_sst2(str(where))
        assert raw["train"] == ([s for s, _ in TRAIN], [y for _, y in TRAIN])
        assert raw["test"] == ([s for s, _ in DEV], [y for _, y in DEV])


def test_absent_is_none_and_reads_the_environment(tmp_path: Path, sst_dir: Path, monkeypatch):
    assert find_sst2(None) is None and find_sst2(str(tmp_path / "nope")) is None
    check_sst2(str(tmp_path / "nope"))  # absent is not an error: runs are skipped
    monkeypatch.setenv("SSMLAB_SST2", str(sst_dir))
    assert Sst2Config().sst2_dir == str(sst_dir)
    monkeypatch.delenv("SSMLAB_SST2")
    assert Sst2Config().sst2_dir is None
    with pytest.raises(UserError, match="no SST-2 data at"):
        read_sst2(None)


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: (d / "dev.tsv").unlink(), "lacks dev.tsv"),
    (lambda d: write_split(d / "train.tsv", TRAIN, header="text\tlabel"), "header must be"),
    (lambda d: write_split(d / "train.tsv", [("good", 2)]), "label '2' is not 0 or 1"),
    (lambda d: write_split(d / "train.tsv", [("good\tbad", 1)]), "3 fields, expected 2"),
    (lambda d: write_split(d / "train.tsv", [(" ", 1)]), "empty sentence"),
    (lambda d: write_split(d / "train.tsv", []), "has no sentences"),
    (lambda d: (d / "dev.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9\t1\n"), "is not UTF-8"),
])
def test_corrupt_copies_are_one_line_errors(sst_dir: Path, damage, message):
    damage(sst_dir)
    with pytest.raises(UserError, match=message) as e:
        check_sst2(str(sst_dir))
    assert "\n" not in str(e.value)


def test_a_file_or_an_unrelated_folder_is_an_error(tmp_path: Path):
    f = tmp_path / "x.tsv"
    f.write_text("sentence\tlabel\n")
    with pytest.raises(UserError, match="is a file"):
        find_sst2(str(f))
    (tmp_path / "other").mkdir()
    with pytest.raises(UserError, match="holds neither"):
        find_sst2(str(tmp_path / "other"))


def test_subsample_tokenise_and_pad(sst_dir: Path):
    cfg = Sst2Config(sst2_dir=str(sst_dir), T=5, n_train=4, n_test=2)
    a, b, c = sst2(cfg, 0), sst2(cfg, 0), sst2(cfg, 1)
    assert a.x_train.shape == (4, 5) and a.x_test.shape == (2, 5)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not (torch.equal(a.x_train, c.x_train) and torch.equal(a.x_test, c.x_test))
    assert set(a.y_train.tolist()) <= {-1.0, 1.0}
    assert int(a.x_train.max()) < a.vocab_size and a.tokenizer == "word"
    full = sst2(Sst2Config(sst2_dir=str(sst_dir), T=8), 0)
    assert full.x_train.shape == (len(TRAIN), 8) and full.y_test.tolist() == [1.0, -1.0, 1.0]
    # "dull and lifeless" (3 words) is right-padded with <pad> = 0
    row = full.x_train[[s for s, _ in TRAIN].index("dull and lifeless")]
    assert (row[:3] > 1).all() and (row[3:] == 0).all()
