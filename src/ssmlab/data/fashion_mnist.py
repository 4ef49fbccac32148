"""Fashion-MNIST from IDX files (Debian's `dataset-fashion-mnist`), and patch sequences in any
2-D scan order.

Files (gzipped or not, the loader tries both): train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte under DEFAULT_ROOT
(/usr/share/datasets/fashion-mnist; `apt-get install dataset-fashion-mnist`).

IDX format (LeCun): big-endian; magic = 0x00 0x00 <type> <ndim>, type 0x08 = unsigned byte;
then ndim uint32 sizes; then the data. A missing file, a wrong magic, a number of dimensions
other than the file's kind needs (images 3, labels 1), a size that does not match the payload
(truncated or padded file), a corrupt gzip stream (bad deflate data, CRC, cut short), labels
outside 0..9, or images and labels of different counts raise a one-line `UserError` naming the
file and the problem. `check_files` runs the same checks without keeping the images (the
experiment's pre-flight check, `Experiment.check_inputs`); `read_idx` / `load` run them on the
way in.

`patch_sequences` turns images into token sequences for the scan-order experiment: pad 28 -> 32
(so that Hilbert / Z-order curves are exact on the patch grid), cut p×p patches (4×4 -> an 8×8
grid of 16-dim tokens, L = 64) and order them with `ssmlab.data.scan_orders`.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from ssmlab.data.scan_orders import flatten, scan_order
from ssmlab.errors import UserError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
NDIM = {"images": 3, "labels": 1}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")
# The published data set: 60000 training and 10000 test images of 28×28, balanced classes.
SIZES = {"train": 60000, "test": 10000}
SIDE = 28
_CHUNK = 1 << 20
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def find_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        p = Path(root) / name
        if p.is_file():
            return p
    return None


def missing(root: Path | str = DEFAULT_ROOT) -> list[str]:
    """The file stems of the four IDX files that are absent under root."""
    return [stem for stem in FILES.values() if find_file(Path(root), stem) is None]


def available(root: Path | str = DEFAULT_ROOT) -> bool:
    return not missing(root)


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _open(path: Path) -> BinaryIO:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def _read_header(path: Path, f: BinaryIO, ndim: int | None) -> tuple[int, ...]:
    """Parse the magic and the sizes; f is left at the first data byte."""
    magic = f.read(4)
    if len(magic) < 4:
        raise UserError(f"{path}: truncated IDX file ({len(magic)} bytes, no header)")
    if magic[0] != 0 or magic[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number 0x{magic.hex()})")
    dtype_code, nd = magic[2], magic[3]
    if dtype_code != 0x08:
        raise UserError(f"{path}: IDX data type 0x{dtype_code:02x} unsupported (need 0x08, ubyte)")
    if nd < 1 or (ndim is not None and nd != ndim):
        want = f"{ndim}" if ndim is not None else "≥ 1"
        raise UserError(f"{path}: bad magic number 0x{magic.hex()}: {nd} dimensions, expected "
                        f"{want}")
    sizes = f.read(4 * nd)
    if len(sizes) < 4 * nd:
        raise UserError(f"{path}: truncated IDX header")
    return struct.unpack(">" + "I" * nd, sizes)


def check_idx(path: Path | str, ndim: int | None = None) -> tuple[int, ...]:
    """Validate one IDX file (optionally gzipped) without keeping its data: the header, the
    payload's size against the declared shape and, for gzip, the whole stream (deflate data
    and CRC). Returns the shape."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IDX file not found: {path}")
    try:
        with _open(path) as f:
            shape = _read_header(path, f, ndim)
            n = math.prod(shape)
            held = 0
            while chunk := f.read(_CHUNK):
                held += len(chunk)
                if held > n:
                    break  # more than declared: no need to read on
    except _GZIP_ERRORS as e:
        raise UserError(f"cannot read {path}: corrupt or truncated gzip ({_one_line(e)})") from None
    if held != n:
        holds = f"only {held} (truncated)" if held < n else "more than declared"
        raise UserError(f"{path}: header declares {n} bytes of data {tuple(shape)}, file holds "
                        f"{holds}")
    return shape


