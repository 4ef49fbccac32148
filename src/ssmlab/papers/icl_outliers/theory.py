"""Closed-form predictions of the ICL-with-outliers paper (arXiv 2510.00399), in checkable form.

Glossary: p_a training outlier probability, l_tr / l_ts training / test context length, α test
outlier fraction, M₁ number of relevant patterns, β pattern norm, η step size.

- Thm 1 (Mamba):        T_M = Θ(η⁻¹ (1 - p_a)⁻¹ β⁻² M₁)            (no l_tr dependence)
- Thm 3 (linear Trf.):  T_T = Θ(η⁻¹ (1 - p_a)⁻¹ β⁻² l_tr⁻¹ M₁)
  so T_M / T_T = Θ(l_tr): log-log slope 1 in l_tr.
- Thm 2 (Mamba):        generalizes while α < min(1, p_a l_tr / l_ts)
- Thm 4 (linear Trf.):  generalizes only while α < 1/2
- Cor. 2:               outlier gates O(poly(M₁)⁻¹); the j-th closest clean example's gate is
                        ≥ Θ(2^{-(j-1)}). The corollary is a lower bound: GATE_LOG2_SLOPE = -1 is
                        the steepest log₂-slope of G_j in j it allows (a slower decay satisfies
                        it too). M₁⁻² for the poly in outlier_gate_bound is this folder's choice.

The Θ constants are not given, so the experiments test exponents (log-log slopes), not counts;
mamba_iterations / linear_iterations state the orders with a free constant c.
"""

from __future__ import annotations

#: Log-log slopes of the iteration counts predicted by Thms 1 and 3.
SLOPE_MAMBA_VS_LTR = 0.0
SLOPE_LINEAR_VS_LTR = -1.0
SLOPE_RATIO_VS_LTR = 1.0
SLOPE_MAMBA_VS_INV_CLEAN = 1.0  # T_M against 1 / (1 - p_a)
SLOPE_MAMBA_VS_M1 = 1.0
#: Cor. 2: the steepest log₂-slope of the clean gate in the clean example's rank j from the
#: query that the lower bound Θ(2^{-(j-1)}) allows.
GATE_LOG2_SLOPE = -1.0


def mamba_alpha_threshold(p_a: float, l_tr: int, l_ts: int) -> float:
    """Thm 2: Mamba generalizes for test outlier fractions α < min(1, p_a l_tr / l_ts)."""
    if l_ts <= 0 or l_tr <= 0:
        raise ValueError("context lengths must be positive")
    return min(1.0, p_a * l_tr / l_ts)


def linear_alpha_threshold() -> float:
    """Thm 4: the linear Transformer generalizes only for α < 1/2."""
    return 0.5


def mamba_iterations(eta: float, p_a: float, beta: float, M1: int, c: float = 1.0) -> float:
    """Thm 1's order T_M = c η⁻¹ (1 - p_a)⁻¹ β⁻² M₁ (the constant c is not given)."""
    return c * M1 / (eta * (1.0 - p_a) * beta**2)


def linear_iterations(eta: float, p_a: float, beta: float, M1: int, l_tr: int,
                      c: float = 1.0) -> float:
    """Thm 3's order T_T = c η⁻¹ (1 - p_a)⁻¹ β⁻² l_tr⁻¹ M₁."""
    return c * M1 / (eta * (1.0 - p_a) * beta**2 * l_tr)


def outlier_gate_bound(M1: int, power: float = 2.0) -> float:
    """A concrete instance of Cor. 2's O(poly(M₁)⁻¹) outlier gate: M₁^-power (default M₁⁻²)."""
    return float(M1) ** -power
