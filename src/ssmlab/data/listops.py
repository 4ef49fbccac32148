"""ListOps (Long Range Arena rules): generator, evaluator, LRA TSV reader/writer, 16-token vocab.

Glossary (code name -> LRA / generalization paper):
    T            target length; accepted expressions have T - window < length < T + window
                 (LRA's strict `min_length < length < max_length`, the paper's "T ± 5")
    max_depth    maximum tree depth (LRA: 10)
    max_args     maximum arguments per operator (LRA: 10; the minimum is 2)
    op_prob      probability that a node below max_depth is an operator (LRA's VALUE_P = 0.25)
    length       number of tokens once brackets are removed: a digit is 1 token, an operator
                 node is 2 ('[OP' and ']') plus its arguments

Operators: MIN, MAX, MED (int(median), i.e. the mean of the two middle values rounded down for
an even count, as LRA's `int(np.median(...))`), SM (sum mod 10).

The LRA generator draws random trees and keeps the ones whose length falls in the window
(rejection sampling). At T = 1000 about 0.06% of the draws land in the window, so that costs
minutes per data set. `method="exact"` (default) samples the *same distribution* without
rejection: a dynamic programme gives the length distribution P_d(l) of a subtree rooted at
depth d, the total length is drawn from P_1 restricted to the window, and the tree is drawn top
down conditioned on its length (number of arguments ∝ P_{d+1}^{*k}(l - 2), argument lengths one
at a time from the conditional convolution). `method="rejection"` is LRA's procedure (with an
early abort once a partial tree exceeds the window, which cannot change which trees are
accepted); the tests compare the two.

Train and test sets come from disjoint seed streams; test expressions that also occur in the
training set are redrawn (LRA de-duplicates its whole set). Generated data are cached on disk in
LRA's TSV format (columns Source, Target; Source keeps LRA's parenthesised form) under
`cache_dir/listops/<config hash>_seed<seed>/basic_{train,test}.tsv`.

Model inputs: the paper removes the brackets '(' ')' and maps the remaining tokens to the
16-token vocabulary below; sequences are right-padded with <pad> to `T + window - 1` (the longest
allowed length) and the classifier reads the last position, as the authors' code does (it pads
to the longest sequence of the set).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

from ssmlab.config import StrictModel, config_hash
from ssmlab.errors import UserError
from ssmlab.seeding import numpy_rng

MIN, MAX, MED, SUM_MOD, END = "[MIN", "[MAX", "[MED", "[SM", "]"
OPERATORS: tuple[str, ...] = (MIN, MAX, MED, SUM_MOD)
PAD = "<pad>"
# The authors' 16-token vocabulary: digits 0-9, the four operators, ']' and padding.
VOCAB: dict[str, int] = {str(v): v for v in range(10)} | {
    MIN: 10, MAX: 11, MED: 12, SUM_MOD: 13, END: 14, PAD: 15,
}
PAD_ID = VOCAB[PAD]
NUM_CLASSES = 10
MAX_T = 2**16  # sanity limits; the experiments' memory estimates refuse what does not fit
MAX_SAMPLES = 10**7

# A tree is a digit (int) or (operator, (argument trees...)).
Tree = int | tuple[str, tuple["Tree", ...]]


def default_cache_dir() -> Path:
    """$SSMLAB_CACHE if set, else ~/.cache/ssmlab."""
    return Path(os.environ.get("SSMLAB_CACHE") or Path.home() / ".cache" / "ssmlab")


class ListOpsConfig(StrictModel):
    """ListOps data set. Defaults: the paper's (LRA rules, 1000/1000 samples, window ± 5)."""

    T: int = Field(100, ge=1, le=MAX_T, description="target length")
    window: int = Field(5, ge=1, le=MAX_T, description="accept T - window < length < T + window")
    n_train: int = Field(1000, ge=1, le=MAX_SAMPLES)
    n_test: int = Field(1000, ge=1, le=MAX_SAMPLES)
    max_depth: int = Field(10, ge=1, le=100, description="LRA: 10 (recursion depth of a tree)")
    max_args: int = Field(10, ge=2, le=100, description="LRA: 10")
    op_prob: float = Field(0.25, gt=0, lt=1)
    method: Literal["exact", "rejection"] = Field(
        "exact", description="exact conditional sampler (default) or LRA's rejection loop")
    cache_dir: str | None = Field(
        None, description="cache root; None = $SSMLAB_CACHE or ~/.cache/ssmlab; '' = no cache")

    @model_validator(mode="after")
    def _check(self) -> ListOpsConfig:
        if self.T + self.window - 1 < 1 or self.T + self.window - 1 <= max(self.T - self.window, 0):
            raise ValueError(f"empty length window for T={self.T}, window={self.window}")
        return self

    @property
    def min_length(self) -> int:
        """Exclusive lower limit (LRA's min_length)."""
        return self.T - self.window

    @property
    def max_length(self) -> int:
        """Exclusive upper limit (LRA's max_length)."""
        return self.T + self.window

    @property
    def pad_to(self) -> int:
        return self.max_length - 1


