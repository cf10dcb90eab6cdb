"""VMA and its soft-attention baseline with §4.2's conv nets (``net="conv"``)."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyromem.data import load
from pyromem.infer import VIMCO
from pyromem.models import VMA
from pyromem.models.vma import SoftAttentionVAE
from pyromem.nets import DownscalingStack

TINY = dict(channels=4, latent_dim=3, embedding_dim=5, hidden=(8,))
SLOTS, BATCH = 3, 2


def conv_vma(size, **kwargs):
    torch.manual_seed(0)
    return VMA((1, size, size), **(dict(net="conv") | TINY | kwargs))


def images(n, size, seed=1):
    return torch.bernoulli(
        torch.full((n, 1, size, size), 0.5), generator=torch.Generator().manual_seed(seed)
    )


def expected_parameter_count(shape, channels, latent_dim, embedding_dim, hidden, memory_size=0):
    """The conv VMA's parameters counted layer by layer; D and h = h^q once each."""
    c, height, width = shape

    def conv(c_in, c_out, kernel):  # also a transposed convolution's count
        return c_in * c_out * kernel**2 + c_out

    def mlp(*sizes):
        return sum(n_in * n_out + n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))

    top = channels * math.ceil(height / 8) * math.ceil(width / 8)
    down = conv(c, channels, 3) + 5 * conv(channels, channels, 3)
    embedding = mlp(top, *hidden, embedding_dim) + embedding_dim  # h and the query point e^p
    prior = mlp(top, *hidden, 2 * latent_dim)
    encoder = mlp(2 * top, *hidden, 2 * latent_dim)
    decoder = (
        mlp(latent_dim, top)
        + 3 * conv(2 * channels, channels, 3)
        + 2 * conv(channels, channels, 4)
        + conv(channels, c, 4)
    )
    skip = 3 * c * height * width
    return down + embedding + prior + encoder + decoder + skip + memory_size * c * height * width


@pytest.mark.parametrize("own_memory", [True, False], ids=["own", "per_call"])
@pytest.mark.parametrize("address", ["enum", "vimco"])
@pytest.mark.parametrize("size", [8, 16, 28])
def test_shapes_and_gradients(size, address, own_memory):
    vma = conv_vma(size, address=address, memory_size=SLOTS if own_memory else None)
    x = images(BATCH, size)
    kwargs = {} if own_memory else {"memory": images(SLOTS, size, seed=2)}
    if address == "enum":
        # the enumerated address: a dim of size |M| in front of the data plate's
        guide = poutine.trace(poutine.enum(vma.guide, first_available_dim=-2)).get_trace(
            x, **kwargs
        )
        lead, elbo = (SLOTS,), pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    else:
        with pyro.plate("particles", 3, dim=-2):
            guide = poutine.trace(vma.guide).get_trace(x, **kwargs)
        lead, elbo = (3,), VIMCO(num_particles=3, max_plate_nesting=1)
    assert guide.nodes["a"]["value"].shape == (lead + (1,) if address == "enum" else lead + (2,))
    assert guide.nodes["z"]["value"].shape == lead + (BATCH, 3)
    model = poutine.trace(poutine.replay(vma.model, trace=guide)).get_trace(x, **kwargs)
    likelihood = model.nodes["x"]["fn"]
    assert likelihood.batch_shape == lead + (BATCH,)
    assert likelihood.event_shape == (1, size, size)
    loss = elbo(vma.model, vma.guide)(x, **kwargs)
    assert torch.isfinite(loss)
    loss.backward()
    for name, parameter in vma.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert vma.reconstruct(x, **kwargs).shape == x.shape
    assert vma.generate(4, **kwargs).shape == (4, 1, size, size)


