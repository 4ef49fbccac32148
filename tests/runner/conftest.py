from __future__ import annotations

import pytest

from ssmlab.runner.testing import registered_test_experiments


@pytest.fixture
def exps():
    """The runner's test experiments (builtin/test_*, the runner-only ones included),
    registered only for this test."""
    with registered_test_experiments(runner=True) as reg:
        yield reg
