import os

import pytest
import torch


@pytest.fixture
def device():
    """The device tests run on: ``PYROMEM_DEVICE`` (default ``cpu``)."""
    return torch.device(os.environ.get("PYROMEM_DEVICE", "cpu"))


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
