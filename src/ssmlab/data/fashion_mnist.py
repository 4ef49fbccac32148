"""Fashion-MNIST from IDX files (Debian's `dataset-fashion-mnist`), and patch sequences in any
2-D scan order.

Files (gzipped or not, the loader tries both): train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte under DEFAULT_ROOT
(/usr/share/datasets/fashion-mnist; `apt-get install dataset-fashion-mnist`).

IDX format (LeCun): big-endian; magic = 0x00 0x00 <type> <ndim>, type 0x08 = unsigned byte;
then ndim uint32 sizes; then the data. A missing file, a wrong magic, a size that does not match
the payload, or images and labels of different counts raise `UserError` naming the file.

`patch_sequences` turns images into token sequences for the scan-order experiment: pad 28 -> 32
(so that Hilbert / Z-order curves are exact on the patch grid), cut p×p patches (4×4 -> an 8×8
grid of 16-dim tokens, L = 64) and order them with `ssmlab.data.scan_orders`.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

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
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot")


def find_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        p = Path(root) / name
        if p.is_file():
            return p
    return None


def available(root: Path | str = DEFAULT_ROOT) -> bool:
    return all(find_file(Path(root), stem) is not None for stem in FILES.values())


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a uint8 array of its declared shape."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise UserError(f"{path}: IDX data type 0x{dtype_code:02x} unsupported (need 0x08, ubyte)")
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: truncated IDX header")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    n = int(np.prod(shape))
    payload = raw[4 + 4 * ndim :]
    if len(payload) != n:
        raise UserError(f"{path}: header declares {n} bytes of data, file holds {len(payload)}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(shape)


@dataclass
class ImageSet:
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) uint8


def load(split: str, root: Path | str = DEFAULT_ROOT) -> ImageSet:
    """The 'train' (60000) or 'test' (10000) split."""
    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    paths = {}
    for kind in ("images", "labels"):
        stem = FILES[split, kind]
        p = find_file(root, stem)
        if p is None:
            raise UserError(f"Fashion-MNIST file {stem}[.gz] not found under {root} "
                            "(apt-get install dataset-fashion-mnist)")
        paths[kind] = p
    images = read_idx(paths["images"])
    labels = read_idx(paths["labels"])
    if images.ndim != 3 or labels.ndim != 1:
        raise UserError(f"{paths['images']}: expected images (N, H, W) and labels (N,), got "
                        f"{images.shape} and {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise UserError(f"{paths['images']} holds {images.shape[0]} images but "
                        f"{paths['labels']} holds {labels.shape[0]} labels")
    return ImageSet(images, labels)


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
