"""What the store, the report and the experiments share: a run's result as returned, a stored
run as the analysis sees it, and a claim with its verdict. Plain data, no behaviour beyond
validation, so that the runner and the report need nothing from the papers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ssmlab.config import StrictModel

Status = Literal["ok", "diverged", "skipped", "failed"]


@dataclass
class RunResult:
    """What one run returns. metrics: scalars; history: lists (per step / per epoch);
    info: small JSON-able extras (slice metadata, shapes); status 'skipped' carries a reason."""

    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    status: Status = "ok"
    reason: str = ""


@dataclass
class RunRecord:
    """A stored run as the analysis sees it. config_hash is the hash of the config without
    its seed fields (runs are shared across seed counts; see docs/architecture.md)."""

    experiment: str
    config_hash: str
    params: dict[str, Any]
    seed: int
    status: Status
    metrics: dict[str, float]
    history: dict[str, list]
    info: dict[str, Any]
    seconds: float = 0.0
    reason: str = ""


Verdict = Literal["PASS", "FAIL", "INCONCLUSIVE", "SKIP"]
DiagnosisKind = Literal["", "finding", "setup-unknown", "profile-too-small", "undiagnosed"]


class Claim(StrictModel):
    """A claim is data: what the paper says, what we measured with its 95% interval, where the
    number had to lie and why, the verdict, and for a FAIL the diagnosis (ssmlab.claims makes
    these from specs; see docs/claims.md).

    Claims stored by earlier versions carry `passed` (True / False / None) instead of a
    verdict; they load as PASS / FAIL / SKIP."""

    paper: str
    experiment: str
    id: str = Field("", description="stable id '<experiment id>:<name>'; '' for legacy claims")
    ref: str = Field(description="figure / table / theorem, e.g. 'Fig. 2', 'Thm 1'")
    claim: str = Field(description="the paper's statement, in one sentence")
    paper_value: str = Field("", description="the paper's own number, where it publishes one")
    measured: str = Field(description="our number(s), formatted, with the interval")
    expected: str = Field(description="the region the number must lie in, e.g. '-2 ± 0.5'")
    tolerance_source: str = Field("", description="why that region")
    verdict: Verdict
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = Field(None, description="how many n_unit are behind the interval")
    n_unit: str = Field("seeds", description="what n counts: seeds, runs or fitted points")
    seeds_needed: int | None = Field(None, description="INCONCLUSIVE: about how many n_unit "
                                     "would settle it")
    diagnosis_kind: DiagnosisKind = ""
    diagnosis: str = Field("", description="FAIL: why it is a finding and not a bug")
    figure: str | None = Field(None, description="figure file name inside figdir")
    note: str = Field("", description="explanation, runs not ok")
    variant: str = Field("", description="'' = the paper's set-up; else what differs (e.g. "
                         "'model.mixer=gla'): a variant's claims never count as the paper's")

    @model_validator(mode="before")
    @classmethod
    def _legacy_passed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "passed" in data and "verdict" not in data:
            data = dict(data)
            p = data.pop("passed")
            data["verdict"] = "SKIP" if p is None else ("PASS" if p else "FAIL")
        return data

    @field_validator("value", "ci_low", "ci_high", mode="before")
    @classmethod
    def _finite_or_none(cls, v: Any) -> Any:
        # a diverged run measures NaN / inf: there is no number to store, the text says why
        return None if isinstance(v, float) and not math.isfinite(v) else v

    @property
    def passed(self) -> bool | None:
        """True for PASS, False for FAIL, None otherwise."""
        return {"PASS": True, "FAIL": False}.get(self.verdict)


class SkipRun(Exception):
    """Raised inside `Experiment.run` when the run cannot be done for a reason that is not an
    error (its data is absent, the cell does not apply): the runner stores it as a skipped run
    carrying the message, and retries it on the next sweep. Instead of returning `X | str`."""


def not_ok_note(runs: list[RunRecord], key: str | None = None) -> str:
    """One sentence on the runs that are not ok (diverged, skipped; failed runs never reach an
    analysis): '2 of 12 runs not ok: 1 diverged, 1 skipped (no IMDb data at X)'. With `key`,
    one clause per value of that cell parameter: 'mamba: 1 of 3 runs diverged (...)'. Empty
    when every run is ok."""
    if key is not None:
        parts = []
        for v in sorted({str(r.params.get(key)) for r in runs}):
            note = not_ok_note([r for r in runs if str(r.params.get(key)) == v])
            if note:
                parts.append(f"{v}: {note}")
        return "; ".join(parts)
    bad = [r for r in runs if r.status != "ok"]
    if not bad:
        return ""
    counts = ", ".join(f"{sum(r.status == s for r in bad)} {s}"
                       for s in sorted({r.status for r in bad}))
    reason = next((r.reason for r in bad if r.reason), "")
    return f"{len(bad)} of {len(runs)} runs not ok: {counts}" + (f" ({reason})" if reason else "")

