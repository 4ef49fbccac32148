"""Experiments of paper `selectivity` (see ../../../../../shared/papers/selectivity.md). Importing registers them."""
