"""Experiments of paper `filtering` (arXiv 2602.12499; docs/papers/filtering.md).
Importing registers them."""

from ssmlab.experiments.filtering import (
    alignment,  # noqa: F401
    attention,  # noqa: F401
    convergence,  # noqa: F401
    gate_ablation,  # noqa: F401
    locality,  # noqa: F401
    lucky,  # noqa: F401
    scan_orders,  # noqa: F401
)
