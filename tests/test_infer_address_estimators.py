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


def test_rws_weighs_a_global_latent_once_for_the_whole_batch():
    # g ~ N(0, 1) outside the data plate, x_b ~ N(g, 1): with the exact posterior as guide every
    # weight is p(x), so the wake-θ loss is -log p(x) exactly, x ~ N(0, I + 11ᵀ); scored per
    # datapoint, g's prior and posterior had counted once for each of the B datapoints
    x = torch.tensor([0.5, -1.0, 2.0, 0.3], dtype=torch.float64)
    post_var = 1 / (1 + len(x))

    def global_model(x):
        g = pyro.sample("g", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    def exact_guide(x):
        pyro.sample("g", dist.Normal(x.sum() * post_var, post_var**0.5))

    cov = torch.eye(len(x), dtype=x.dtype) + 1
    log_px = dist.MultivariateNormal(torch.zeros_like(x), cov).log_prob(x)
    for seed in range(3):
        pyro.set_rng_seed(seed)
        loss = ReweightedWakeSleep(4, max_plate_nesting=1).differentiable_loss(
            global_model, exact_guide, x
        )
        torch.testing.assert_close(loss, -log_px)

    def subsampled(x):
        g = pyro.sample("g", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
        with pyro.plate("data", 8, subsample=torch.arange(len(x))):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    def subsampled_guide(x):
        with pyro.plate("data", 8, subsample=torch.arange(len(x))):
            pass
        pyro.sample("g", dist.Normal(x.sum() * post_var, post_var**0.5))

    with pytest.raises(ValueError, match="model site 'g' has 1.0 and model site 'x' has 2.0"):
        ReweightedWakeSleep(4, max_plate_nesting=1).differentiable_loss(
            subsampled, subsampled_guide, x
        )
