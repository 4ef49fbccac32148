"""Closed forms of the generalization paper (Honarpisheh et al., arXiv 2502.01473).

Glossary (code name -> paper symbol):
    s_A        s_A    spectral abscissa of the continuous-time A: max_{c,n} A[c, n] (diagonal A)
    rho        ρ_A    bound on the discrete decay |exp(Δ_t A)| over all admissible inputs
    p, L_p     p, |p| step bias and its norm
    B_q        B_q    ||q||_2,  Δ_t = softplus(p + q^T u_t)
    B_u        B_u    max_t ||u_t||_2 (max row norm of the embedding for token models)
    B_w        B_w    ||w||_2 (binary) or ||W||_F (multi-class readout)
    B_B, B_C   B_B, B_C  ||W_B||_F, ||W_C||_F (M_B, M_C: their entrywise L1 norms, logged only)
    B_A        B_A    max |A[c, n]|
    M_Delta    M_Δ    bound on the step, here softplus(L_p + B_q B_u) (see `step_bound`)
    S2         S₂     Σ_{t=1..T} t ρ^t
    m                 number of training samples

What is exact and what is a choice:
  - ρ_A = (1 + e^{p - B_q B_u})^{s_A + η} is the authors' code's form (`rho_form="code"`; the
    paper adds an arbitrarily small η ≥ 0, default 0 here). Since exp(Δ s_A) = (1 + e^z)^{s_A}
    for Δ = softplus(z), the *worst case* over inputs is z = p - B_q B_u when s_A < 0 and
    z = p + B_q B_u when s_A > 0 (`rho_form="worst_case"`). Both give ρ_A < 1 exactly when
    s_A < 0 and ρ_A = 1 at s_A = 0.
  - Upper bound (Thm 3.3, covering numbers): the generalization gap is bounded by a capacity term
    ∝ M_Δ B_w B_u³ B_B B_C B_A · S₂(ρ_A, T) / √m times factors logarithmic in m and the sizes.
    The constant and the log factors were not published in a form we could verify, so
    `capacity_term` returns the product *without* them: it is meaningful up to a
    T-independent constant (T enters only through S₂), which is what the experiments compare.
  - Lower bound (Thm 4.1): for s_A > 0 the Rademacher complexity of the class is at least
    B_w ((1 + s_A)^T - 1) / s_A · √(2 / (π m)) — exponential in T.
  - Comparison table (paper's Table 1), T-dependence only: selective SSM with s_A < 0: none
    (S₂ → ρ/(1-ρ)²); with s_A ≥ 0: S₂ ~ T ρ^{T+1}/(ρ-1) (ρ > 1), T²/2 (ρ = 1; the paper writes
    T ρ^T for the s_A ≥ 0 row); linear attention Õ(T); softmax attention none.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

RhoForm = Literal["code", "worst_case"]


def softplus(x: float) -> float:
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def spectral_abscissa(A: np.ndarray) -> float:
    """s_A of a block-diagonal A given by its diagonals (d, N): the largest entry."""
    return float(np.max(A))


def rho_A(s_A: float, p: float, B_q: float, B_u: float, form: RhoForm = "code",
          eta: float = 0.0) -> float:
    """ρ_A, the decay bound (module docstring). < 1 iff s_A + η < 0."""
    if form == "code":
        z = p - B_q * B_u
    elif form == "worst_case":
        z = p - B_q * B_u if s_A + eta < 0 else p + B_q * B_u
    else:
        raise ValueError(f"unknown rho form {form!r}; use 'code' or 'worst_case'")
    return float(math.exp((s_A + eta) * softplus(z)))  # (1 + e^z)^{s_A+η}, overflow-safe log


def step_bound(L_p: float, B_q: float, B_u: float) -> float:
    """M_Δ = max Δ_t = softplus(|p| + B_q B_u) over inputs with ||u_t|| ≤ B_u (our choice of
    the paper's step bound; T-independent, so it only scales the capacity term)."""
    return softplus(L_p + B_q * B_u)


# ----------------------------------------------------------------------------- S₂


def s2_sum(rho: float, T: int) -> float:
    """S₂ = Σ_{t=1..T} t ρ^t by direct summation (the definition; float64)."""
    t = np.arange(1, T + 1, dtype=np.float64)
    with np.errstate(over="ignore"):
        return float(np.sum(t * np.power(float(rho), t)))


def s2_closed(rho: float, T: int) -> float:
    """S₂ in closed form: ρ (1 - (T+1) ρ^T + T ρ^{T+1}) / (1 - ρ)², and T(T+1)/2 at ρ = 1."""
    if T <= 0:
        return 0.0
    if rho == 1.0:
        return T * (T + 1) / 2.0
    with np.errstate(over="ignore", invalid="ignore"):
        rT = np.power(float(rho), T)
        val = rho * (1.0 - (T + 1) * rT + T * rT * rho) / (1.0 - rho) ** 2
    return float(val) if np.isfinite(val) else math.inf


def log_s2(rho: float, T: int) -> float:
    """ln S₂, stable for every ρ ≥ 0 and T (log-sum-exp for T ≤ 10^6, else asymptotics)."""
    if T <= 0 or rho <= 0.0:
        return -math.inf
    lr = math.log(rho)
    if T <= 1_000_000:
        t = np.arange(1, T + 1, dtype=np.float64)
        x = np.log(t) + t * lr
        mx = float(x.max())
        return mx + math.log(float(np.exp(x - mx).sum()))
    if rho < 1.0:
        return math.log(s2_closed(rho, T))
    if rho == 1.0:
        return math.log(T) + math.log(T + 1) - math.log(2)
    # ρ > 1: S₂ = ρ (ρ^T (T(ρ-1) - 1) + 1)/(ρ-1)²
    return lr + T * lr + math.log(T * (rho - 1) - 1 + math.exp(-T * lr)) - 2 * math.log(rho - 1)


def s2_limit(rho: float) -> float:
    """lim_{T→∞} S₂ = ρ/(1-ρ)² for ρ < 1; inf otherwise."""
    return rho / (1 - rho) ** 2 if rho < 1 else math.inf


def s2_asymptotic(rho: float, T: int) -> float:
    """Leading behaviour of S₂ in T: ρ/(1-ρ)² (ρ<1), T²/2 (ρ=1), T ρ^{T+1}/(ρ-1) (ρ>1)."""
    if rho < 1:
        return s2_limit(rho)
    if rho == 1:
        return T * T / 2.0
    with np.errstate(over="ignore"):
        return float(T * np.power(rho, T + 1) / (rho - 1))


# ----------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class NormQuantities:
    """The norms of a trained model that the bounds use (module glossary)."""

    s_A: float
    p: float
    L_p: float
    B_q: float
    B_u: float
    B_w: float
    B_B: float
    M_B: float
    B_C: float
    M_C: float
    B_A: float

    def rho(self, form: RhoForm = "code", eta: float = 0.0) -> float:
        return rho_A(self.s_A, self.p, self.B_q, self.B_u, form, eta)

    @property
    def M_Delta(self) -> float:
        return step_bound(self.L_p, self.B_q, self.B_u)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def log_capacity_term(q: NormQuantities, T: int, m: int, form: RhoForm = "code",
                      eta: float = 0.0, include_B_A: bool = True) -> float:
    """ln of M_Δ B_w B_u³ B_B B_C B_A S₂(ρ_A, T) / √m — Thm 3.3's capacity term WITHOUT its
    unknown constant and log factors (T-independent), i.e. meaningful up to a constant.

    include_B_A=False drops the factor B_A: for a model whose A is fixed (not learned) B_A is a
    constant of the set-up rather than of the learned class, and it is 0 at A ≡ 0, which would
    zero the whole product although such a model still has capacity."""
    norms = [q.M_Delta, q.B_w, q.B_u ** 3, q.B_B, q.B_C] + ([q.B_A] if include_B_A else [])
    if any(v <= 0 for v in norms):
        return -math.inf
    return sum(math.log(v) for v in norms) + log_s2(q.rho(form, eta), T) - 0.5 * math.log(m)


def capacity_term(q: NormQuantities, T: int, m: int, form: RhoForm = "code",
                  eta: float = 0.0) -> float:
    """exp(log_capacity_term) (inf on overflow). Up to an unknown constant: see module doc."""
    lc = log_capacity_term(q, T, m, form, eta)
    return math.exp(lc) if lc < 700 else math.inf


def rademacher_lower_bound(B_w: float, s_A: float, T: int, m: int) -> float:
    """Thm 4.1: B_w ((1 + s_A)^T - 1)/s_A · √(2/(π m)) (stated for s_A > 0; at s_A = 0 the
    limit B_w T √(2/(π m)) is returned). Inf on overflow."""
    if s_A <= -1:
        raise ValueError(f"s_A must exceed -1, got {s_A}")
    if s_A == 0:
        growth = float(T)
    else:
        with np.errstate(over="ignore"):
            growth = float(np.expm1(T * np.log1p(s_A)) / s_A)
    return B_w * growth * math.sqrt(2.0 / (math.pi * m))


# ----------------------------------------------------------------------------- comparison table

TABLE_ROWS = (
    ("selective SSM, s_A < 0", "O(1): S₂ → ρ/(1-ρ)²"),
    ("selective SSM, s_A ≥ 0", "S₂ ~ T ρ_A^T (T²/2 at ρ_A = 1)"),
    ("linear attention", "Õ(T)"),
    ("softmax attention", "O(1)"),
)


def t_dependence(kind: str, T: int, rho: float | None = None) -> float:
    """The T-dependent factor of each row of the comparison table (log factors dropped)."""
    if kind == "selective SSM, s_A < 0":
        if rho is None or rho >= 1:
            raise ValueError("the s_A < 0 row needs ρ_A < 1")
        return s2_closed(rho, T)
    if kind == "selective SSM, s_A ≥ 0":
        if rho is None or rho < 1:
            raise ValueError("the s_A ≥ 0 row needs ρ_A ≥ 1")
        return math.exp(log_s2(rho, T))
    if kind == "linear attention":
        return float(T)
    if kind == "softmax attention":
        return 1.0
    raise ValueError(f"unknown row {kind!r}; one of {[r for r, _ in TABLE_ROWS]}")


def comparison_table(T_grid: list[int], rho_stable: float, rho_unstable: float) -> list[dict]:
    """Each row's T-dependence on T_grid, normalised to its value at T_grid[0]."""
    rows = []
    for kind, formula in TABLE_ROWS:
        rho = rho_stable if "< 0" in kind else rho_unstable if "≥ 0" in kind else None
        vals = [t_dependence(kind, T, rho) for T in T_grid]
        rows.append({"model": kind, "T_dependence": formula,
                     "relative": [v / vals[0] if vals[0] else math.nan for v in vals]})
    return rows