# ----------------------------------------------------------------------------- trees


def evaluate(tree: Tree) -> int:
    """The value of an expression tree (LRA's semantics)."""
    if isinstance(tree, int):
        return tree
    op, args = tree
    return _apply(op, [evaluate(a) for a in args])


def _apply(op: str, values: list[int]) -> int:
    if op == MIN:
        return min(values)
    if op == MAX:
        return max(values)
    if op == MED:
        return int(np.median(values))
    if op == SUM_MOD:
        return sum(values) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate_tokens(tokens: list[str]) -> int:
    """Evaluate a bracket-free token list ('[MAX 2 [MIN 4 7 ] 0 ]'.split()) with a stack."""
    stack: list[tuple[str, list[int]]] = []
    result: int | None = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append((tok, []))
        elif tok == END:
            if not stack:
                raise ValueError("unbalanced ']' in ListOps expression")
            op, vals = stack.pop()
            v = _apply(op, vals)
            if stack:
                stack[-1][1].append(v)
            elif result is None:
                result = v
            else:
                raise ValueError("more than one top-level expression")
        elif tok.isdigit() and len(tok) == 1:
            if stack:
                stack[-1][1].append(int(tok))
            elif result is None:
                result = int(tok)
            else:
                raise ValueError("more than one top-level expression")
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
    if stack or result is None:
        raise ValueError("incomplete ListOps expression")
    return result


def tree_tokens(tree: Tree) -> list[str]:
    """Bracket-free tokens, e.g. ['[MIN', '3', '4', ']']."""
    if isinstance(tree, int):
        return [str(tree)]
    op, args = tree
    out = [op]
    for a in args:
        out += tree_tokens(a)
    out.append(END)
    return out


def tree_length(tree: Tree) -> int:
    if isinstance(tree, int):
        return 1
    return 2 + sum(tree_length(a) for a in tree[1])


def to_source(tree: Tree) -> str:
    """LRA's parenthesised string: [MIN 3 4 ] -> '( ( ( [MIN 3 ) 4 ) ] )' (left-nested pairs)."""
    if isinstance(tree, int):
        return str(tree)
    op, args = tree
    k = len(args)
    s = "( " * (k + 1) + op + " " + to_source(args[0]) + " )"
    for a in args[1:]:
        s += " " + to_source(a) + " )"
    return s + " ] )"


def source_tokens(source: str) -> list[str]:
    """LRA Source string -> bracket-free tokens (the paper's preprocessing: drop '(' and ')')."""
    return [t for t in source.replace("(", " ").replace(")", " ").split()]


def parse_tokens(tokens: list[str]) -> Tree:
    """Bracket-free tokens -> tree (inverse of tree_tokens)."""
    stack: list[tuple[str, list[Tree]]] = []
    root: Tree | None = None
    for tok in tokens:
        if tok in OPERATORS:
            stack.append((tok, []))
            continue
        if tok == END:
            if not stack:
                raise ValueError("unbalanced ']' in ListOps expression")
            op, args = stack.pop()
            node: Tree = (op, tuple(args))
        elif tok.isdigit() and len(tok) == 1:
            node = int(tok)
        else:
            raise ValueError(f"unknown ListOps token {tok!r}")
        if stack:
            stack[-1][1].append(node)
        elif root is None:
            root = node
        else:
            raise ValueError("more than one top-level expression")
    if stack or root is None:
        raise ValueError("incomplete ListOps expression")
    return root


# ----------------------------------------------------------------------------- sampling


