"""Closed forms of the filtering paper: predicted scalings and the gate matrix at initialization.

Paper: arXiv 2602.12499 (ICLR 2026); the statements below are restated in README.md beside this
module ("The setting"), with the code that checks each one ("Where each claim lives").

    Thm 1 (majority voting):   T = Θ(L² / (η (α_r - α_c)²)),   N ≥ Ω(L² d / (η² (α_r - α_c)²))
    Lemma 4.1:                 ⟨w_Δ, o_+⟩ grows ~linearly in t with slope ∝ η (α_r - α_c)²,
                               ⟨w_Δ, o_j⟩ ≈ 0 for irrelevant j
    Thm 2 (locality):          T, N scale with g = (1/2)^{ΔL⁺} - (1/2)^{ΔL⁻} (as 1/g or 1/g²)
    Lemma 4.2:                 ⟨w_Δ, o_j⟩ strongly negative for irrelevant j, relevant ≈ 0

The constants hidden in Θ / Ω were not published: only the exponents are checkable (the
SLOPE_* constants below); Thm 1's sample bound is checked in sign by filtering/samples (N*
against d and against the gap).
"""

from __future__ import annotations

import numpy as np

# Log-log slopes predicted by Thm 1 for the steps to converge.
SLOPE_STEPS_VS_GAP = -2.0  # T ∝ (α_r - α_c)^-2
SLOPE_STEPS_VS_LR = -1.0  # T ∝ η^-1
SLOPE_STEPS_VS_L = 2.0  # T ∝ L² (a sufficient iteration count)
# Thm 2: the locality rates are polynomial in 1/g with exponent 1 or 2.
SLOPE_STEPS_VS_LOCALITY_GAP = (-2.0, -1.0)


def locality_gap(delta_close: float, delta_far: float) -> float:
    """g = (1/2)^{ΔL⁺} - (1/2)^{ΔL⁻} (Thm 2)."""
    return 0.5**delta_close - 0.5**delta_far


def init_gate_matrix(L: int) -> np.ndarray:
    """G at w_Δ = 0, indexed [t, s]: (1/2)^{t-s+1} for s ≤ t, 0 above the diagonal."""
    t = np.arange(L)
    lag = t[:, None] - t[None, :]
    return np.where(lag >= 0, 0.5 ** (lag + 1.0), 0.0)

