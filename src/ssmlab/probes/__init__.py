"""Measurements taken during training (alignments, gate statistics, spectral abscissa, ...)."""
