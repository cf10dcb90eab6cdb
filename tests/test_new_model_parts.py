"""A new model written from pyromem's parts: the refinement guides on a user's own model, and
the parts' errors for the misuses a new user makes (plates, widths, dtypes)."""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch import nn

from pyromem.infer import (
    GaussianRefinement,
    IterativeAmortizedGuide,
    MAPRefinement,
    MemoryFixedPoint,
    PredictiveCoding,
)
from pyromem.memory import GaussianMixtureMemory, similarity, spatial_read
from pyromem.models import VAE, MemoryVAE
from pyromem.models.plates import data_plate
from pyromem.nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    ConvMemoryDecoder,
    ConvTrunk,
    DownscalingStack,
    MLPDecoder,
    MLPEncoder,
    ResNet18TSM,
)

from .linear_gaussian import LinearGaussian

REFINEMENTS = {
    "map": lambda model, guide: MAPRefinement(model, guide, num_steps=2),
    "gaussian": lambda model, guide: GaussianRefinement(model, guide, num_steps=2),
    "iterative": lambda model, guide: IterativeAmortizedGuide(model, guide, num_steps=2),
    "fixed-point": lambda model, guide: MemoryFixedPoint(model, guide, num_steps=2),
    "pc": lambda model, guide: PredictiveCoding(model, guide, [nn.Linear(2, 3)], num_steps=2),
}


class MemoryArgumentModel:
    """A linear-Gaussian likelihood under a Gaussian-mixture memory prior whose memory is an
    argument, its datapoints in a plate named ``plate``."""

    W = torch.tensor([[1.0, 0.0], [0.0, 1.5], [0.0, 0.0]])

    def __init__(self, plate="data", guide_width=2):
        self.plate, self.guide_width = plate, guide_width

    def model(self, x, memory, num_data=None):
        with pyro.plate(self.plate, num_data or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", GaussianMixtureMemory(memory, scale=0.5))
            pyro.sample("x", dist.Normal(z @ self.W.T, 0.5).to_event(1), obs=x)

    def guide(self, x, memory, num_data=None):
        with pyro.plate(self.plate, num_data or len(x), subsample=torch.arange(len(x))):
            loc = 0.3 * x[:, : self.guide_width]
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))


