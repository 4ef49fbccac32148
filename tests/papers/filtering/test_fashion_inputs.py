"""Corrupt Fashion-MNIST files are one-line UserErrors naming the file and the problem, raised by
the experiment's pre-flight `check_inputs` (before anything runs or is stored) and by the loader
itself; absent files stay skipped runs (run raises SkipRun). Fixtures: tiny IDX files written into tmp_path."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ssmlab.config import build_config
from ssmlab.data import fashion_mnist as fm
from ssmlab.errors import UserError
from ssmlab.papers.filtering.experiments.scan_orders import FashionScan
from ssmlab.records import SkipRun

SIZES = {"train": 40, "test": 20}  # 4 and 2 images per class


def idx_bytes(arr: np.ndarray, type_code: int = 0x08, ndim: int | None = None,
              shape: tuple[int, ...] | None = None) -> bytes:
    shape = arr.shape if shape is None else shape
    nd = len(shape) if ndim is None else ndim
    return bytes([0, 0, type_code, nd]) + struct.pack(">" + "I" * len(shape), *shape) \
        + arr.astype(np.uint8).tobytes()


def write_set(root: Path, gz: bool = True) -> dict[tuple[str, str], Path]:
    """A valid little Fashion-MNIST: balanced labels 0..9, random pixels."""
    rng = np.random.default_rng(0)
    paths = {}
    for split, n in SIZES.items():
        arrays = {"images": rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
                  "labels": (np.arange(n) % 10).astype(np.uint8)}
        for kind, arr in arrays.items():
            p = root / (fm.FILES[split, kind] + (".gz" if gz else ""))
            data = idx_bytes(arr)
            p.write_bytes(gzip.compress(data) if gz else data)
            paths[split, kind] = p
    return paths


def raw(p: Path) -> bytes:
    return gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()


def put(p: Path, data: bytes) -> None:
    p.write_bytes(gzip.compress(data) if p.suffix == ".gz" else data)


def config(root: Path, **extra):
    return build_config(FashionScan.Config, {"root": str(root), "n_train": 8, "n_test": 8,
                                             **extra})


def _bad_magic(p: Path) -> None:
    put(p, b"\x01\x02" + raw(p)[2:])


def _wrong_type(p: Path) -> None:
    put(p, raw(p)[:2] + b"\x0d" + raw(p)[3:])


def _wrong_ndim(p: Path) -> None:  # a labels-shaped header on the image file
    r = raw(p)
    n = struct.unpack(">I", r[4:8])[0]
    put(p, idx_bytes(np.frombuffer(r[16:], np.uint8), ndim=1, shape=(n * 28 * 28,)))


def _declares_more(p: Path) -> None:
    r = raw(p)
    n = struct.unpack(">I", r[4:8])[0]
    put(p, r[:4] + struct.pack(">I", n + 1) + r[8:])


def _holds_more(p: Path) -> None:
    put(p, raw(p) + b"\x00" * 784)


def _truncated_data(p: Path) -> None:
    put(p, raw(p)[:-100])


def _truncated_header(p: Path) -> None:
    put(p, raw(p)[:10])


def _empty(p: Path) -> None:
    put(p, b"")


def _corrupt_gzip(p: Path) -> None:  # flip bytes inside the deflate stream
    b = bytearray(p.read_bytes())
    mid = len(b) // 2
    b[mid : mid + 16] = bytes(x ^ 0xFF for x in b[mid : mid + 16])
    p.write_bytes(bytes(b))


def _truncated_gzip(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _not_gzip(p: Path) -> None:
    p.write_bytes(raw(p))  # plain IDX bytes under a .gz name


def _bad_label(p: Path) -> None:
    r = raw(p)
    put(p, r[:-1] + bytes([10]))


def _fewer_labels(p: Path) -> None:
    r = raw(p)
    n = struct.unpack(">I", r[4:8])[0]
    put(p, r[:4] + struct.pack(">I", n - 1) + r[8:-1])


# (name, split, kind, corruption, words of the message besides the file's path, gzipped set)
CORRUPTIONS: list[tuple[str, str, str, Callable[[Path], None], tuple[str, ...], bool]] = [
    ("bad magic", "train", "images", _bad_magic, ("bad magic number",), True),
    ("bad magic, plain file", "test", "labels", _bad_magic, ("bad magic number",), False),
    ("data type", "test", "images", _wrong_type, ("data type 0x0d",), True),
    ("dimensions", "train", "images", _wrong_ndim, ("1 dimensions, expected 3",), True),
    ("declares more", "train", "images", _declares_more, ("header declares", "truncated"), True),
    ("holds more", "test", "images", _holds_more, ("header declares", "more than declared"),
     False),
    ("truncated data", "train", "images", _truncated_data, ("holds only",), False),
    ("truncated header", "test", "images", _truncated_header, ("truncated IDX header",), True),
    ("empty", "train", "labels", _empty, ("truncated IDX file",), False),
    ("corrupt gzip", "train", "images", _corrupt_gzip, ("corrupt or truncated gzip",), True),
    ("truncated gzip", "test", "images", _truncated_gzip, ("corrupt or truncated gzip",), True),
    ("not gzip", "train", "labels", _not_gzip, ("corrupt or truncated gzip",), True),
    ("label range", "test", "labels", _bad_label, ("label 10 outside 0..9",), True),
    ("counts", "train", "labels", _fewer_labels, ("40 images", "39 labels"), True),
]


@pytest.mark.parametrize("name, split, kind, corrupt, words, gz", CORRUPTIONS,
                         ids=[c[0] for c in CORRUPTIONS])
def test_corrupt_file_is_a_one_line_error_naming_it(tmp_path, name, split, kind, corrupt, words,
                                                     gz):
    paths = write_set(tmp_path, gz)
    cfg = config(tmp_path)
    FashionScan().check_inputs(cfg)  # the valid set passes
    corrupt(paths[split, kind])
    for call in (lambda: FashionScan().check_inputs(cfg), lambda: fm.load(split, tmp_path)):
        with pytest.raises(UserError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and str(paths[split, kind]) in msg, msg
        for w in words:
            assert w in msg, (w, msg)


def test_loader_reads_the_valid_set(tmp_path):
    write_set(tmp_path, gz=False)
    d = fm.load("test", tmp_path)
    assert d.images.shape == (20, 28, 28) and np.bincount(d.labels).tolist() == [2] * 10
    labels = fm.check_files(tmp_path)
    assert {k: v.size for k, v in labels.items()} == SIZES


def test_check_idx_does_not_need_the_whole_file_in_memory(tmp_path):
    """check_idx streams: a header declaring 4 GiB on a small file is an error, not a read."""
    p = tmp_path / "big.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros(10, np.uint8), shape=(2**16, 2**8, 2**8))))
    with pytest.raises(UserError, match=r"declares 4294967296 bytes .* holds only 10"):
        fm.check_idx(p, 3)


def test_class_subset_larger_than_the_files_is_refused(tmp_path):
    write_set(tmp_path)
    FashionScan().check_inputs(config(tmp_path, n_train=16))  # 4 per class: fits
    with pytest.raises(UserError, match=r"n_train=20 needs 5 images of class 0 .* holds 4"):
        FashionScan().check_inputs(config(tmp_path, n_train=20))
    with pytest.raises(UserError, match=r"n_test=12 needs 3 images of class 0 .* holds 2"):
        FashionScan().check_inputs(config(tmp_path, n_test=12))


def test_absent_data_is_not_an_error_and_its_runs_are_skipped(tmp_path):
    cfg = config(tmp_path)
    FashionScan().check_inputs(cfg)  # nothing there: no error
    with pytest.raises(SkipRun, match=str(tmp_path)):
        FashionScan().run(cfg, {"order": "hilbert"}, 0)
    paths = write_set(tmp_path)
    for kind in ("images", "labels"):
        paths["test", kind].unlink()  # half a data set is absent data too
    FashionScan().check_inputs(cfg)
    with pytest.raises(SkipRun) as skip:
        FashionScan().run(cfg, {"order": "hilbert"}, 0)
    assert fm.FILES["test", "images"] in str(skip.value)
    assert fm.FILES["train", "images"] not in str(skip.value)


def test_the_worker_stores_absent_data_as_a_skipped_run(tmp_path, monkeypatch):
    """SkipRun raised by run is caught by the runner's worker: a skipped run with the reason,
    not a failure."""
    from ssmlab.runner import worker

    monkeypatch.setattr(worker, "seed_everything", lambda seed: None)  # keep this process's RNGs
    cfg = config(tmp_path)
    out = worker.execute({"experiment": FashionScan.id, "module": FashionScan.__module__,
                   "config": cfg.model_dump(mode="json"), "params": {"order": "hilbert"},
                   "seed": 0})
    assert out["status"] == "skipped" and str(tmp_path) in out["reason"]
    assert not out["error"]


def test_a_run_on_the_valid_fixture(tmp_path):
    write_set(tmp_path)
    cfg = config(tmp_path, train_cfg={"optimizer": "adam", "lr": 3e-3, "loss": "ce",
                                      "batch_size": 8, "epochs": 1})
    FashionScan().check_inputs(cfg)
    r = FashionScan().run(cfg, {"order": "snake"}, 0)
    assert r.status == "ok" and 0 <= r.metrics["test_accuracy"] <= 1
