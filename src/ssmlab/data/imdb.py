"""IMDb sentiment (Maas et al. 2011) from a user-supplied copy: loader, tokenizers, pad/truncate.

No copy of IMDb ships with ssmlab and none can be downloaded here, so the loader reads
  1. a directory in the standard `aclImdb` layout: `<dir>/{train,test}/{pos,neg}/*.txt`
     (the directory itself, or its parent holding `aclImdb/`), or
  2. the HuggingFace `datasets` cache (`load_dataset("imdb")` in offline mode), only if the
     `datasets` package is installed and the cache holds the data.
Where neither is found, `find_imdb` returns None and the experiment reports
"skipped: no IMDb data at PATH".

Absent and corrupt are different: a configured path that does not exist is absent data (the
runs are skipped, and retried once the data are there), but a path that exists and is not a
readable aclImdb copy is a user error naming the path and the problem: a file instead of a
directory, an empty directory, missing split folders (`train/pos`, ...), a split folder without
`.txt` files, or a review that cannot be read (permissions, I/O error), is empty, holds NUL
bytes or is mostly not UTF-8. The loader tolerates a few undecodable bytes per review
(replaced by U+FFFD: copies re-encoded as Latin-1 have the odd accented letter), up to
`MAX_INVALID_FRACTION` of its characters. `check_imdb` runs every one of these checks up
front (the experiments' `check_inputs`); `find_imdb` checks the layout and `read_acl_split` each
file it reads, so the loader raises the same errors.

Tokenisation (generalization paper / authors' code): lower-case text, BERT *uncased* word
pieces (`bert-base-uncased`, with [CLS] ... [SEP]), padded / truncated to exactly T tokens with
right padding; the classifier reads position T. BERT is used only when `transformers` and the
tokenizer files are available offline (tokenizer="auto" picks it then). Otherwise (the default
here) a word-level tokenizer: lower-case, '<br />' removed, words = runs of letters, digits and
apostrophes, every other non-space character its own token; the vocabulary is the
`vocab_size - 2` most frequent training words (ties broken alphabetically), plus <pad> = 0 and
<unk> = 1. Truncation keeps the first T tokens (as BERT's truncation does).

Subsampling: `n_train` / `n_test` reviews drawn without replacement from each split with the
run's train / test seed streams (the paper uses all 25k / 25k).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from ssmlab.config import StrictModel
from ssmlab.errors import UserError
from ssmlab.seeding import numpy_rng

PAD_ID, UNK_ID = 0, 1
MAX_T = 2**16  # sanity limits; the experiments' memory estimates refuse what does not fit
MAX_SAMPLES = 10**7
MAX_VOCAB = 2**20
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def default_imdb_dir() -> str | None:
    """$SSMLAB_IMDB, or None."""
    return os.environ.get("SSMLAB_IMDB") or None


class ImdbConfig(StrictModel):
    """IMDb task. Defaults: the paper's 25k / 25k would be n_train = n_test = 25000."""

    T: int = Field(500, ge=1, le=MAX_T, description="pad / truncate every review to exactly T tokens")
    n_train: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="None = the whole split")
    n_test: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="None = the whole split")
    imdb_dir: str | None = Field(
        default_factory=default_imdb_dir,
        description="aclImdb directory (default $SSMLAB_IMDB); None = datasets cache only")
    tokenizer: Literal["auto", "word", "bert"] = Field(
        "auto", description="auto = BERT uncased if available offline, else word-level")
    vocab_size: int = Field(30000, ge=3, le=MAX_VOCAB,
                            description="word-level vocabulary size (incl. pad, unk)")


