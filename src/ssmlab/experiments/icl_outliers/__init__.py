"""Experiments of paper `icl_outliers` (arXiv 2510.00399; docs/papers/icl_outliers.md).
Importing registers them."""

from ssmlab.experiments.icl_outliers import (
    attention,  # noqa: F401
    gates,  # noqa: F401
    iterations,  # noqa: F401
    placement,  # noqa: F401
    tolerance,  # noqa: F401
)
