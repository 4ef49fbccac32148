from __future__ import annotations

import pytest

from ssmlab.runner.testing import registered_test_experiments


@pytest.fixture
def exps():
    """The runner's test experiments (builtin/test_*), registered only for this test."""
    with registered_test_experiments() as reg:
        yield reg