def test_map_refinement_reaches_the_posterior_mode_of_a_data_plate_model():
    # the plate check does not refuse a model that keeps the convention
    lg = LinearGaussian()
    x = lg.sample(8)
    z = MAPRefinement(lg.model, lg.weak_guide, num_steps=200, lr=0.05).refine(x)
    torch.testing.assert_close(z, lg.posterior_loc(x), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", REFINEMENTS)
def test_refinements_refuse_a_site_outside_the_data_plate(name):
    # In a plate of another name every datapoint's score was the whole batch's: MAP's steps
    # were B times too long and ended 0.6 away from the posterior mode, silently.
    m = MemoryArgumentModel(plate="batch")
    x, memory = torch.randn(4, 3), torch.randn(5, 2)
    guide = REFINEMENTS[name](m.model, m.guide)
    with pytest.raises(ValueError, match=r"site 'z' must lie in pyro.plate\('data'.*\['batch'\]"):
        guide.refine(x, memory)


@pytest.mark.parametrize("name", REFINEMENTS)
def test_refinements_emit_in_the_models_data_plate_when_num_data_is_positional(name):
    # num_data was read from the keyword arguments only: passed by position, the guide's site
    # was scaled by 1 where the model's was by num_data / B, and the ELBO was wrong
    m = MemoryArgumentModel()
    x, memory = torch.randn(4, 3), torch.randn(5, 2)
    guide = REFINEMENTS[name](m.model, m.guide)
    for args, kwargs in [((x, memory, 100), {}), ((x, memory), {"num_data": 100})]:
        trace = poutine.trace(guide).get_trace(*args, **kwargs)
        assert trace.nodes["z"]["scale"] == pytest.approx(100 / 4)
        assert trace.nodes["data"]["value"].tolist() == [0, 1, 2, 3]
    pyro.set_rng_seed(1)
    by_keyword = pyro.infer.Trace_ELBO().loss(m.model, guide, x, memory, num_data=100)
    pyro.set_rng_seed(1)
    by_position = pyro.infer.Trace_ELBO().loss(m.model, guide, x, memory, 100)
    assert by_position == pytest.approx(by_keyword, rel=1e-6)


@pytest.mark.parametrize("name", REFINEMENTS)
def test_a_guide_of_another_width_than_the_model_is_named(name):
    m = MemoryArgumentModel(guide_width=3)
    x, memory = torch.randn(4, 3), torch.randn(5, 2)
    guide = REFINEMENTS[name](m.model, m.guide)
    with pytest.raises(ValueError, match=r"event shape \(2,\).*got a guide mean of shape \(4, 3\)"):
        pyro.infer.Trace_ELBO().loss(m.model, guide, x, memory)


def test_map_refinement_of_a_model_without_the_site_names_it():
    # was torch's "element 0 of tensors does not require grad"
    lg = LinearGaussian()

    def model_w(x, num_data=None):
        with data_plate(x, num_data):
            w = pyro.sample("w", dist.Normal(x.new_zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(w @ lg.W.T, 0.5).to_event(1), obs=x)

    with pytest.raises(ValueError, match="model must have a sample site 'z'"):
        MAPRefinement(model_w, lg.weak_guide, num_steps=2).refine(lg.sample(4))


def test_refining_an_observed_site_is_refused():
    lg = LinearGaussian()

    def guide_x(x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample("x", dist.Normal(x, 1.0).to_event(1))

    with pytest.raises(ValueError, match="site 'x' is observed"):
        MAPRefinement(lg.model, guide_x, num_steps=2, site="x").refine(lg.sample(4))


@pytest.mark.parametrize("layers", [3, None, nn.Linear(2, 3)])
def test_predictive_coding_names_layers_that_are_not_a_list(layers):
    # was "'int' object is not iterable"
    m = MemoryArgumentModel()
    with pytest.raises(TypeError, match="layers must be a non-empty list of modules, got"):
        PredictiveCoding(m.model, m.guide, layers)


NETS = {
    "MLP": (lambda: MLP(3, (2,), (4,)), (5, 3)),
    "MLPEncoder": (lambda: MLPEncoder((1, 8, 8), 2, (4,)), (5, 1, 8, 8)),
    "MLPDecoder": (lambda: MLPDecoder(2, (1, 8, 8), (4,)), (5, 2)),
    "ConvEncoder": (lambda: ConvEncoder((1, 8, 8), 2, (4,), 8), (5, 1, 8, 8)),
    "ConvDecoder": (lambda: ConvDecoder(2, (1, 8, 8), (4,), 8), (5, 2)),
    "ConvTrunk": (lambda: ConvTrunk((1, 8, 8), (4,), 8), (5, 1, 8, 8)),
    "ResNet18TSM": (lambda: ResNet18TSM((1, 8, 8), 4, base_width=4), (2, 3, 1, 8, 8)),
    "DownscalingStack": (lambda: DownscalingStack((1, 8, 8), 4), (5, 1, 8, 8)),
}


@pytest.mark.parametrize("name", NETS)
def test_nets_name_a_dtype_mismatch_and_run_in_float64(name):
    # was torch's "mat1 and mat2 must have the same dtype" from deep inside the net
    make, shape = NETS[name]
    net = make()
    x = torch.rand(shape, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"is torch.float64 but the parameters of .* torch.float32"):
        net(x)
    out = net.double()(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    assert out.dtype == torch.float64


def test_conv_memory_decoder_names_a_dtype_mismatch_of_z():
    decoder = ConvMemoryDecoder(DownscalingStack((1, 8, 8), 4), 2, (1, 8, 8))
    with pytest.raises(TypeError, match=r"z is torch.float64 but the parameters"):
        decoder(torch.randn(5, 2, dtype=torch.float64), torch.rand(5, 1, 8, 8))


def test_memory_primitives_name_their_argument_and_dtype():
    # were AttributeError ('list' object has no attribute 'dim') and torch's dtype errors
    with pytest.raises(TypeError, match="keys must be a floating-point torch.Tensor, got list"):
        similarity([[1.0, 0.0]], torch.zeros(2))
    keys, query = torch.randn(4, 3, dtype=torch.float64), torch.randn(2, 3)
    with pytest.raises(TypeError, match="keys torch.float64 and query torch.float32"):
        similarity(keys, query)
    torch.testing.assert_close(
        similarity(keys, query.double()).float(), similarity(keys.float(), query)
    )
    memory, keys = torch.randn(2, 1, 8, 8), torch.randn(2, 3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="keys are torch.float64 but the memory is torch.float32"):
        spatial_read(memory, keys, (4, 4))
    assert spatial_read(memory.double(), keys, (4, 4)).dtype == torch.float64


def test_memory_vae_names_the_precision_width_without_slots():
    vae = VAE((1, 4, 4), latent_dim=3, hidden=(8,))
    with pytest.raises(ValueError, match=r"precision must have shape \(d,\) with d = 3, the"):
        MemoryVAE(vae, precision=torch.ones(4))
    with pytest.raises(ValueError, match=r"memory must have shape \(N, d\) with N >= 1 and d = 3"):
        MemoryVAE(vae, memory=torch.randn(5, 4))
