"""analyze() turns numbers into PASS / FAIL; run() works end to end on tiny configs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ssmlab.experiment import REGISTRY, RunRecord
from ssmlab.papers.selectivity.experiments.approximation import (
    Approximation,
    ApproximationConfig,
    err_key,
)
from ssmlab.papers.selectivity.experiments.constructions import Constructions, ConstructionsConfig
from ssmlab.papers.selectivity.experiments.induction import Induction, InductionExpConfig
from ssmlab.papers.selectivity.experiments.memory import Memory, MemoryConfig
from ssmlab.papers.selectivity.experiments.recall import Recall, RecallConfig, frontier


def rec(exp: str, params: dict, metrics: dict, seed: int = 0, history: dict | None = None,
        info: dict | None = None, status: str = "ok") -> RunRecord:
    return RunRecord(exp, "h", params, seed, status, metrics, history or {}, info or {})


def verdicts(claims) -> list[str]:
    return [c.verdict for c in claims]


# --- approximation ----------------------------------------------------------------------------

def approx_records(construction, s4d, s6, seeds=(0, 1, 2)) -> list[RunRecord]:
    """fn(N, seed) -> error; a small seed-dependent factor gives the intervals a width."""
    out = []
    for seed in seeds:
        for model, fn in (("s6_construction", construction), ("s4d", s4d), ("s6_trained", s6)):
            Ns = range(2, 65, 2) if model == "s6_construction" else (2, 4, 8, 16, 32, 64)
            out.append(rec("selectivity/approximation", {"model": model},
                           {err_key(N): fn(N) * (1 + 0.05 * seed) for N in Ns}, seed=seed))
    return out


def by_name(claims) -> dict[str, str]:
    return {c.id.split(":")[1]: c.verdict for c in claims}


def test_approximation_pass(tmp_path: Path) -> None:
    cfg = ApproximationConfig()
    runs = approx_records(lambda N: 0.9 * math.exp(-0.25 * N), lambda N: 0.5 / N,
                          lambda N: 0.3 / N)
    cl = Approximation().analyze(cfg, runs, tmp_path)
    assert by_name(cl) == {"s6_rate": "PASS", "s6_geometric": "PASS", "s4d_rate": "PASS",
                           "s6_edge": "PASS"}
    assert all(c.ci_low is not None and c.tolerance_source for c in cl)
    assert "trained clock-driven S6" in cl[3].note
    assert "unsquared" in cl[2].note  # the other normalisation's slope is stated
    assert (tmp_path / "approximation.png").exists()


def test_approximation_fail(tmp_path: Path) -> None:
    cfg = ApproximationConfig()
    # construction decaying like a power law (and above S4D), S4D like 1/N²
    runs = approx_records(lambda N: 2.0 / N**2, lambda N: 1.0 / N**2, lambda N: 0.9)
    cl = Approximation().analyze(cfg, runs, tmp_path)
    v = by_name(cl)
    assert v["s6_geometric"] == "FAIL" and v["s4d_rate"] == "FAIL" and v["s6_edge"] == "FAIL"
    # a 1/N² power law is steeper than the bound's semilog slope: s6_rate alone cannot tell
    assert v["s6_rate"] == "PASS"
    assert all(c.diagnosis for c in cl if c.verdict == "FAIL")
    assert cl[2].diagnosis_kind == "setup-unknown"


def test_approximation_skip_without_runs(tmp_path: Path) -> None:
    cl = Approximation().analyze(ApproximationConfig(), [], tmp_path)
    assert {c.verdict for c in cl} == {"SKIP"}


# --- memory -----------------------------------------------------------------------------------

def memory_records(acc: dict, after: dict, before: float, seeds=(0, 1),
                   long: dict | None = None) -> list[RunRecord]:
    runs = []
    for seed in seeds:
        for (m, T), a in acc.items():
            met = {"test_acc": a - 0.01 * seed}
            if m == "mamba_pe":
                met |= {"factor_mean_after": after[T] + 0.001 * seed,
                        "factor_median_before": before + 0.01 * seed, "factor_mean_at_n": 0.01}
            runs.append(rec("selectivity/memory", {"model": m, "seq_len": T}, met, seed=seed,
                            history={"hist_after": [0.05] * 20, "hist_before": [0.05] * 20}))
    for (m, T, steps), a in (long or {}).items():
        runs.append(rec("selectivity/memory", {"model": m, "seq_len": T, "steps": steps},
                        {"test_acc": a, "factor_mean_after": 0.9, "factor_median_before": 0.93,
                         "factor_mean_at_n": 0.9}))
    return runs


GOOD_MEMORY = {("mamba_pe", 16): 1.0, ("mamba_pe", 64): 0.99, ("s4d_pe", 16): 1.0,
               ("s4d_pe", 64): 0.3, ("mamba", 16): 0.2, ("mamba", 64): 0.2}


def test_memory_pass_and_fail(tmp_path: Path) -> None:
    cfg = MemoryConfig(seq_lens=(16, 64), long_steps=1500)
    # 3 seeds: a 2-seed interval is t-widened by t(1) = 12.7 and passes nothing here
    cl = Memory().analyze(cfg, memory_records(GOOD_MEMORY, {16: 0.8, 64: 0.95}, 0.1,
                                              seeds=(0, 1, 2)), tmp_path)
    assert verdicts(cl) == ["PASS"] * 5
    bad = dict(GOOD_MEMORY) | {("mamba_pe", 64): 0.6, ("s4d_pe", 64): 0.95}
    long = {("mamba_pe", 64, 1500): 1.0, ("s4d_pe", 64, 1500): 0.97}
    cl = Memory().analyze(cfg, memory_records(bad, {16: 0.9, 64: 0.8}, 0.7, long=long),
                          tmp_path)
    assert verdicts(cl) == ["FAIL"] * 5
    assert all(c.diagnosis and c.diagnosis_kind for c in cl)
    # the evidence is computed from the stored runs, the longer-trained cell included
    assert "1500 steps" in cl[4].diagnosis and "0.930" in cl[4].diagnosis
    assert "share of factors before n below 0.5 0.500" in cl[4].diagnosis  # from the histograms
    assert "accuracy 1.000" in cl[0].diagnosis


def test_memory_long_cells_stay_out_of_the_claims(tmp_path: Path) -> None:
    """The longer-trained cells are evidence only: a failing long cell does not move a verdict."""
    cfg = MemoryConfig(seq_lens=(16, 64), long_steps=1500)
    long = {("mamba_pe", 64, 1500): 0.1, ("s4d_pe", 64, 1500): 1.0}
    cl = Memory().analyze(cfg, memory_records(GOOD_MEMORY, {16: 0.8, 64: 0.95}, 0.1, long=long,
                                              seeds=(0, 1, 2)), tmp_path)
    assert verdicts(cl) == ["PASS"] * 5
    assert "1500" in cl[1].note
    cells = Memory().cells(cfg)
    assert {"model": "mamba_pe", "seq_len": 64, "steps": 1500, "_seeds": 1} in cells
    # S4D without PE (the other reading of the paper's S4D) runs only on request
    assert "s4d" not in MemoryConfig().models and "s4d" in MemoryConfig(models=("s4d",)).models


def test_memory_one_seed_is_inconclusive(tmp_path: Path) -> None:
    cfg = MemoryConfig(seq_lens=(16, 64))
    cl = Memory().analyze(cfg, memory_records(GOOD_MEMORY, {16: 0.8, 64: 0.95}, 0.1, seeds=(0,)),
                          tmp_path)
    assert verdicts(cl) == ["INCONCLUSIVE"] * 5


# --- recall -----------------------------------------------------------------------------------

def recall_records(acc: dict, seeds=(0, 1)) -> list[RunRecord]:
    params = {"mamba2": 1000, "mamba": 1200, "s4d_block": 1100}
    return [rec("selectivity/recall", {"mixer": m, "d_model": d, "d_state": n},
                {"test_acc": a, "mixer_params": params[m] * d / 8}, seed=s)
            for s in seeds for (m, d, n), a in acc.items()]


def test_recall_orderings(tmp_path: Path) -> None:
    cfg = RecallConfig(grid=((8, 8), (16, 8)))
    good = {("mamba2", 8, 8): 1.0, ("mamba2", 16, 8): 1.0, ("mamba", 8, 8): 0.5,
            ("mamba", 16, 8): 1.0, ("s4d_block", 8, 8): 0.3, ("s4d_block", 16, 8): 0.4}
    cl = Recall().analyze(cfg, recall_records(good), tmp_path)
    assert [c.id for c in cl] == ["selectivity/recall:mamba2_beats_mamba",
                                  "selectivity/recall:mamba_beats_s4d"]
    assert verdicts(cl) == ["PASS", "PASS"]
    assert cl[0].value == pytest.approx(0.25)  # mean over cells of (1.0 - 0.5, 1.0 - 1.0)
    assert "Mamba-2 1000 params" in cl[0].note and "S4D none" in cl[1].note  # frontier reported
    worse = good | {("s4d_block", 8, 8): 1.0, ("s4d_block", 16, 8): 1.0}  # S4D beats Mamba cell by cell
    cl = Recall().analyze(cfg, recall_records(worse), tmp_path)
    assert cl[1].verdict == "FAIL" and "S4D d=8 N=8 (1100 params): 1.000, 1.000" in cl[1].diagnosis
    same = good | {("mamba2", 8, 8): 0.5}  # equal everywhere: no ordering shown
    assert Recall().analyze(cfg, recall_records(same), tmp_path)[0].verdict == "FAIL"


def test_recall_seeds_disagree(tmp_path: Path) -> None:
    """Mamba-2 beats Mamba on one seed and loses on the other: the interval straddles 0."""
    cfg = RecallConfig(grid=((8, 8),))
    acc = {("mamba2", 8, 8): 0.9, ("mamba", 8, 8): 0.7, ("s4d_block", 8, 8): 0.3}
    runs = recall_records(acc)
    for r in runs:
        if r.seed == 1 and r.params["mixer"] == "mamba2":
            r.metrics["test_acc"] = 0.6  # differences +0.2 and -0.1
    cl = Recall().analyze(cfg, runs, tmp_path)
    assert cl[0].verdict == "INCONCLUSIVE" and cl[0].seeds_needed


def test_frontier_censoring() -> None:
    params = {("m", 8, 8): 100.0, ("m", 16, 8): 300.0}
    assert frontier([{("m", 8, 8): 0.5, ("m", 16, 8): 1.0}], params, "m", 0.99) == (300.0, False)
    assert frontier([{("m", 8, 8): 0.5, ("m", 16, 8): 0.9}], params, "m", 0.99) == (600.0, True)


# --- induction --------------------------------------------------------------------------------

def test_induction_claim(tmp_path: Path) -> None:
    cfg = InductionExpConfig(sizes=(8, 16))

    def runs(dt8, m8, dt16, m16):
        return [rec("selectivity/induction", {"mixer": mx, "d_model": d}, {"test_acc": a - 0.005 * s},
                    seed=s)
                for s in (0, 1, 2)
                for mx, d, a in (("mamba_dt", 8, dt8), ("mamba", 8, m8), ("mamba_dt", 16, dt16),
                                 ("mamba", 16, m16))]

    assert Induction().analyze(cfg, runs(0.6, 0.5, 0.99, 1.0), tmp_path)[0].verdict == "PASS"
    (c,) = Induction().analyze(cfg, runs(0.4, 0.5, 1.0, 1.0), tmp_path)
    assert c.verdict == "FAIL" and "d=8: Mamba-ΔT 0.395 vs Mamba 0.495" in c.diagnosis
    # a reversal beyond the margin at one size only is a FAIL, whatever the other sizes do
    assert Induction().analyze(cfg, runs(1.0, 0.7, 0.95, 1.0), tmp_path)[0].verdict == "FAIL"


# --- constructions ----------------------------------------------------------------------------

def test_constructions_analyze(tmp_path: Path) -> None:
    cfg = ConstructionsConfig(seq_lens=(32, 64))
    sizes = {f"size_{m}": {"d_inner": 15, "d_used": 8, "d_state": 7} for m in ("mamba", "mamba2", "s4d")}
    mq = {f"acc_{m}_L{L}": 1.0 for m in ("mamba", "mamba2", "s4d") for L in (32, 64)} | {
        "params_mamba2": 1000.0, "params_mamba": 1100.0, "params_s4d": 3000.0}
    runs = [rec("c", {"part": "haar"}, {"haar_err_max": 1e-9, "haar_layer_err_max": 1e-12}),
            rec("c", {"part": "mqar"}, mq, info=sizes | {"pairs_L32": 7, "pairs_L64": 7})]
    cl = Constructions().analyze(cfg, runs, tmp_path)
    assert verdicts(cl) == ["PASS"] * 4
    assert all(c.value is not None for c in cl)
    runs[0].metrics["haar_err_max"] = 1e-3
    runs[1].metrics["acc_s4d_L64"] = 0.9
    runs[1].metrics["params_mamba2"] = 2000.0
    assert verdicts(Constructions().analyze(cfg, runs, tmp_path)) == ["FAIL", "FAIL", "PASS",
                                                                      "FAIL"]


# --- run() on tiny configs --------------------------------------------------------------------

def test_registered() -> None:
    for exp_id in ("selectivity/approximation", "selectivity/constructions", "selectivity/memory",
                   "selectivity/recall", "selectivity/induction"):
        assert exp_id in REGISTRY
        cls = REGISTRY[exp_id]
        for prof in ("quick", "paper"):
            cls.Config(**cls.profiles[prof])  # the profiles validate


TINY_TRAIN = {"steps": 3, "n_train": 32, "n_test": 16, "batch_size": 16}


@pytest.mark.parametrize("exp,cfg,params", [
    (Memory(), MemoryConfig(train=TINY_TRAIN, seq_lens=(16,)), {"model": "mamba_pe", "seq_len": 16}),
    (Memory(), MemoryConfig(train=TINY_TRAIN, seq_lens=(16,)), {"model": "s4d_pe", "seq_len": 16}),
    (Recall(), RecallConfig(train=TINY_TRAIN), {"mixer": "mamba2", "d_model": 8, "d_state": 4}),
    (Recall(), RecallConfig(train=TINY_TRAIN), {"mixer": "s4d_block", "d_model": 8, "d_state": 4}),
    (Induction(), InductionExpConfig(train=TINY_TRAIN), {"mixer": "mamba_dt", "d_model": 8}),
], ids=["memory-mamba", "memory-s4d", "recall-mamba2", "recall-s4d", "induction-dt"])
def test_tiny_runs(exp, cfg, params) -> None:
    r = exp.run(cfg, params, seed=0)
    assert r.status == "ok"
    assert 0.0 <= r.metrics["test_acc"] <= 1.0
    if isinstance(exp, Memory):
        assert 0.0 <= r.metrics["factor_mean_after"] <= 1.0
        assert np.isclose(sum(r.history["hist_after"]), 1.0)


def test_tiny_approximation() -> None:
    cfg = ApproximationConfig(target={"pieces": 4, "grid": 64}, n_states=(2, 4, 8), steps=5)
    for model in ("s6_construction", "s4d", "s6_trained"):
        r = Approximation().run(cfg, {"model": model}, seed=0)
        assert r.status == "ok"
        errs = [r.metrics[err_key(N)] for N in (2, 4, 8)]
        assert all(0 <= e <= 1.5 for e in errs)
    # the construction's error never grows with N
    r = Approximation().run(cfg, {"model": "s6_construction"}, seed=1)
    e = [r.metrics[err_key(N)] for N in (2, 4, 6, 8)]
    assert all(b <= a + 1e-12 for a, b in zip(e, e[1:], strict=False))
