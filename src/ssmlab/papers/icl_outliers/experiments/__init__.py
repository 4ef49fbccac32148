"""Experiments of paper `icl_outliers` (arXiv 2510.00399; the README.md of this
paper package lists them under "Where each claim lives").
Importing registers them."""

from ssmlab.papers.icl_outliers.experiments import (
    attention,  # noqa: F401
    family,  # noqa: F401
    gates,  # noqa: F401
    iterations,  # noqa: F401
    multihead,  # noqa: F401
    placement,  # noqa: F401
    poisoning,  # noqa: F401
    tolerance,  # noqa: F401
)