@dataclass
class ImdbData:
    """x_*: (n, T) int64 ids; y_*: (n,) ±1 floats (pos = +1); vocab_size for the embedding."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    vocab_size: int
    tokenizer: str
    source: str

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.x_test, self.y_test


# ----------------------------------------------------------------------------- finding the data


SPLITS = ("train", "test")
LABELS = ("neg", "pos")
MAX_INVALID_FRACTION = 0.01  # undecodable bytes tolerated per review (replaced by U+FFFD)
_REPLACEMENT = "\ufffd"


def _has_layout(cand: Path) -> bool:
    return all((cand / s / c).is_dir() for s in SPLITS for c in LABELS)


def _acl_root(path: Path) -> Path | None:
    """The aclImdb root at `path` (itself or `path/aclImdb`); None when `path` does not exist;
    UserError when it exists but is not an aclImdb directory (module docstring)."""
    if not path.exists():
        return None
    if not path.is_dir():
        raise UserError(f"IMDb path {path} is not a directory: expected an aclImdb directory "
                        "with train/{pos,neg} and test/{pos,neg} folders of .txt reviews")
    for cand in (path, path / "aclImdb"):
        if _has_layout(cand):
            return cand
    try:
        empty = not any(path.iterdir())
    except OSError as e:
        raise UserError(f"IMDb directory {path} cannot be listed: {e.strerror}") from None
    if empty:
        raise UserError(f"IMDb directory {path} is empty: expected aclImdb/train/{{pos,neg}} and "
                        "aclImdb/test/{pos,neg} folders of .txt reviews")
    base = path / "aclImdb" if (path / "aclImdb").is_dir() else path
    missing = [f"{s}/{c}" for s in SPLITS for c in LABELS if not (base / s / c).is_dir()]
    raise UserError(f"IMDb directory {base} is not an aclImdb copy: missing split folder(s) "
                    f"{', '.join(missing)}")


def find_imdb(imdb_dir: str | None) -> str | None:
    """Where IMDb can be read from: an aclImdb directory, 'datasets' (the HF cache), or None.

    None means absent (nothing at imdb_dir, or no cached `datasets` copy); a path that exists
    but is not an aclImdb directory raises UserError (module docstring)."""
    if imdb_dir:
        root = _acl_root(Path(imdb_dir).expanduser())
        return str(root) if root is not None else None
    try:
        import datasets  # noqa: F401
    except ImportError:
        return None
    return "datasets" if _load_hf() is not None else None


def _load_hf() -> dict[str, tuple[list[str], list[int]]] | None:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets

        ds = datasets.load_dataset("imdb")
        return {s: (list(ds[s]["text"]), [int(v) for v in ds[s]["label"]]) for s in SPLITS}
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        return None


def read_review(path: Path) -> str:
    """One review's text; UserError naming the file when it is unreadable, empty, binary (NUL
    bytes) or has more than MAX_INVALID_FRACTION undecodable UTF-8 bytes (module docstring)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"IMDb review {path} is unreadable: {e.strerror or e}") from None
    if not data.strip():
        raise UserError(f"IMDb review {path} is empty")
    if b"\x00" in data:
        raise UserError(f"IMDb review {path} is not text (it holds NUL bytes)")
    text = data.decode("utf-8", errors="replace")
    bad = text.count(_REPLACEMENT) - data.count(_REPLACEMENT.encode())
    if bad > MAX_INVALID_FRACTION * len(text):
        raise UserError(f"IMDb review {path} is not UTF-8 text ({bad} undecodable bytes in "
                        f"{len(text)} characters)")
    return text


def _split_files(root: Path, split: str, label: str) -> list[Path]:
    folder = root / split / label
    try:
        files = sorted(folder.glob("*.txt"))
    except OSError as e:
        raise UserError(f"IMDb folder {folder} cannot be listed: {e.strerror}") from None
    if not files:
        raise UserError(f"IMDb folder {folder} holds no .txt reviews")
    return files


