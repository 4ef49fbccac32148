"""Experiments of paper `generalization` (see ../../../../../shared/papers/generalization.md). Importing registers them."""
