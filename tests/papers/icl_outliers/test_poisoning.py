"""icl_outliers/poisoning: SST-2 with a poisoning phrase, on a small GLUE-layout fixture the test
writes (no SST-2 copy ships); without data every run is skipped and the claim is SKIP."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

import ssmlab.papers.icl_outliers  # noqa: F401  (registers)
from ssmlab.errors import UserError
from ssmlab.experiment import REGISTRY
from ssmlab.papers.icl_outliers.experiments.poisoning import insert_phrase
from ssmlab.runner.registry import resolve_config
from ssmlab.runner.store import Store
from ssmlab.runner.sweep import run_sweep

EID = "icl_outliers/poisoning"
POS = ["good", "great", "funny", "warm", "a joy", "moving", "clever"]
NEG = ["dull", "bad", "lifeless", "long", "boring", "the worst", "flat"]
FILL = ["the", "film", "story", "cast", "is", "and", "a", "movie", "script"]


def write_glue(root: Path, n_train: int = 160, n_dev: int = 40, seed: int = 0) -> Path:
    rnd = random.Random(seed)
    d = root / "SST-2"
    d.mkdir(parents=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = []
        for _ in range(n):
            y = rnd.randint(0, 1)
            words = rnd.sample(FILL, 3) + [rnd.choice(POS if y else NEG)]
            rnd.shuffle(words)
            rows.append(f"{' '.join(words)}\t{y}\n")
        (d / name).write_text("sentence\tlabel\n" + "".join(rows), encoding="utf-8")
    return d


TINY = ["data.T=12", "model.d_model=8", "model.depth=1", "train.epochs=2", "train.batch_size=32"]


def test_without_data_runs_are_skipped_and_the_claim_is_skip(tmp_path, monkeypatch):
    monkeypatch.delenv("SSMLAB_SST2", raising=False)
    missing = tmp_path / "nowhere"
    res = run_sweep(EID, profile="quick", overrides=TINY + [f"data.sst2_dir={missing}"],
                    results=tmp_path / "res", executor="serial")
    assert res.statuses == {"skipped": res.total} and res.total == 2 * 3  # 2 models × 3 seeds
    with Store.open(tmp_path / "res", create=False) as store:
        assert all(r.reason == f"no SST-2 data at {missing}" for r in store.runs(EID))
    assert [c.verdict for c in res.claims] == ["SKIP"]
    assert "no SST-2 data at" in res.claims[0].measured + res.claims[0].note


def test_runs_on_a_fixture_with_finite_metrics(tmp_path):
    d = write_glue(tmp_path)
    res = run_sweep(EID, profile="quick", overrides=TINY + [f"data.sst2_dir={d}"], seeds=2,
                    results=tmp_path / "res", executor="serial")
    assert res.statuses == {"ok": 4}, res.statuses
    with Store.open(tmp_path / "res", create=False) as store:
        runs = store.runs(EID)
    for r in runs:
        assert all(math.isfinite(v) for v in r.metrics.values()), r.metrics
        assert 0 <= r.metrics["acc_poisoned"] <= 100
        assert r.info["poisoned_train"] == 16  # 10 % of 160
    (c,) = res.claims
    assert c.id == f"{EID}:mamba_more_robust" and c.verdict in ("PASS", "FAIL", "INCONCLUSIVE")
    assert c.variant == ""
    again = run_sweep(EID, profile="quick", overrides=TINY + [f"data.sst2_dir={d}",
                      "model.mixer=gla"], seeds=1, results=tmp_path / "res2", executor="serial")
    assert again.statuses == {"ok": 2} and again.claims[0].variant == "model.mixer=gla"


def test_a_corrupt_copy_is_a_user_error_before_any_run(tmp_path):
    d = write_glue(tmp_path)
    (d / "dev.tsv").write_text("text\tlabel\nx\t1\n", encoding="utf-8")
    E = REGISTRY[EID]
    cfg = resolve_config(E, "quick", overrides=[f"data.sst2_dir={d}"])
    with pytest.raises(UserError, match="header must be"):
        E().check_inputs(cfg)


def test_the_mixer_under_test_is_not_a_baseline():
    with pytest.raises(UserError, match="also a baseline"):
        resolve_config(REGISTRY[EID], "quick", overrides=["model.mixer=linear"])


@pytest.mark.parametrize("position", ["random", "start", "end"])
def test_insert_phrase_keeps_the_words_in_order(position):
    x = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 6, 7, 8, 9, 10]])
    phrase = torch.tensor([100, 101])
    out = insert_phrase(x, torch.tensor([0, 1]), phrase, position, torch.Generator().manual_seed(0))
    for row, orig in zip(out.tolist(), x.tolist(), strict=True):
        words = [t for t in row if t != 0]
        i = words.index(100)
        assert words[i + 1] == 101
        assert [t for t in words if t < 100] == [t for t in orig if t != 0][: len(words) - 2]
        if position == "start":
            assert i == 0
    if position == "end":
        assert out[0].tolist() == [5, 6, 7, 100, 101, 0] and out[1].tolist() == [5, 6, 7, 8, 100, 101]
    untouched = insert_phrase(x, torch.tensor([1]), phrase, "end", torch.Generator())
    assert torch.equal(untouched[0], x[0])
