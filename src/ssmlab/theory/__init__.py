"""Closed forms: bounds, predicted scalings, analytical constructions."""
