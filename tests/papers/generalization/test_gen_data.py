"""Data invariants: Majority bits, ListOps (LRA rules), IMDb loader on a fixture directory."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch

from ssmlab.data.imdb import ImdbConfig, bert_tokenizer, find_imdb, imdb, read_imdb, word_tokens
from ssmlab.data.listops import (
    MED,
    PAD_ID,
    VOCAB,
    LengthTables,
    ListOpsConfig,
    evaluate,
    evaluate_tokens,
    generate_rows,
    listops,
    parse_tokens,
    read_tsv,
    sample_trees,
    source_tokens,
    to_source,
    tree_length,
    tree_tokens,
    write_tsv,
)
from ssmlab.errors import UserError
from ssmlab.papers.generalization.data import MajorityConfig, majority_bits

# ----------------------------------------------------------------------------- majority


@pytest.fixture(scope="module")
def maj():
    return majority_bits(MajorityConfig(T=60, n_train=2000, n_test=500), seed=3)


def test_majority_labels_come_from_the_clean_sequence(maj):
    k = maj.x_train_clean.sum(1)
    expect = torch.where(k > 30, 1.0, -1.0)
    assert torch.equal(maj.y_train, expect)
    # after noise the labels no longer all agree with the noisy majority (noise is train-only)
    noisy = torch.where(maj.x_train.sum(1) > 30, 1.0, -1.0)
    assert (noisy != maj.y_train).any()


def test_majority_test_inputs_are_clean(maj):
    expect = torch.where(maj.x_test.sum(1) > 30, 1.0, -1.0)
    assert torch.equal(maj.y_test, expect)


def test_majority_noise_flips_only_ones_at_rate_one_quarter(maj):
    assert ((maj.x_train == 1) <= (maj.x_train_clean == 1)).all()  # only 1 -> 0
    ones = int(maj.x_train_clean.sum())
    flipped = int((maj.x_train_clean - maj.x_train).sum())
    rate = flipped / ones
    sd = math.sqrt(0.25 * 0.75 / ones)
    assert abs(rate - 0.25) < 5 * sd, rate


def test_majority_number_of_ones_is_uniform(maj):
    k = maj.x_train_clean.sum(1).numpy()
    assert k.min() == 0 or k.max() == 60  # full range reached at n=2000 with T=60 (likely both)
    counts = np.bincount(k, minlength=61)
    expected = len(k) / 61
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 120, chi2  # dof 60; 99.9% quantile ≈ 99.6, some slack


def test_majority_is_pure_and_streams_are_disjoint():
    cfg = MajorityConfig(T=20, n_train=50, n_test=50)
    a, b = majority_bits(cfg, 7), majority_bits(cfg, 7)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    c = majority_bits(cfg, 8)
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.x_train_clean, a.x_test)


# ----------------------------------------------------------------------------- listops


def test_vocabulary_is_the_16_tokens():
    assert len(VOCAB) == 16 and sorted(VOCAB.values()) == list(range(16))
    assert PAD_ID == 15 and VOCAB["]"] == 14


def test_operator_semantics():
    assert evaluate_tokens("[MAX 2 9 [MIN 4 7 ] 0 ]".split()) == 9
    assert evaluate_tokens("[SM 8 9 5 ]".split()) == 2
    assert evaluate_tokens(f"{MED} 1 2 7 8 ]".split()) == 4  # median 4.5 -> int 4 (LRA)
    assert evaluate_tokens(f"{MED} 3 9 1 ]".split()) == 3
    assert evaluate_tokens(["7"]) == 7
    with pytest.raises(ValueError):
        evaluate_tokens("[MAX 2 9".split())


def test_source_format_is_lras():
    tree = ("[MIN", (3, 4))
    assert to_source(tree) == "( ( ( [MIN 3 ) 4 ) ] )"
    assert source_tokens(to_source(tree)) == ["[MIN", "3", "4", "]"]


@pytest.fixture(scope="module")
def lo_rows():
    cfg = ListOpsConfig(T=60, n_train=120, n_test=60, cache_dir="")
    return cfg, generate_rows(cfg, seed=0)


def test_listops_labels_equal_the_evaluator(lo_rows):
    _, (train, test) = lo_rows
    for src, y in train + test:
        toks = source_tokens(src)
        assert evaluate_tokens(toks) == y
        assert evaluate(parse_tokens(toks)) == y
        assert tree_tokens(parse_tokens(toks)) == toks


def test_listops_length_window(lo_rows):
    cfg, (train, test) = lo_rows
    lengths = [len(source_tokens(s)) for s, _ in train + test]
    assert min(lengths) > cfg.T - cfg.window and max(lengths) < cfg.T + cfg.window
    assert len(set(lengths)) > 3  # the window is actually used, not a single length


def test_listops_train_and_test_are_disjoint_and_unique(lo_rows):
    _, (train, test) = lo_rows
    tr = [s for s, _ in train]
    assert len(set(tr)) == len(tr)
    assert not set(tr) & {s for s, _ in test}


def test_tsv_round_trip(tmp_path, lo_rows):
    _, (train, _) = lo_rows
    write_tsv(tmp_path / "basic_train.tsv", train)
    assert read_tsv(tmp_path / "basic_train.tsv") == train
    head = (tmp_path / "basic_train.tsv").read_text().splitlines()[0]
    assert head == "Source\tTarget"


def test_read_tsv_rejects_bad_files(tmp_path):
    with pytest.raises(UserError):
        read_tsv(tmp_path / "missing.tsv")
    (tmp_path / "bad.tsv").write_text("a\tb\nx\t1\n")
    with pytest.raises(UserError):
        read_tsv(tmp_path / "bad.tsv")


def test_listops_cache_and_encoding(tmp_path):
    cfg = ListOpsConfig(T=40, n_train=30, n_test=20, cache_dir=str(tmp_path))
    a = listops(cfg, seed=1)
    files = sorted(p.name for p in tmp_path.rglob("*.tsv"))
    assert files == ["basic_test.tsv", "basic_train.tsv"]
    b = listops(cfg, seed=1)  # read back from the cache
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (30, cfg.pad_to)
    for row, (src, y) in zip(a.x_train, a.train_rows, strict=True):
        n = len(source_tokens(src))
        assert (row[n:] == PAD_ID).all() and (row[:n] != PAD_ID).all()
        inv = {v: k for k, v in VOCAB.items()}
        assert evaluate_tokens([inv[int(i)] for i in row[:n]]) == y
    # a different seed is a different file
    listops(cfg, seed=2)
    assert len(list(tmp_path.rglob("basic_train.tsv"))) == 2


def _wilson_hilferty(dof: int, z: float = 3.09) -> float:
    """Approximate chi-square quantile (z = 3.09: 99.9%)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize("method", ["exact", "rejection"])
