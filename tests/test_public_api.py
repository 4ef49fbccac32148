"""What a user types first works: each package face exports its public names (`__all__`); the
README's example (tests/test_readme.py) uses them."""

from __future__ import annotations

import importlib

import pytest

FACES = ["ssmlab.ops", "ssmlab.layers", "ssmlab.models", "ssmlab.data", "ssmlab.train",
         "ssmlab.experiment"]


@pytest.mark.parametrize("name", FACES)
def test_every_public_name_resolves(name):
    mod = importlib.import_module(name)
    assert mod.__all__, name
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"


def test_the_names_the_issue_lists():
    from ssmlab.layers import S4D, S6, Mamba2, MambaBlock, build_mixer  # noqa: F401
    from ssmlab.ops import selective_scan  # noqa: F401

    assert build_mixer("mamba", d_model=8).__class__ is MambaBlock

