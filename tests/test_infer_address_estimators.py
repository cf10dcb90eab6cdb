"""Wrong arguments to the address estimators of pyromem.infer.address_estimators get a one-line
error naming the argument, as VIMCO's do, instead of a failure inside Pyro's plates."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyromem.infer.address_estimators import ReweightedWakeSleep


def model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 0.5).to_event(1), obs=x)


def guide(x):
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))


@pytest.mark.parametrize("value", [1.5, -1, True, "2"])
def test_rws_refuses_a_max_plate_nesting_that_is_not_a_count(value):
    # before: accepted, then a TypeError or ValueError from inside Pyro's plates at the first
    # step (1.5: "list indices must be integers"), or True taken for 1
    with pytest.raises(ValueError, match=f"max_plate_nesting: expected an int >= 0, got {value!r}"):
        ReweightedWakeSleep(3, max_plate_nesting=value)
    ReweightedWakeSleep(3, max_plate_nesting=1)


def test_rws_with_a_guide_without_sample_sites_warns_as_pyro_does():
    # before: AttributeError "'float' object has no attribute 'detach'"; the model's latent is
    # drawn from its prior, as in Pyro's ELBOs, which warn
    x = torch.randn(3, 1)
    with pytest.warns(UserWarning, match="Found vars in model but not guide"):
        loss = ReweightedWakeSleep(3).differentiable_loss(model, lambda x: None, x)
    assert torch.isfinite(loss)
