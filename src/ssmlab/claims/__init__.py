"""Claims as specs, their statistics and the one evaluator (docs/claims.md).

    from ssmlab.claims import ClaimSpec, Region, Diagnosis, NoData, mean_ci, paired_ci, slope_ci
"""

from ssmlab.claims.spec import (
    ClaimSpec,
    Context,
    Diagnosis,
    NoData,
    Region,
    evaluate,
    evaluate_all,
    judge,
)
from ssmlab.claims.stats import (
    Estimate,
    exact,
    mean_ci,
    paired_ci,
    seed_bootstrap,
    seeds_to_settle,
    slope_ci,
)

__all__ = ["ClaimSpec", "Context", "Diagnosis", "Estimate", "NoData", "Region", "evaluate",
           "evaluate_all", "exact", "judge", "mean_ci", "paired_ci", "seed_bootstrap",
           "seeds_to_settle", "slope_ci"]
