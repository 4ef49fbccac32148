"""Experiments of paper `filtering` (see ../../../../../shared/papers/filtering.md). Importing registers them."""
