"""Experiments, one package per paper. `load_all()` imports them so they register."""

from __future__ import annotations

import importlib

from ssmlab.experiments.base import REGISTRY, Experiment

PAPER_PACKAGES = ("builtin", "filtering", "icl_outliers", "generalization", "selectivity")


def load_all() -> dict[str, type[Experiment]]:
    for name in PAPER_PACKAGES:
        importlib.import_module(f"ssmlab.experiments.{name}")
    return REGISTRY
