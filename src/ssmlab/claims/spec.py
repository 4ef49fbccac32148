"""Claims as specs, and the one evaluator that turns a spec and stored runs into a verdict.

A `ClaimSpec` is declared next to its experiment (`Experiment.specs(cfg)`): what the paper says
(ref, statement, the paper's own number), what we measure (`metric(ctx) -> Estimate`), where
the number must lie (`Region`) and why that region (`tolerance_source`). The verdict follows
from the estimate's 95% interval and the region alone:

    PASS          the interval lies inside the region
    FAIL          the interval lies outside it (no overlap)
    INCONCLUSIVE  the interval straddles a bound (the claim says about how many seeds would
                  settle it), or there is no interval (one seed)
    SKIP          no data (the metric raises `NoData`, e.g. the data set is absent)

A non-finite measurement (a diverged run) is a FAIL. Every FAIL carries a `Diagnosis`: a
finding (the claim does not hold under the paper's set-up; the evidence says why it is not an
artefact), set-up unknown (the deciding hyper-parameter is unpublished), or profile too small
(the quick profile cannot reach the regime). A spec whose FAIL has no diagnosis yields one
marked "undiagnosed", which the report lists as such: a FAIL we cannot explain is either a
bug or a finding still to be argued.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ssmlab.claims.stats import Estimate, seeds_to_settle
from ssmlab.records import Claim, RunRecord, Verdict, not_ok_note

DiagnosisKind = Literal["finding", "setup-unknown", "profile-too-small"]


class NoData(Exception):
    """Raised by a metric when there is nothing to measure (the message says why): SKIP."""


@dataclass(frozen=True)
class Region:
    """Where the measured number must lie: [low, high], either side may be open (None).
    `strict` bounds exclude their end point (for "> 0"-type claims)."""

    low: float | None = None
    high: float | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        if self.low is None and self.high is None:
            raise ValueError("a region needs at least one bound")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"empty region [{self.low}, {self.high}]")

    @classmethod
    def around(cls, centre: float, tol: float) -> Region:
        return cls(centre - tol, centre + tol)

    @classmethod
    def above(cls, bound: float, strict: bool = False) -> Region:
        return cls(low=bound, strict=strict)

    @classmethod
    def below(cls, bound: float, strict: bool = False) -> Region:
        return cls(high=bound, strict=strict)

    def contains(self, x: float) -> bool:
        if self.strict:
            return (self.low is None or x > self.low) and (self.high is None or x < self.high)
        return (self.low is None or x >= self.low) and (self.high is None or x <= self.high)

    def describe(self) -> str:
        lt = "<" if self.strict else "≤"
        gt = ">" if self.strict else "≥"
        if self.low is not None and self.high is not None:
            if not self.strict and math.isclose(self.low, -self.high) and self.low < 0:
                return f"|x| ≤ {self.high:g}"
            mid, half = (self.low + self.high) / 2, (self.high - self.low) / 2
            return f"{mid:g} ± {half:g}"
        if self.low is not None:
            return f"{gt} {self.low:g}"
        return f"{lt} {self.high:g}"


def judge(est: Estimate, region: Region) -> Verdict:
    """The verdict rule of the module docstring (SKIP is the evaluator's, not this)."""
    if not est.finite:
        return "FAIL"
    if not est.has_interval:
        return "INCONCLUSIVE"
    if region.contains(est.low) and region.contains(est.high):
        return "PASS"
    # FAIL when no point of the interval lies in the region (the region is convex)
    if region.low is not None and (est.high <= region.low if region.strict
                                   else est.high < region.low):
        return "FAIL"
    if region.high is not None and (est.low >= region.high if region.strict
                                    else est.low > region.high):
        return "FAIL"
    return "INCONCLUSIVE"


@dataclass(frozen=True)
class Diagnosis:
    """Why a FAIL is not a bug: kind and the evidence, in words with numbers. `evidence` may
    be a callable of the context, for evidence measured from the stored runs."""

    kind: DiagnosisKind
    evidence: str | Callable[[Context], str]

    def text(self, ctx: Context) -> str:
        return self.evidence(ctx) if callable(self.evidence) else self.evidence


@dataclass
class Context:
    """What a metric sees: the config, every finished run (ok, diverged, skipped), the figure
    file names written by the experiment, and a cache for computations several specs share."""

    cfg: Any
    runs: list[RunRecord]
    figdir: Path | None = None
    figures: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "ok"]

    def select(self, ok: bool = True, exact: bool = False, **params: Any) -> list[RunRecord]:
        """Runs whose cell parameters include `params` (exact=True: equal `params`, so a cell
        with an extra key, e.g. a longer-training side cell, is not mixed in), by seed."""
        pool = self.ok if ok else self.runs
        out = [r for r in pool if all(r.params.get(k) == v for k, v in params.items())
               and (not exact or set(r.params) == set(params))]
        return sorted(out, key=lambda r: r.seed)

    def values(self, key: str, exact: bool = False, **params: Any) -> list[float]:
        """metrics[key] of the ok runs of one cell, in seed order; NoData when there are none."""
        rs = self.select(exact=exact, **params)
        if not rs:
            raise NoData(self.why_empty(**params))
        return [float(r.metrics.get(key, math.nan)) for r in rs]

    def seed_matrix(self, columns: Sequence[tuple[dict[str, Any], str]],
                    exact: bool = False) -> np.ndarray:
        """(seeds, columns): metrics[key] of the ok run of each (cell parameters, key) column,
        one row per seed that finished in every column's cell (in seed order), so that a
        paired statistic resamples whole seeds and never pairs one seed's run with another's
        (a seed that diverged in one cell drops out of all). NoData when a cell has no
        finished run or no seed is common to all."""
        per: list[dict[int, float]] = []
        for params, key in columns:
            rs = self.select(exact=exact, **params)
            if not rs:
                raise NoData(self.why_empty(**params))
            per.append({r.seed: float(r.metrics.get(key, math.nan)) for r in rs})
        seeds = sorted(set.intersection(*(set(p) for p in per))) if per else []
        if not seeds:
            raise NoData("no seed finished in every cell the claim reads")
        return np.array([[p[s] for p in per] for s in seeds], float).reshape(len(seeds), len(per))

    def why_empty(self, **params: Any) -> str:
        cell = ", ".join(f"{k}={v}" for k, v in params.items()) or "the experiment"
        note = not_ok_note([r for r in self.runs
                            if all(r.params.get(k) == v for k, v in params.items())])
        return f"no finished runs for {cell}" + (f": {note}" if note else "")

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


