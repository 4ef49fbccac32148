"""Experiments of paper `filtering` (arXiv 2602.12499; papers/filtering/README.md).
Importing registers them."""

from ssmlab.papers.filtering.experiments import (
    alignment,  # noqa: F401
    attention,  # noqa: F401
    convergence,  # noqa: F401
    gate_ablation,  # noqa: F401
    length,  # noqa: F401
    locality,  # noqa: F401
    lucky,  # noqa: F401
    samples,  # noqa: F401
    scan_orders,  # noqa: F401
    transformer,  # noqa: F401
)
