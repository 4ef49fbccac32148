"""Experiments of paper `selectivity` (arXiv 2506.11891; docs/papers/selectivity.md).
Importing registers them."""

from ssmlab.experiments.selectivity import (
    approximation,  # noqa: F401
    constructions,  # noqa: F401
    induction,  # noqa: F401
    memory,  # noqa: F401
    recall,  # noqa: F401
)
