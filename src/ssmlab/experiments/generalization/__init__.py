"""Experiments of paper `generalization` (see ../../../../../shared/papers/generalization.md). Importing registers them."""

from ssmlab.experiments.generalization import attention, bound, length, stability  # noqa: F401
