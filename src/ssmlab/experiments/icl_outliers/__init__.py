"""Experiments of paper `icl_outliers` (see ../../../../../shared/papers/icl_outliers.md). Importing registers them."""
