"""Fixtures for the mixer tests; the cases themselves live in layers_cases.py."""

from __future__ import annotations

import pytest
from layers_cases import MIXER_CASES


@pytest.fixture(params=sorted(MIXER_CASES), ids=str)
def mixer_case(request) -> str:
    return request.param
