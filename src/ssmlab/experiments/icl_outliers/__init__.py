"""Experiments of paper `icl_outliers` (arXiv 2510.00399; docs/papers/icl_outliers.md).
Importing registers them."""

from ssmlab.experiments.icl_outliers import tolerance  # noqa: F401