class LengthTables:
    """Length distributions for the exact sampler, truncated at `cap` tokens.

    P[d][l]: probability that a subtree rooted at depth d has length l (d = 1..max_depth).
    conv[d][k][l]: the k-fold convolution of P[d] (lengths of k independent subtrees at depth d).
    """

    def __init__(self, cap: int, max_depth: int, max_args: int, op_prob: float):
        self.cap, self.max_depth, self.max_args, self.op_prob = cap, max_depth, max_args, op_prob
        n = cap + 1
        self.P: dict[int, np.ndarray] = {}
        self.conv: dict[int, list[np.ndarray]] = {}
        leaf = np.zeros(n)
        leaf[1] = 1.0
        self.P[max_depth] = leaf
        for d in range(max_depth - 1, 0, -1):
            child = self.P[d + 1]
            powers = [np.zeros(n), child]
            powers[0][0] = 1.0
            for _ in range(2, max_args + 1):
                powers.append(np.convolve(powers[-1], child)[:n])
            self.conv[d + 1] = powers
            p = np.zeros(n)
            p[1] = 1.0 - op_prob
            per_k = op_prob / (max_args - 1)  # k ~ U{2..max_args}
            for k in range(2, max_args + 1):
                p[2:] += per_k * powers[k][: n - 2]
            self.P[d] = p


def _pick(rng: np.random.Generator, weights: np.ndarray) -> int:
    """Index i with probability weights[i] / sum (inverse CDF; never a zero-weight index)."""
    c = weights.cumsum()
    return int(c.searchsorted(rng.random() * c[-1], side="right"))


def _sample_exact(rng: np.random.Generator, tab: LengthTables, depth: int, length: int) -> Tree:
    """A tree rooted at `depth`, drawn from the LRA distribution conditioned on its length."""
    if length == 1:
        return int(rng.integers(10))
    if depth >= tab.max_depth or length < 4:
        raise ValueError(f"no tree of length {length} at depth {depth}")
    powers, child = tab.conv[depth + 1], tab.P[depth + 1]
    rest = length - 2
    k = 2 + _pick(rng, np.array([powers[k][rest] for k in range(2, tab.max_args + 1)]))
    lengths = []
    for j in range(k, 1, -1):  # j arguments still to place, `rest` tokens for them
        if rest == j:  # every remaining argument is a single digit
            lengths += [1] * (j - 1)
            rest = 1
            break
        # P(first = x) ∝ P_{d+1}(x) · P_{d+1}^{*(j-1)}(rest - x), x = 1..rest
        wx = child[1 : rest + 1] * powers[j - 1][rest - 1 :: -1][:rest]
        first = 1 + _pick(rng, wx)
        lengths.append(first)
        rest -= first
    lengths.append(rest)
    digits = rng.integers(10, size=k)  # values for the arguments that are digits
    args = tuple(int(digits[i]) if n == 1 else _sample_exact(rng, tab, depth + 1, n)
                 for i, n in enumerate(lengths))
    op = OPERATORS[int(rng.integers(len(OPERATORS)))]
    return (op, args)


def _sample_rejection_once(
    rng: np.random.Generator, depth: int, cfg: ListOpsConfig, budget: int
) -> tuple[Tree | None, int]:
    """LRA's generate_tree; returns (None, -1) as soon as the length reaches `budget`."""
    if depth < cfg.max_depth and rng.random() <= cfg.op_prob:
        k = int(rng.integers(2, cfg.max_args + 1))
        length, args = 2, []
        for _ in range(k):
            sub, n = _sample_rejection_once(rng, depth + 1, cfg, budget - length)
            if sub is None:
                return None, -1
            args.append(sub)
            length += n
            if length >= budget:
                return None, -1
        op = OPERATORS[int(rng.integers(len(OPERATORS)))]
        return (op, tuple(args)), length
    return int(rng.integers(10)), 1


def sample_trees(cfg: ListOpsConfig, n: int, rng: np.random.Generator,
                 exclude: set[str] | None = None) -> list[Tree]:
    """n distinct trees with cfg.min_length < length < cfg.max_length (by cfg.method)."""
    seen: set[str] = set(exclude or ())
    out: list[Tree] = []
    lo, hi = max(cfg.min_length + 1, 1), cfg.max_length - 1  # inclusive accepted range
    if cfg.method == "exact":
        tab = LengthTables(hi, cfg.max_depth, cfg.max_args, cfg.op_prob)
        lengths = np.arange(lo, hi + 1)
        w = tab.P[1][lo : hi + 1]
        if w.sum() <= 0:
            raise UserError(f"ListOps: no expression of length in ({cfg.min_length}, "
                            f"{cfg.max_length}) exists under max_depth={cfg.max_depth}")
        draw = lambda: _sample_exact(rng, tab, 1, int(lengths[_pick(rng, w)]))  # noqa: E731
    else:
        def draw() -> Tree | None:
            tree, length = _sample_rejection_once(rng, 1, cfg, cfg.max_length)
            return tree if tree is not None and length > cfg.min_length else None
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 1000 * n + 10_000_000:
            raise RuntimeError("ListOps sampler made no progress (window too narrow?)")
        tree = draw()
        if tree is None:
            continue
        s = to_source(tree)
        if s in seen:
            continue
        seen.add(s)
        out.append(tree)
    return out


