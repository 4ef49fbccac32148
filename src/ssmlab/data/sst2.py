"""SST-2 (binary Stanford Sentiment Treebank, GLUE version) from a user-supplied copy.

No copy ships with ssmlab and none can be downloaded here. The loader reads the GLUE layout:
`<dir>/train.tsv` and `<dir>/dev.tsv`, tab-separated with the header `sentence<TAB>label`,
label 0 (negative) or 1 (positive); `<dir>` is the `SST-2` folder itself or its parent. GLUE's
`test.tsv` has no labels and is not read: the labelled `dev` split is the test split here (as
in most papers that report SST-2 accuracy).

Where the data come from: the config field `sst2_dir`, default `$SSMLAB_SST2`. Absent and
corrupt are different, as for IMDb (ssmlab.data.imdb): a path that is unset or does not exist
is absent data (`find_sst2` returns None; the experiment stores its runs as skipped with "no
SST-2 data at PATH" and retries them once the data are there), while a path that exists and is
not a readable SST-2 copy is a one-line user error naming the file and the problem: a file
instead of a folder, a missing split file, a wrong header, a row without exactly two fields, a
label other than 0 / 1, an empty sentence or split, or text that is not UTF-8. `check_sst2`
runs every check up front (an experiment's `check_inputs`).

Tokenisation: the word-level tokenizer of ssmlab.data.imdb (lower-case, words = runs of
letters, digits and apostrophes, other characters their own token; vocabulary = the
`vocab_size - 2` most frequent training words plus <pad> = 0 and <unk> = 1), right-padded /
truncated to exactly T tokens. Subsampling draws `n_train` / `n_test` sentences without
replacement with the run's "train" / "test" seed streams.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from pydantic import Field

from ssmlab.config import StrictModel
from ssmlab.data.imdb import MAX_SAMPLES, MAX_VOCAB, ImdbData, build_vocab, encode_words, subsample
from ssmlab.errors import UserError
from ssmlab.seeding import numpy_rng

SPLIT_FILES = {"train": "train.tsv", "test": "dev.tsv"}
HEADER = ["sentence", "label"]
MAX_T = 4096  # SST-2 sentences are at most ~60 words

# the loaded data have the same fields as IMDb's: (n, T) ids and ±1 labels
Sst2Data = ImdbData


def default_sst2_dir() -> str | None:
    """$SSMLAB_SST2, or None."""
    return os.environ.get("SSMLAB_SST2") or None


class Sst2Config(StrictModel):
    """SST-2 task: 67,349 training and 872 dev sentences in GLUE; None = the whole split."""

    T: int = Field(64, ge=1, le=MAX_T, description="pad / truncate every sentence to T tokens")
    n_train: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="None = the whole split")
    n_test: int | None = Field(None, ge=1, le=MAX_SAMPLES, description="None = the whole split")
    sst2_dir: str | None = Field(default_factory=default_sst2_dir,
                                 description="GLUE SST-2 folder (default $SSMLAB_SST2)")
    vocab_size: int = Field(20000, ge=3, le=MAX_VOCAB,
                            description="word-level vocabulary size (incl. pad, unk)")


def find_sst2(sst2_dir: str | None) -> Path | None:
    """The folder holding train.tsv / dev.tsv, None when the path is unset or absent; a path
    that exists but holds no SST-2 copy is a UserError."""
    if not sst2_dir:
        return None
    path = Path(sst2_dir).expanduser()
    if not path.exists():
        return None
    if not path.is_dir():
        raise UserError(f"SST-2 path {path} is a file, not a folder holding train.tsv and dev.tsv")
    for cand in (path, path / "SST-2"):
        if any((cand / f).exists() for f in SPLIT_FILES.values()):
            missing = [f for f in SPLIT_FILES.values() if not (cand / f).is_file()]
            if missing:
                raise UserError(f"SST-2 folder {cand} lacks {', '.join(missing)}")
            return cand
    raise UserError(f"SST-2 path {path} holds neither train.tsv / dev.tsv nor SST-2/")


def read_split(path: Path) -> tuple[list[str], list[int]]:
    """Sentences and 0/1 labels of one GLUE TSV file (module docstring for the checks)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"SST-2 file {path} is not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"SST-2 file {path} cannot be read: {e.strerror}") from None
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or [c.strip() for c in rows[0]] != HEADER:
        got = "\\t".join(rows[0]) if rows else "an empty file"
        raise UserError(f"SST-2 file {path}: header must be 'sentence\\tlabel', got {got!r}")
    sentences, labels = [], []
    for i, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2:
            raise UserError(f"SST-2 file {path} line {i}: {len(row)} fields, expected 2")
        sentence, label = row[0].strip(), row[1].strip()
        if label not in ("0", "1"):
            raise UserError(f"SST-2 file {path} line {i}: label {label!r} is not 0 or 1")
        if not sentence:
            raise UserError(f"SST-2 file {path} line {i}: empty sentence")
        sentences.append(sentence)
        labels.append(int(label))
    if not sentences:
        raise UserError(f"SST-2 file {path} has no sentences")
    return sentences, labels


def read_sst2(sst2_dir: str | None) -> dict[str, tuple[list[str], list[int]]]:
    """{"train": ..., "test": ...} (test = GLUE dev); UserError when absent or corrupt."""
    root = find_sst2(sst2_dir)
    if root is None:
        raise UserError(f"no SST-2 data at {sst2_dir or '$SSMLAB_SST2 (unset)'}")
    return {split: read_split(root / name) for split, name in SPLIT_FILES.items()}


def check_sst2(sst2_dir: str | None) -> None:
    """Every check of `read_sst2` when data are configured; nothing when absent."""
    if find_sst2(sst2_dir) is not None:
        read_sst2(sst2_dir)


def sst2(cfg: Sst2Config, seed: int) -> Sst2Data:
    """Load, subsample, tokenise and pad both splits (module docstring)."""
    raw = read_sst2(cfg.sst2_dir)
    picked = {}
    for split in ("train", "test"):
        texts, labels = raw[split]
        n = cfg.n_train if split == "train" else cfg.n_test
        idx = subsample(len(texts), n, numpy_rng(seed, split))
        picked[split] = ([texts[i] for i in idx], [labels[i] for i in idx])
    vocab = build_vocab(picked["train"][0], cfg.vocab_size)

    def lab(v: list[int]) -> torch.Tensor:
        return torch.tensor([1.0 if y == 1 else -1.0 for y in v])

    return Sst2Data(
        x_train=encode_words(picked["train"][0], vocab, cfg.T), y_train=lab(picked["train"][1]),
        x_test=encode_words(picked["test"][0], vocab, cfg.T), y_test=lab(picked["test"][1]),
        vocab_size=len(vocab) + 2, tokenizer="word", source=str(cfg.sst2_dir),
    )
