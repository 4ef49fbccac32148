"""One torch thread for the trainer tests: the shapes are tiny, and on a loaded 2-core machine
a second OpenMP thread only spins (tests that need other thread counts set them explicitly)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
