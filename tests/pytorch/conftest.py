"""torch's comparisons run its small kernels on one thread."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch's idle threads spin: on a busy 2-core machine they made 60-step runs of small
    kernels 50 times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