def read_acl_split(root: Path, split: str) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels (neg = 0, pos = 1) of one split, in sorted file order; UserError
    naming the folder or file that is missing or corrupt."""
    texts, labels = [], []
    for label, sub in enumerate(LABELS):
        for f in _split_files(root, split, sub):
            texts.append(read_review(f))
            labels.append(label)
    return texts, labels


def check_imdb(imdb_dir: str | None) -> None:
    """Pre-flight check of a configured aclImdb copy (every folder and file, as the loader
    reads them): returns when the copy is readable or absent (nothing at imdb_dir: the runs
    will be skipped); UserError naming the path and the problem otherwise. With no imdb_dir
    (the `datasets` cache) there is nothing to check."""
    if not imdb_dir:
        return
    root = _acl_root(Path(imdb_dir).expanduser())
    if root is None:
        return
    for split in SPLITS:
        for sub in LABELS:
            for f in _split_files(root, split, sub):
                read_review(f)


def read_imdb(imdb_dir: str | None) -> dict[str, tuple[list[str], list[int]]]:
    """Both splits as (texts, labels); UserError naming the path when nothing is there."""
    where = find_imdb(imdb_dir)
    if where is None:
        raise UserError(f"no IMDb data at {imdb_dir or '(datasets cache)'}: expected an aclImdb "
                        "directory with train/test and pos/neg text files")
    if where == "datasets":
        data = _load_hf()
        assert data is not None
        return data
    root = Path(where)
    return {s: read_acl_split(root, s) for s in SPLITS}


# ----------------------------------------------------------------------------- tokenizers


def word_tokens(text: str) -> list[str]:
    """Word-level tokens: lower-cased, '<br />' removed (module docstring)."""
    return _WORD.findall(text.lower().replace("<br />", " "))


def build_vocab(texts: list[str], size: int) -> dict[str, int]:
    counts = Counter(t for text in texts for t in word_tokens(text))
    words = sorted(counts, key=lambda w: (-counts[w], w))[: size - 2]
    return {w: i + 2 for i, w in enumerate(words)}


def encode_words(texts: list[str], vocab: dict[str, int], T: int) -> Tensor:
    """(n, T) ids: first T word tokens, unknown words -> <unk>, right-padded with <pad>."""
    out = torch.full((len(texts), T), PAD_ID, dtype=torch.int64)
    for i, text in enumerate(texts):
        ids = [vocab.get(t, UNK_ID) for t in word_tokens(text)[:T]]
        if ids:
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


def bert_tokenizer():
    """The bert-base-uncased tokenizer if it loads offline, else None."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained("bert-base-uncased", local_files_only=True)
    except Exception:  # noqa: BLE001 - not installed or not cached
        return None


def subsample(n_all: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
    if n is None or n >= n_all:
        return np.arange(n_all)
    return np.sort(rng.choice(n_all, size=n, replace=False))


def imdb(cfg: ImdbConfig, seed: int) -> ImdbData:
    """Load, subsample, tokenise and pad the two splits (module docstring)."""
    raw = read_imdb(cfg.imdb_dir)
    picked = {}
    for split, stream in (("train", "train"), ("test", "test")):
        texts, labels = raw[split]
        n = cfg.n_train if split == "train" else cfg.n_test
        idx = subsample(len(texts), n, numpy_rng(seed, stream))
        picked[split] = ([texts[i].lower() for i in idx], [labels[i] for i in idx])
    tok = bert_tokenizer() if cfg.tokenizer in ("auto", "bert") else None
    if cfg.tokenizer == "bert" and tok is None:
        raise UserError("tokenizer 'bert' needs `transformers` and bert-base-uncased cached "
                        "offline; use tokenizer='word' or 'auto'")
    xs = {}
    if tok is not None:
        for split, (texts, _) in picked.items():
            enc = tok(texts, padding="max_length", truncation=True, max_length=cfg.T)
            xs[split] = torch.tensor(enc["input_ids"], dtype=torch.int64)
        vocab_size, name = int(tok.vocab_size), "bert-base-uncased"
    else:
        vocab = build_vocab(picked["train"][0], cfg.vocab_size)
        for split, (texts, _) in picked.items():
            xs[split] = encode_words(texts, vocab, cfg.T)
        vocab_size, name = len(vocab) + 2, "word"

    def lab(v: list[int]) -> Tensor:
        return torch.tensor([1.0 if y == 1 else -1.0 for y in v])

    return ImdbData(
        x_train=xs["train"], y_train=lab(picked["train"][1]),
        x_test=xs["test"], y_test=lab(picked["test"][1]),
        vocab_size=vocab_size, tokenizer=name,
        source=cfg.imdb_dir or "datasets",
    )
