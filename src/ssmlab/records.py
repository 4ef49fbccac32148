"""What the store, the report and the experiments share: a run's result as returned, a stored
run as the analysis sees it, and a claim with its verdict. Plain data, no behaviour beyond
validation, so that the runner and the report need nothing from the papers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

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


class Claim(StrictModel):
    """A claim is data: what the paper says, what we measured, the tolerance, and the verdict.

    passed=None means the claim could not be checked (e.g. skipped: no IMDb data at PATH)."""

    paper: str
    experiment: str
    ref: str = Field(description="figure / table / theorem, e.g. 'Fig. 2', 'Thm 1'")
    claim: str = Field(description="the paper's statement, in one sentence")
    measured: str = Field(description="our number(s), formatted, e.g. 'slope -1.93 ± 0.12'")
    expected: str = Field(description="the paper's number or the tolerance, e.g. '-2 ± 0.5'")
    passed: bool | None
    value: float | None = None
    figure: str | None = Field(None, description="figure file name inside figdir")
    note: str = Field("", description="explanation, especially for FAIL")

    @field_validator("value", mode="before")
    @classmethod
    def _finite_or_none(cls, v: Any) -> Any:
        # a diverged run measures NaN / inf: there is no number to store, the text says why
        return None if isinstance(v, float) and not math.isfinite(v) else v

    @property
    def verdict(self) -> str:
        return "SKIP" if self.passed is None else ("PASS" if self.passed else "FAIL")