def read_idx(path: Path | str, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a uint8 array of its declared shape; `ndim`
    (if given) is the number of dimensions the file must declare."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except _GZIP_ERRORS as e:
        raise UserError(f"cannot read {path}: corrupt or truncated gzip ({_one_line(e)})") from None
    head = _Bytes(raw)
    shape = _read_header(path, head, ndim)
    n = math.prod(shape)
    payload = memoryview(raw)[head.pos :]
    if len(payload) != n:
        holds = (f"only {len(payload)} (truncated)" if len(payload) < n
                 else f"{len(payload)}, more than declared")
        raise UserError(f"{path}: header declares {n} bytes of data {tuple(shape)}, file holds "
                        f"{holds}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


class _Bytes:
    """The read() of a file over bytes already in memory (for _read_header)."""

    def __init__(self, raw: bytes):
        self.raw, self.pos = raw, 0

    def read(self, n: int) -> bytes:
        out = self.raw[self.pos : self.pos + n]
        self.pos += len(out)
        return out


@dataclass
class ImageSet:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) uint8


def _paths(split: str, root: Path) -> dict[str, Path]:
    paths = {}
    for kind in ("images", "labels"):
        stem = FILES[split, kind]
        p = find_file(root, stem)
        if p is None:
            raise UserError(f"Fashion-MNIST file {stem}[.gz] not found under {root} "
                            "(apt-get install dataset-fashion-mnist)")
        paths[kind] = p
    return paths


def _check_labels(path: Path, labels: np.ndarray, n_images: int, images: Path) -> None:
    if labels.shape[0] != n_images:
        raise UserError(f"{images} holds {n_images} images but {path} holds "
                        f"{labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= len(CLASSES):
        raise UserError(f"{path}: label {int(labels.max())} outside 0..{len(CLASSES) - 1}")


def load(split: str, root: Path | str = DEFAULT_ROOT) -> ImageSet:
    """The 'train' (60000) or 'test' (10000) split."""
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    paths = _paths(split, Path(root))
    images = read_idx(paths["images"], NDIM["images"])
    labels = read_idx(paths["labels"], NDIM["labels"])
    _check_labels(paths["labels"], labels, images.shape[0], paths["images"])
    return ImageSet(images, labels)


def check_files(root: Path | str = DEFAULT_ROOT) -> dict[str, np.ndarray]:
    """Validate the four IDX files under root (check_idx for the images, a full read of the
    small label files) without keeping the images; returns the labels of each split, e.g. to
    count the images per class. Raises UserError naming the first bad file."""
    root = Path(root)
    out = {}
    for split in ("train", "test"):
        paths = _paths(split, root)
        shape = check_idx(paths["images"], NDIM["images"])
        labels = read_idx(paths["labels"], NDIM["labels"])
        _check_labels(paths["labels"], labels, shape[0], paths["images"])
        out[split] = labels
    return out


def subset(data: ImageSet, classes: tuple[int, ...], n: int, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """n images drawn without replacement from the given classes (balanced where possible);
    labels re-indexed 0..len(classes)-1."""
    idx_all = []
    per = n // len(classes)
    extra = n - per * len(classes)
    for j, c in enumerate(classes):
        pool = np.flatnonzero(data.labels == c)
        k = per + (1 if j < extra else 0)
        if k > pool.size:
            raise UserError(f"class {c} has only {pool.size} images, {k} requested")
        idx_all.append(rng.choice(pool, size=k, replace=False))
    idx = rng.permutation(np.concatenate(idx_all))
    remap = {c: j for j, c in enumerate(classes)}
    return data.images[idx], np.asarray([remap[int(c)] for c in data.labels[idx]], np.int64)


def patch_sequences(images: np.ndarray, order: str, patch: int = 4, pad_to: int = 32) -> Tensor:
    """(N, H, W) uint8 -> (N, (pad_to/patch)², patch²) float tokens in the scan order `order`.
    Pixels scaled to [0, 1]; images zero-padded symmetrically to pad_to × pad_to."""
    N, H, W = images.shape
    if pad_to < max(H, W) or pad_to % patch:
        raise UserError(f"pad_to={pad_to} must be ≥ the image side and a multiple of patch={patch}")
    top, left = (pad_to - H) // 2, (pad_to - W) // 2
    x = np.zeros((N, pad_to, pad_to), np.float32)
    x[:, top : top + H, left : left + W] = images.astype(np.float32) / 255.0
    g = pad_to // patch
    tokens = x.reshape(N, g, patch, g, patch).transpose(0, 1, 3, 2, 4).reshape(N, g * g,
                                                                                patch * patch)
    return flatten(torch.from_numpy(tokens), scan_order(order, g, g))  # (N, g², patch²)
