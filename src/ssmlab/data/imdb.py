"""IMDb sentiment (Maas et al. 2011) from a user-supplied copy: loader, tokenizers, pad/truncate.

No copy of IMDb ships with ssmlab and none can be downloaded here, so the loader reads
  1. a directory in the standard `aclImdb` layout: `<dir>/{train,test}/{pos,neg}/*.txt`
     (the directory itself, or its parent holding `aclImdb/`), or
  2. the HuggingFace `datasets` cache (`load_dataset("imdb")` in offline mode), only if the
     `datasets` package is installed and the cache holds the data.
Where neither is found, `find_imdb` returns None and the experiment reports
"skipped: no IMDb data at PATH".

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
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def default_imdb_dir() -> str | None:
    """$SSMLAB_IMDB, or None."""
    return os.environ.get("SSMLAB_IMDB") or None


class ImdbConfig(StrictModel):
    """IMDb task. Defaults: the paper's 25k / 25k would be n_train = n_test = 25000."""

    T: int = Field(500, ge=1, description="pad / truncate every review to exactly T tokens")
    n_train: int | None = Field(None, ge=1, description="None = the whole split")
    n_test: int | None = Field(None, ge=1, description="None = the whole split")
    imdb_dir: str | None = Field(
        default_factory=default_imdb_dir,
        description="aclImdb directory (default $SSMLAB_IMDB); None = datasets cache only")
    tokenizer: Literal["auto", "word", "bert"] = Field(
        "auto", description="auto = BERT uncased if available offline, else word-level")
    vocab_size: int = Field(30000, ge=3, description="word-level vocabulary size (incl. pad, unk)")


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


def _acl_root(path: Path) -> Path | None:
    for cand in (path, path / "aclImdb"):
        if all((cand / s / c).is_dir() for s in ("train", "test") for c in ("pos", "neg")):
            return cand
    return None


def find_imdb(imdb_dir: str | None) -> str | None:
    """Where IMDb can be read from: an aclImdb directory, 'datasets' (the HF cache), or None."""
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
        return {s: (list(ds[s]["text"]), [int(v) for v in ds[s]["label"]]) for s in ("train", "test")}
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        return None


def read_acl_split(root: Path, split: str) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels (neg = 0, pos = 1) of one split, in sorted file order."""
    texts, labels = [], []
    for label, sub in ((0, "neg"), (1, "pos")):
        for f in sorted((root / split / sub).glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8", errors="replace"))
            labels.append(label)
    return texts, labels


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
    out = {s: read_acl_split(root, s) for s in ("train", "test")}
    for s, (texts, _) in out.items():
        if not texts:
            raise UserError(f"no IMDb data at {root}: {s}/pos and {s}/neg hold no .txt files")
    return out


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


def _subsample(n_all: int, n: int | None, rng: np.random.Generator) -> np.ndarray:
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
        idx = _subsample(len(texts), n, numpy_rng(seed, stream))
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