def test_samplers_follow_the_lra_length_and_arity_distribution(method):
    """Both samplers against the exact joint law of (length, root arity) from the DP tables."""
    cfg = ListOpsConfig(T=16, window=4, max_depth=4, max_args=5, n_train=1, n_test=1,
                        method=method, cache_dir="")
    n = 2000
    trees = sample_trees(cfg, n, np.random.default_rng(11))
    lo, hi = cfg.min_length + 1, cfg.max_length - 1
    tab = LengthTables(hi, cfg.max_depth, cfg.max_args, cfg.op_prob)
    probs = {}
    for L in range(lo, hi + 1):
        for k in range(2, cfg.max_args + 1):
            probs[(L, k)] = cfg.op_prob / (cfg.max_args - 1) * tab.conv[2][k][L - 2]
    z = sum(probs.values())
    obs = collections.Counter((tree_length(t), len(t[1])) for t in trees)
    keep = {key: p / z * n for key, p in probs.items() if p / z * n >= 5}
    chi2 = sum((obs.get(key, 0) - e) ** 2 / e for key, e in keep.items())
    assert chi2 < _wilson_hilferty(len(keep) - 1), (method, chi2, len(keep))


def test_exact_sampler_reaches_long_sequences_quickly():
    cfg = ListOpsConfig(T=500, n_train=5, n_test=1, cache_dir="")
    trees = sample_trees(cfg, 5, np.random.default_rng(0))
    assert all(495 < tree_length(t) < 505 for t in trees)


# ----------------------------------------------------------------------------- imdb


def _make_acl(root, n=6):
    words = {"pos": "great wonderful film loved it", "neg": "awful boring film hated it"}
    for split in ("train", "test"):
        for lab in ("pos", "neg"):
            d = root / "aclImdb" / split / lab
            d.mkdir(parents=True)
            for i in range(n):
                text = f"{words[lab]} <br /> number {i} " + "word " * (i * 3)
                (d / f"{i}_{7 if lab == 'pos' else 2}.txt").write_text(text.upper())
    return root


def test_imdb_loader_on_fixture(tmp_path):
    root = _make_acl(tmp_path)
    assert find_imdb(str(root)) == str(root / "aclImdb")
    raw = read_imdb(str(root))
    assert len(raw["train"][0]) == 12 and sorted(set(raw["test"][1])) == [0, 1]
    d = imdb(ImdbConfig(T=8, imdb_dir=str(root), tokenizer="word"), seed=0)
    assert d.x_train.shape == (12, 8) and d.x_test.shape == (12, 8)
    assert set(d.y_train.tolist()) == {-1.0, 1.0}
    assert d.tokenizer == "word" and d.vocab_size > 4
    # files are read neg then pos, sorted: review 0 has 7 word tokens -> one <pad> on the right;
    # review 5 has 22 -> truncated to the first 8
    assert len(word_tokens(raw["train"][0][0])) == 7
    assert (d.x_train[0, :7] != 0).all() and d.x_train[0, 7] == 0
    assert (d.x_train[5] != 0).all()


def test_imdb_subsampling_is_seeded(tmp_path):
    root = _make_acl(tmp_path)
    cfg = ImdbConfig(T=6, n_train=5, n_test=4, imdb_dir=str(root), tokenizer="word")
    a, b = imdb(cfg, 1), imdb(cfg, 1)
    assert a.x_train.shape == (5, 6) and a.x_test.shape == (4, 6)
    assert torch.equal(a.x_train, b.x_train)


def test_word_tokens():
    assert word_tokens("It's GREAT!<br />Really.") == ["it's", "great", "!", "really", "."]


def test_imdb_missing_directory(tmp_path):
    assert find_imdb(str(tmp_path / "nowhere")) is None
    with pytest.raises(UserError, match="no IMDb data at"):
        read_imdb(str(tmp_path / "nowhere"))
    if bert_tokenizer() is None:  # no transformers / no offline BERT here: a clear error
        with pytest.raises(UserError, match="bert"):
            imdb(ImdbConfig(T=5, imdb_dir=str(_make_acl(tmp_path)), tokenizer="bert"), 0)
