"""Probes of the generalization paper: s_A, ρ_A, the norms, S₂ and both bounds during training.

The authors log s_A, L_p, B_q, B_B, M_B, B_C, M_C, B_A, B_u and the loss every epoch; this probe
logs those plus ρ_A, M_Δ, ln S₂(ρ_A, T), the log of the capacity term of Thm 3.3 (up to its
unknown constant, see ssmlab.papers.generalization.theory; without the factor B_A when A is fixed)
and the log of Thm 4.1's lower bound (for s_A > 0 only, the theorem's condition; NaN
otherwise).
Logarithms are stored because for s_A > 0 the quantities overflow at large T.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ssmlab.papers.generalization.model import GenSSMClassifier
from ssmlab.papers.generalization.theory import (
    NormQuantities,
    RhoForm,
    log_capacity_term,
    log_s2,
    rademacher_lower_bound,
)


@torch.no_grad()
def norm_quantities(model: GenSSMClassifier, B_u: float | None = None) -> NormQuantities:
    """The trained model's norms (glossary of ssmlab.papers.generalization.theory).

    B_u: max input norm; for token models the max row norm of the embedding (as the authors'
    code); must be given for models on real inputs."""
    ssm = model.ssm
    if B_u is None:
        if model.embedding is None:
            raise ValueError("B_u must be given for a model without an embedding")
        B_u = float(model.embedding.weight.norm(dim=1).max())
    p = float(ssm.p.reshape(()))
    return NormQuantities(
        s_A=float(ssm.A.max()),
        p=p,
        L_p=abs(p),
        B_q=float(ssm.q.norm()),
        B_u=float(B_u),
        B_w=float(model.readout_weight().norm()),
        B_B=float(ssm.W_B.norm()),
        M_B=float(ssm.W_B.abs().sum()),
        B_C=float(ssm.W_C.norm()),
        M_C=float(ssm.W_C.abs().sum()),
        B_A=float(ssm.A.abs().max()),
    )


def bound_quantities(q: NormQuantities, T: int, m: int, rho_form: RhoForm = "code",
                     include_B_A: bool = True) -> dict[str, float]:
    """All logged numbers for one model at sequence length T and sample size m.

    include_B_A: keep the factor B_A in the capacity term (False for a fixed, unlearned A; see
    ssmlab.papers.generalization.theory.log_capacity_term)."""
    rho = q.rho(rho_form)
    # Thm 4.1 is stated for s_A > 0 only: below that the formula is no lower bound (NaN)
    lb = rademacher_lower_bound(q.B_w, q.s_A, T, m) if q.s_A > 0 else math.nan
    out = q.as_dict() | {
        "rho_A": rho,
        "M_Delta": q.M_Delta,
        "log_S2": log_s2(rho, T),
        "log_capacity": log_capacity_term(q, T, m, rho_form, include_B_A=include_B_A),
        "log_lower_bound": math.log(lb) if lb > 0 and math.isfinite(lb) else
        (math.inf if lb == math.inf else math.nan),
    }
    return {k: _finite(v) for k, v in out.items()}


def _finite(v: float) -> float:
    """Clamp ±inf to ±1e308 so a JSON store holds a finite number (1e308 reads 'overflowed')."""
    if math.isnan(v):
        return v
    return max(min(v, 1e308), -1e308)


def bound_probe(T: int, m: int, rho_form: RhoForm = "code",
                B_u: float | None = None) -> Callable[[nn.Module, int], dict[str, Any]]:
    """A trainer probe (model, step) -> the numbers of `bound_quantities`."""

    def probe(model: nn.Module, step: int) -> dict[str, Any]:
        assert isinstance(model, GenSSMClassifier)
        return bound_quantities(norm_quantities(model, B_u), T, m, rho_form,
                                include_B_A=not model.cfg.fix_A)

    return probe
