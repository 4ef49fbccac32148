"""The probe's results as plain data (numpy arrays, floats, lists): what probe() returns, what
the report draws and writes to JSON. Free of torch: ssmlab.interop.report needs only numpy and
matplotlib to redraw a result."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Stopwatch:
    """Seconds per named stage, accumulated over calls (the probe's timing table)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - t0


@dataclass
class LayerProbe:
    """One layer's quantities (JSON via `as_json`; arrays kept for the figures)."""

    layer: int
    scalars: dict[str, float]
    A_values: np.ndarray  # (C·N',) all entries of A
    s_A_channel: np.ndarray  # (C,)
    delta_stats: dict[str, np.ndarray]  # mean / std / min / max per channel, (C,)
    gate: np.ndarray  # (L,)
    top_tokens: list[dict[str, Any]]
    channel_top_tokens: dict[int, list[dict[str, Any]]]
    alpha_display: np.ndarray  # (k + 1, L', L') |α| of the chosen channels and of the mean
    lookback: dict[str, float]
    memory: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        mem = self.memory
        return {
            "layer": self.layer,
            **{k: json_number(v) for k, v in self.scalars.items()},
            "A": {"quantiles": _quantiles(self.A_values),
                  "s_A_per_channel": _nums(self.s_A_channel)},
            "delta": {"per_channel": {k: _nums(v) for k, v in self.delta_stats.items()},
                      "quantiles_of_channel_means": _quantiles(self.delta_stats["mean"]),
                      "gate": _nums(self.gate), "top_tokens": self.top_tokens,
                      "top_tokens_per_channel": {str(c): v for c, v in
                                                 self.channel_top_tokens.items()}},
            "attention": {"lookback_tokens": {k: json_number(v) for k, v in self.lookback.items()}},
            "memory": {"factor_mean": json_number(mem["mean"]), "factor_median": json_number(mem["median"]),
                       "keep_per_token": _nums(mem["keep"]),
                       "retention_per_token": _nums(mem["retention"]),
                       "log10_factor_histogram": {"edges": _nums(mem["edges"]),
                                                  "counts": [int(c) for c in mem["hist"]]},
                       "horizon_tokens_quantiles": _quantiles(mem["tau"])},
        }


@dataclass
class ProbeResult:
    """Every probed layer's quantities for one input, plus what was probed and timings."""

    source: str
    fmt: str
    spec: dict[str, Any]
    tokens: list[int]
    labels: list[str] | None
    truncated_from: int | None
    channels: list[int]
    layers: list[LayerProbe]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def T(self) -> int:
        return len(self.tokens)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "format": self.fmt, "arch": self.spec["arch"],
            "spec": {k: v for k, v in self.spec.items() if k != "extra"},
            "T": self.T, "tokens": self.tokens, "labels": self.labels,
            "truncated_from": self.truncated_from, "channels": self.channels,
            "channel_kind": "head" if self.spec["arch"] == "mamba2" else "inner channel",
            "layers": [lp.as_json() for lp in self.layers],
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "definitions": DEFINITIONS,
        }


DEFINITIONS = {
    "s_A": "spectral abscissa of the continuous-time diagonal A = -exp(A_log): max over "
           "channels c and states n of A[c, n]",
    "rho_A": "max over tokens t, channels c, states n of |exp(Δ_t[c] A[c, n])| on this input: "
             "the spectral radius of the discretised transitions",
    "rho_A_bound": "max_c exp(s_{A,c} softplus(p_c - |q_c| B_u)): the generalization paper's "
                   "ρ_A, worst case over inputs with |u_t| <= B_u",
    "log_S2": "ln Σ_{t=1..T} t ρ^t at T = input length (with rho_A_bound; log_S2_measured with "
              "rho_A)",
    "log_capacity_sqrt_m": "ln(M_Δ B_w B_u^3 B_B B_C B_A S2(rho_A_bound, T)): Thm 3.3's "
                           "capacity term times sqrt(m), without its constant and log factors",
    "gate": "mean over channels of Δ_t[c] / mean_t Δ_t[c]",
    "alpha": "implied attention α_{t,s} = C_t · (Π_{k=s+1..t} exp(Δ_k A)) B_s Δ_s per channel",
    "lookback_tokens": "mean over rows t of Σ_s |α_{t,s}| (t - s) / Σ_s |α_{t,s}|",
    "memory_factor": "exp(Δ_t[c] A[c, n]): fraction of state (c, n) kept at step t",
    "retention": "mean over (c, n) of Π_{k=s+1..T} exp(Δ_k A): how much of token s survives "
                 "to the last token",
    "horizon_tokens": "1 / (|s_{A,c}| mean_t Δ_t[c]): e-folding time of channel c's slowest state",
}


def json_number(v: float) -> float | None:
    """6 significant digits, or None for inf / NaN (strict JSON has neither)."""
    v = float(v)
    return float(f"{v:.6g}") if math.isfinite(v) else None


def _nums(a: np.ndarray) -> list[float | None]:
    return [json_number(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def _quantiles(a: np.ndarray) -> dict[str, float | None]:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {}
    qs = np.quantile(a, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {k: json_number(v) for k, v in zip(("min", "p10", "median", "p90", "max"), qs, strict=True)}


