"""The claims core: intervals, the verdict rule, the evaluator and legacy claims."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssmlab.claims import (
    ClaimSpec,
    Context,
    Diagnosis,
    NoData,
    Region,
    evaluate,
    evaluate_all,
    exact,
    judge,
    mean_ci,
    paired_ci,
    seed_bootstrap,
    seeds_to_settle,
    slope_ci,
)
from ssmlab.claims.stats import Estimate
from ssmlab.records import Claim, RunRecord


def _run(seed: int, status: str = "ok", **metrics: float) -> RunRecord:
    return RunRecord("p/e", "h", {"cell": "a"}, seed, status, metrics, {}, {})


# ------------------------------------------------------------------ statistics


def test_mean_ci_contains_mean_and_narrows_with_more_seeds():
    rng = np.random.default_rng(0)
    few = mean_ci(rng.normal(1.0, 0.5, 4))
    many = mean_ci(rng.normal(1.0, 0.5, 400))
    assert few.low <= few.value <= few.high
    assert (many.high - many.low) < (few.high - few.low) / 2  # ~1/10 expected
    assert many.low < 1.0 < many.high


def test_mean_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(200):
        e = mean_ci(rng.normal(0.0, 1.0, 30))
        hits += e.low <= 0.0 <= e.high
    assert 0.88 <= hits / 200 <= 0.99


def test_one_seed_has_no_interval_and_a_nan_seed_is_not_dropped():
    one = mean_ci([0.7])
    assert one.value == 0.7 and not one.has_interval
    assert judge(one, Region.above(0.5)) == "INCONCLUSIVE"
    bad = mean_ci([0.7, float("nan"), 0.8])
    assert not bad.finite and judge(bad, Region.above(0.5)) == "FAIL"


def test_paired_ci_keeps_seeds_together():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    b = a - 0.5  # the difference is exactly 0.5 for every seed
    e = paired_ci({"a": a, "b": b}, lambda x, y: float((x - y).mean()))
    assert e.value == pytest.approx(0.5) and e.low == pytest.approx(0.5)
    assert e.high == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in length"):
        paired_ci({"a": [1, 2], "b": [1]}, lambda x, y: 0.0)


def test_slope_ci_recovers_a_power_law_and_needs_three_points():
    x = np.array([1, 2, 4, 8, 16.0])
    y = 3.0 * x ** -2 * np.exp(np.random.default_rng(2).normal(0, 0.05, 5))
    e = slope_ci(x, y, log=True)
    assert e.low < -2 < e.high and e.high - e.low < 0.3
    assert not slope_ci([1, 2], [1, 2]).has_interval
    assert not slope_ci([1, 1, 1], [1, 2, 3]).finite


def test_seed_bootstrap_refits_on_whole_seeds():
    per_seed = [(np.array([1.0, 2, 4]), np.array([1.0, 2, 4]) * s) for s in (1.0, 1.1, 0.9)]

    def slope(items):
        x = np.concatenate([i[0] for i in items])
        y = np.concatenate([i[1] for i in items])
        return slope_ci(x, y, log=True).value

    e = seed_bootstrap(per_seed, slope)
    assert e.value == pytest.approx(1.0, abs=1e-9) and e.low <= 1.0 <= e.high


def test_exact_estimates_settle_alone():
    e = exact(1e-12)
    assert judge(e, Region.below(1e-9)) == "PASS"
    assert judge(exact(1e-3), Region.below(1e-9)) == "FAIL"


# ------------------------------------------------------------------ verdict rule


@pytest.mark.parametrize(("low", "high", "region", "verdict"), [
    (0.6, 0.8, Region.above(0.5), "PASS"),
    (0.3, 0.4, Region.above(0.5), "FAIL"),
    (0.4, 0.6, Region.above(0.5), "INCONCLUSIVE"),
    (-2.2, -1.8, Region.around(-2, 0.5), "PASS"),
    (-3.0, -2.6, Region.around(-2, 0.5), "FAIL"),
    (0.0, 0.2, Region.above(0.0, strict=True), "INCONCLUSIVE"),
    (-0.2, 0.0, Region.above(0.0, strict=True), "FAIL"),
    (0.1, 0.2, Region.above(0.0, strict=True), "PASS"),
])
def test_judge(low, high, region, verdict):
    assert judge(Estimate((low + high) / 2, low, high, 5, "bootstrap over seeds"), region) == verdict


def test_region_rejects_nonsense_and_describes_itself():
    with pytest.raises(ValueError):
        Region()
    with pytest.raises(ValueError):
        Region(2, 1)
    assert Region.around(-2, 0.5).describe() == "-2 ± 0.5"
    assert Region(-0.1, 0.1).describe() == "|x| ≤ 0.1"
    assert Region.above(0, strict=True).describe() == "> 0"


def test_seeds_to_settle_grows_as_the_point_nears_the_bound():
    e = Estimate(0.55, 0.45, 0.65, 4, "bootstrap over seeds")
    near = seeds_to_settle(e, 0.52, None)
    far = seeds_to_settle(e, 0.40, None)
    assert near is not None and far is not None and near > far >= 5
    assert seeds_to_settle(exact(0.5), 0.4, None) is None


# ------------------------------------------------------------------ evaluator


def _spec(**kw) -> ClaimSpec:
    base = dict(name="acc", ref="Fig. 1", statement="accuracy is high", quantity="test accuracy",
                metric=lambda ctx: mean_ci(ctx.values("acc", cell="a")),
                region=Region.above(0.9), tolerance_source="our choice: 0.9 is 'high'")
    return ClaimSpec(**(base | kw))


def test_evaluator_pass_fail_skip_and_diagnosis():
    runs = [_run(s, acc=a) for s, a in enumerate([0.95, 0.97, 0.96])]
    c = evaluate(_spec(), Context(None, runs), "p", "p/e")
    assert (c.verdict, c.id, c.n) == ("PASS", "p/e:acc", 3)
    assert c.ci_low is not None and c.ci_low <= c.value <= c.ci_high
    low = [_run(s, acc=a) for s, a in enumerate([0.5, 0.52, 0.55])]
    f = evaluate(_spec(), Context(None, low), "p", "p/e")
    assert f.verdict == "FAIL" and f.diagnosis_kind == "undiagnosed"
    d = evaluate(_spec(diagnosis=Diagnosis("finding", lambda ctx: f"{len(ctx.ok)} runs")),
                 Context(None, low), "p", "p/e")
    assert (d.diagnosis_kind, d.diagnosis) == ("finding", "3 runs")
    s = evaluate(_spec(), Context(None, [_run(0, "skipped")]), "p", "p/e")
    assert s.verdict == "SKIP" and "no finished runs for cell=a" in s.measured


def test_inconclusive_says_how_many_seeds_would_settle_it():
    runs = [_run(s, acc=a) for s, a in enumerate([0.85, 0.97, 0.92])]
    c = evaluate(_spec(), Context(None, runs), "p", "p/e")
    assert c.verdict == "INCONCLUSIVE" and c.seeds_needed is not None and c.seeds_needed > 3


def test_metric_no_data_and_duplicate_names():
    def none(ctx):
        raise NoData("no IMDb data at X")

    c = evaluate(_spec(metric=none), Context(None, []), "p", "p/e")
    assert c.verdict == "SKIP" and "no IMDb data at X" in c.measured
    with pytest.raises(ValueError, match="used twice"):
        evaluate_all([_spec(), _spec()], Context(None, []), "p", "p/e")


@pytest.mark.parametrize("bad", [dict(name="a b"), dict(name="x:y"), dict(ref=" "),
                                 dict(tolerance_source="")])
def test_spec_rejects_empty_fields(bad):
    with pytest.raises(ValueError):
        _spec(**bad)


def test_legacy_claims_load_with_a_verdict():
    old = {"paper": "p", "experiment": "p/e", "ref": "r", "claim": "c", "measured": "m",
           "expected": "e", "passed": False, "value": None, "figure": None, "note": ""}
    c = Claim.model_validate(old)
    assert c.verdict == "FAIL" and c.passed is False and c.id == ""
    assert Claim.model_validate(old | {"passed": None}).verdict == "SKIP"
    assert Claim(paper="p", experiment="e", ref="r", claim="c", measured="m", expected="e",
                 verdict="INCONCLUSIVE", value=math.nan).value is None


def test_a_variant_is_carried_on_every_claim():
    runs = [_run(s, acc=a) for s, a in enumerate([0.95, 0.97, 0.96])]
    claims = evaluate_all([_spec()], Context(None, runs), "p", "p/e", variant="model.mixer=gla")
    assert [c.variant for c in claims] == ["model.mixer=gla"]
    assert evaluate(_spec(), Context(None, runs), "p", "p/e").variant == ""


def test_flat_line_is_an_exact_zero_slope_and_units_are_printed():
    e = slope_ci([1, 2, 3, 4], [2.0, 2.0, 2.0, 2.0])
    assert (e.value, e.low, e.high, e.unit) == (0.0, 0.0, 0.0, "points")
    assert judge(e, Region.around(0, 0.1)) == "PASS"
    assert "n=4 points" in slope_ci([1, 2, 3, 4], [1, 2.1, 2.9, 4.2]).format()
    assert "n=3 runs" in mean_ci([1, 2, 3], unit="runs").format()


def test_slopes_and_runs_say_how_many_would_settle_them():
    e = slope_ci([1, 2, 3, 4, 5], [0.0, 0.3, 0.1, 0.5, 0.3])
    assert e.has_interval
    assert seeds_to_settle(e, None, e.value + (e.high - e.value) / 2) > 5


def test_exact_selection_leaves_side_cells_out():
    main = RunRecord("p/e", "h", {"cell": "a"}, 0, "ok", {"acc": 0.5}, {}, {})
    side = RunRecord("p/e", "h", {"cell": "a", "epochs": 1000}, 0, "ok", {"acc": 0.9}, {}, {})
    ctx = Context(None, [main, side])
    assert ctx.values("acc", cell="a") == [0.5, 0.9]
    assert ctx.values("acc", exact=True, cell="a") == [0.5]


def test_few_seed_intervals_keep_their_coverage():
    # the percentile bootstrap alone covers ~75% with 3 seeds; the t-widening restores ~95%
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(300):
        e = mean_ci(rng.normal(0.0, 1.0, 3))
        hits += e.low <= 0.0 <= e.high
    assert hits / 300 >= 0.9


def test_scaled_keeps_unit_and_orders_bounds():
    e = slope_ci([1, 2, 3, 4], [1, 2.1, 2.9, 4.2]).scaled(-100)
    assert e.unit == "points" and e.low <= e.value <= e.high and e.value < -90


def test_support_cuts_the_interval_to_the_quantitys_range():
    runs = [_run(s, acc=a) for s, a in enumerate([0.99, 0.7, 0.98])]
    plain = evaluate(_spec(), Context(None, runs), "p", "p/e")
    cut = evaluate(_spec(support=(0.0, 1.0)), Context(None, runs), "p", "p/e")
    assert plain.ci_high > 1.0 and cut.ci_high == 1.0
    assert cut.ci_low == plain.ci_low and cut.value == plain.value


def test_seed_matrix_pairs_by_seed_when_a_run_diverged():
    """Seed 0 diverged in cell b: a paired statistic must compare a's seeds 1, 2 with b's seeds
    1, 2 (a positional pairing would set a's seed 0 against b's seed 1)."""
    def rec(cell: str, seed: int, acc: float, status: str = "ok") -> RunRecord:
        return RunRecord("p/e", "h", {"cell": cell}, seed, status, {"acc": acc}, {}, {})
    runs = [rec("a", 0, 0.1), rec("a", 1, 0.5), rec("a", 2, 0.9),
            rec("b", 0, math.nan, "diverged"), rec("b", 1, 0.4), rec("b", 2, 0.8)]
    mat = Context(None, runs).seed_matrix([({"cell": "a"}, "acc"), ({"cell": "b"}, "acc")])
    assert mat.tolist() == [[0.5, 0.4], [0.9, 0.8]]
    with pytest.raises(NoData, match="no finished runs for cell=c"):
        Context(None, runs).seed_matrix([({"cell": "c"}, "acc")])
    disjoint = [rec("a", 0, 0.1), rec("b", 1, 0.4)]
    with pytest.raises(NoData, match="no seed finished in every cell"):
        Context(None, disjoint).seed_matrix([({"cell": "a"}, "acc"), ({"cell": "b"}, "acc")])
