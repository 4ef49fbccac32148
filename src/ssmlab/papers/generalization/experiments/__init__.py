"""Experiments of paper `generalization` (arXiv 2502.01473). Importing registers them."""

from ssmlab.papers.generalization.experiments import attention, bound, length, stability  # noqa: F401
