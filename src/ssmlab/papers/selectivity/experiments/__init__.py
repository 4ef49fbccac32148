"""Experiments of paper `selectivity` (arXiv 2506.11891; the paper's setting and where
each claim lives: README.md of this paper folder, src/ssmlab/papers/selectivity/).
Importing registers them."""

from ssmlab.papers.selectivity.experiments import (
    approximation,  # noqa: F401
    constructions,  # noqa: F401
    induction,  # noqa: F401
    memory,  # noqa: F401
    recall,  # noqa: F401
)