@pytest.mark.parametrize("cls", [VMA, SoftAttentionVAE])
def test_config_rebuilds_the_conv_architecture(cls):
    torch.manual_seed(0)
    model = cls((1, 28, 28), memory_size=4, **(dict(net="conv") | TINY))
    assert model.config["net"] == "conv" and model.config["channels"] == 4
    again = cls(**model.config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    again.load_state_dict(model.state_dict())


def test_downscaling_layers_are_tied():
    vma = conv_vma(28, channels=64, latent_dim=64, embedding_dim=128, hidden=(256, 128))
    assert isinstance(vma.down, DownscalingStack)
    parameters = dict(vma.named_parameters(remove_duplicate=False))
    users = (
        "encoder.down",  # q(z | x, m_a)
        "prior_net.0.down",  # p(z | m_a)
        "decoder.down",  # p(x | z, m_a)'s skip connections
        "addressing.key_net.0.down",  # h(m_a)
        "addressing.query_net.0.down",  # h^q(x)
    )
    for name, parameter in vma.down.named_parameters():
        for user in users:
            assert parameters[f"{user}.{name}"] is parameter, f"{user}.{name}"
    assert vma.addressing.query_net is vma.addressing.key_net
    count = sum(p.numel() for p in vma.parameters())
    assert count == expected_parameter_count((1, 28, 28), 64, 64, 128, (256, 128)) == 1_805_489
    # and the soft-attention baseline: D serves h, q(z | x) and the decoder
    soft = SoftAttentionVAE((1, 16, 16), net="conv", **TINY)
    assert soft.key_net[0].down is soft.encoder[0].down is soft.decoder.down is soft.down


def test_enumerated_elbo_equals_the_sum_over_addresses_by_hand():
    vma, x = conv_vma(8, memory_size=SLOTS), images(BATCH, 8)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(7)
    loss = elbo.loss(vma.model, vma.guide, x, num_data=6)
    # the same draws of z: one per slot and image, from the enumerated guide
    pyro.set_rng_seed(7)
    z = poutine.trace(poutine.enum(vma.guide, first_available_dim=-2)).get_trace(x)
    z = z.nodes["z"]["value"]  # (|M|, B, d)
    with torch.no_grad():
        q_a = vma.address_posterior(x)  # (B, |M|)
        by_hand = 0.0
        for a in range(SLOTS):
            # one slot at a time, no enumeration: the per-slot Trace_ELBO term at z_a
            data = {"a": torch.full((BATCH,), a), "z": z[a]}
            guide = poutine.trace(poutine.condition(vma.guide, data)).get_trace(x)
            model = poutine.trace(poutine.condition(vma.model, data)).get_trace(x)
            guide.compute_log_prob()
            model.compute_log_prob()
            log_p = sum(model.nodes[site]["log_prob"] for site in ("a", "z", "x"))
            log_q = sum(guide.nodes[site]["log_prob"] for site in ("a", "z"))
            by_hand += (q_a[:, a] * (log_p - log_q)).sum()
        by_hand *= 6 / BATCH
    assert loss == pytest.approx(-by_hand.item(), rel=1e-5)


@pytest.mark.parametrize("memory", ["slots", "blank"])
def test_train_to_recall_reaches_the_lookup_table(memory):
    # x drawn from M: an ideal lookup table scores -ELBO = log |M| (§4.1). A memory of
    # blank slots (the broken reference) plateaus near 33 nats in these 200 steps.
    x = load("glyphs", "train", binarize="static", size=16).images[:8]
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    vma = VMA((1, 16, 16), net="conv", channels=8, latent_dim=2, embedding_dim=16, hidden=(64,))
    loss_fn = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)(vma.model, vma.guide)
    optimizer = torch.optim.Adam(vma.parameters(), lr=1e-2)
    slots = x if memory == "slots" else torch.zeros_like(x)
    losses, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # small convs on a busy CPU run faster on one thread
    try:
        with pyro.validation_enabled(False):
            for _ in range(200):
                loss = loss_fn(x, memory=slots) / len(x)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    final = sum(losses[-10:]) / 10
    assert losses[0] > 100
    if memory == "slots":
        assert final < math.log(8) + 1.5
    else:
        assert final > 20


def test_bad_arguments():
    with pytest.raises(ValueError, match="net: expected one of"):
        VMA((1, 8, 8), net="resnet")
    with pytest.raises(ValueError, match=r"net='conv': expected memory_shape == input_shape"):
        VMA((1, 8, 8), memory_shape=(16,), net="conv")
    with pytest.raises(ValueError, match=r"net='conv': expected memory_shape == input_shape"):
        SoftAttentionVAE((64,), net="conv")