@dataclass(frozen=True)
class ClaimSpec:
    """One claim of a paper, checked by one metric against one region.

    name: stable within the experiment; the claim's id is "<experiment id>:<name>".
    ref: the paper's theorem / lemma / figure / table number. statement: the paper's claim in
    one sentence. paper_value: the paper's own number where it publishes one, as text.
    metric(ctx) -> Estimate. region: where the number must lie; tolerance_source: why there
    (the paper's error bars, the seed spread, a constant of the theorem, our choice and its
    reason). quantity: what the number is, for the report ("log-log slope of steps vs gap").
    diagnosis: for a FAIL (see the module docstring). figure: key into ctx.figures.
    support: the quantity's range (low, high), either side None; the interval is cut to it."""

    name: str
    ref: str
    statement: str
    quantity: str
    metric: Callable[[Context], Estimate]
    region: Region
    tolerance_source: str
    paper_value: str = ""
    diagnosis: Diagnosis | None = None
    figure: str | None = None
    note: Callable[[Context], str] | str = ""
    support: tuple[float | None, float | None] | None = None

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name or " " in self.name:
            raise ValueError(f"claim name {self.name!r}: non-empty, no ':' or spaces")
        for attr in ("ref", "statement", "quantity", "tolerance_source"):
            if not getattr(self, attr).strip():
                raise ValueError(f"claim {self.name!r}: {attr} is empty")


def evaluate(spec: ClaimSpec, ctx: Context, paper: str, experiment: str,
             variant: str = "") -> Claim:
    """One claim's verdict from the stored runs (never raises for a metric's NoData).
    variant: "" for the paper's own set-up, else what differs (Experiment.variant)."""
    base = dict(paper=paper, experiment=experiment, id=f"{experiment}:{spec.name}",
                variant=variant,
                ref=spec.ref, claim=spec.statement, paper_value=spec.paper_value,
                expected=spec.region.describe(), tolerance_source=spec.tolerance_source,
                figure=ctx.figures.get(spec.figure) if spec.figure else None)
    run_note = not_ok_note(ctx.runs)
    try:
        est = spec.metric(ctx)
    except NoData as e:
        return Claim(**base, measured=f"{spec.quantity}: {e}", verdict="SKIP", note=run_note)
    if spec.support is not None and est.has_interval:
        est = est.clipped(*spec.support)
    verdict = judge(est, spec.region)
    note = spec.note(ctx) if callable(spec.note) else spec.note
    out: dict[str, Any] = dict(
        measured=f"{spec.quantity}: {est.format()}", verdict=verdict,
        value=est.value, ci_low=est.low if est.has_interval else None,
        ci_high=est.high if est.has_interval else None, n=est.n, n_unit=est.unit,
        note=" ".join(s for s in (note, run_note) if s))
    if verdict == "INCONCLUSIVE":
        out["seeds_needed"] = seeds_to_settle(est, spec.region.low, spec.region.high)
    if verdict == "FAIL":
        if spec.diagnosis is None:
            out |= {"diagnosis_kind": "undiagnosed", "diagnosis": "no diagnosis recorded"}
        else:
            out |= {"diagnosis_kind": spec.diagnosis.kind,
                    "diagnosis": spec.diagnosis.text(ctx)}
    return Claim(**base, **out)


def evaluate_all(specs: Sequence[ClaimSpec], ctx: Context, paper: str,
                 experiment: str, variant: str = "") -> list[Claim]:
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{experiment}: claim names {dup} are used twice")
    return [evaluate(s, ctx, paper, experiment, variant) for s in specs]