# ----------------------------------------------------------------------------- TSV and data set


def write_tsv(path: str | Path, rows: list[tuple[str, int]]) -> None:
    """Write LRA's TSV format (header Source, Target), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["Source", "Target"])
        w.writerows(rows)
    os.replace(tmp, path)


def read_tsv(path: str | Path) -> list[tuple[str, int]]:
    """Read an LRA ListOps TSV (columns Source, Target); UserError if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ListOps TSV not found: {path}")
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["Source", "Target"]:
            raise UserError(f"{path}: expected a header 'Source<TAB>Target', got {header}")
        rows = []
        for i, row in enumerate(reader, start=2):
            if len(row) < 2:
                raise UserError(f"{path}:{i}: expected two tab-separated columns")
            try:
                rows.append((row[0], int(row[1])))
            except ValueError:
                raise UserError(f"{path}:{i}: Target {row[1]!r} is not an integer") from None
    return rows


def encode(sources: list[str], pad_to: int) -> Tensor:
    """LRA sources -> (n, pad_to) int64 token ids, brackets removed, right-padded with <pad>."""
    out = torch.full((len(sources), pad_to), PAD_ID, dtype=torch.int64)
    for i, s in enumerate(sources):
        ids = [VOCAB[t] for t in source_tokens(s)]
        if len(ids) > pad_to:
            raise UserError(f"ListOps sequence of length {len(ids)} exceeds pad_to={pad_to}")
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return out


@dataclass
class ListOpsData:
    """x_*: (n, pad_to) int64 token ids; y_*: (n,) int64 labels in 0..9; rows: the TSV rows."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    train_rows: list[tuple[str, int]]
    test_rows: list[tuple[str, int]]

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.x_test, self.y_test


def cache_path(cfg: ListOpsConfig, seed: int) -> Path | None:
    if cfg.cache_dir == "":
        return None
    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    key = config_hash(cfg.model_dump(exclude={"cache_dir"}))
    return root / "listops" / f"T{cfg.T}_{key}_seed{seed}"


def generate_rows(cfg: ListOpsConfig, seed: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train rows, test rows) from disjoint seed streams; no test expression is in train."""
    train = sample_trees(cfg, cfg.n_train, numpy_rng(seed, "train"))
    train_rows = [(to_source(t), evaluate(t)) for t in train]
    seen = {s for s, _ in train_rows}
    test = sample_trees(cfg, cfg.n_test, numpy_rng(seed, "test"), exclude=seen)
    return train_rows, [(to_source(t), evaluate(t)) for t in test]


def listops(cfg: ListOpsConfig, seed: int) -> ListOpsData:
    """The data set for one run seed, generated once and cached as LRA TSV files."""
    where = cache_path(cfg, seed)
    rows: tuple[list, list] | None = None
    if where is not None and (where / "basic_train.tsv").is_file() and (where / "basic_test.tsv").is_file():
        tr, te = read_tsv(where / "basic_train.tsv"), read_tsv(where / "basic_test.tsv")
        if len(tr) == cfg.n_train and len(te) == cfg.n_test:
            rows = (tr, te)
    if rows is None:
        rows = generate_rows(cfg, seed)
        if where is not None:
            write_tsv(where / "basic_train.tsv", rows[0])
            write_tsv(where / "basic_test.tsv", rows[1])
    tr, te = rows
    return ListOpsData(
        x_train=encode([s for s, _ in tr], cfg.pad_to),
        y_train=torch.tensor([t for _, t in tr], dtype=torch.int64),
        x_test=encode([s for s, _ in te], cfg.pad_to),
        y_test=torch.tensor([t for _, t in te], dtype=torch.int64),
        train_rows=tr,
        test_rows=te,
    )
