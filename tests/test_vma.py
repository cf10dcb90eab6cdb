import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

from pyromem.diagnostics import elbo_decomposition
from pyromem.infer import VIMCO
from pyromem.memory.addressing import Addressing, similarity
from pyromem.models import VMA
from pyromem.models.vma import SkipPath, SoftAttentionVAE

SHAPE = (1, 4, 4)


def tiny(address="enum", **kwargs):
    torch.manual_seed(0)
    options = dict(memory_size=3, latent_dim=2, embedding_dim=4, hidden=(8,), address=address)
    return VMA(SHAPE, **(options | kwargs))


def images(n, seed=1):
    return torch.bernoulli(
        torch.full((n,) + SHAPE, 0.5), generator=torch.Generator().manual_seed(seed)
    )


def test_similarities():
    keys, query = torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(similarity(keys, query, "dot"), torch.tensor([[7.0, 2.0]]))
    torch.testing.assert_close(similarity(keys, query), torch.tensor([[7 / 5, 1.0]]))
    root2 = math.sqrt(2)
    torch.testing.assert_close(
        similarity(keys, query, "cosine"), torch.tensor([[7 / 5 / root2, 1 / root2]])
    )
    # batch dims of the query broadcast: (K, B, E) -> (K, B, N)
    assert similarity(keys, torch.randn(5, 3, 2)).shape == (5, 3, 2)


def test_enumerated_objective_equals_the_elbo_by_hand():
    vma, x = tiny(), images(2)
    memory = vma.memory.detach()
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(7)
    loss = elbo.loss(vma.model, vma.guide, x, num_data=6)
    # the same draws of z: one per slot and image, from the enumerated guide
    pyro.set_rng_seed(7)
    guide = poutine.trace(poutine.enum(vma.guide, first_available_dim=-2)).get_trace(x)
    z = guide.nodes["z"]["value"]  # (|M|, B, d)
    assert z.shape == (3, 2, 2)
    with torch.no_grad():
        keys = vma.addressing.key_net(memory)
        log_q_a = similarity(keys, vma.addressing.query_net(x)).log_softmax(-1).T  # (|M|, B)
        log_p_a = similarity(keys, vma.addressing.prior_query).log_softmax(-1)[:, None]
        m = memory.flatten(1)[:, None].expand(3, 2, 16)
        q_z = Normal(*vma.encoder(torch.cat([x.flatten(1).expand(3, 2, 16), m], -1)))
        p_z = Normal(*vma.prior_net(memory[:, None]))
        # the skip path, pixel by pixel: exp(s) ⊙ (w ⊙ m_a + b), shape (|M|,) + SHAPE
        skip = vma.skip.log_gain.exp() * (vma.skip.weight * memory + vma.skip.bias)
        logits = vma.decoder(torch.cat([z, m], -1)) + skip[:, None]
        log_p_x = Bernoulli(logits=logits).log_prob(x).flatten(2).sum(-1)
        inner = log_p_a + p_z.log_prob(z).sum(-1) + log_p_x - q_z.log_prob(z).sum(-1) - log_q_a
        by_hand = 6 / 2 * (log_q_a.exp() * inner).sum()
    assert loss == pytest.approx(-by_hand.item(), rel=1e-5)


def test_vimco_and_enumeration_bound_the_same_likelihood():
    # p(x | M) is a sum over 3 slots: IWAE with many particles approaches it, and the
    # enumerated ELBO is a lower bound on it.
    x = images(3)
    enum, vimco = tiny("enum"), tiny("vimco")
    vimco.load_state_dict(enum.state_dict())
    enum_elbo = -pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(enum.model, enum.guide, x)
    iwae = -VIMCO(num_particles=2000).loss(vimco.model, vimco.guide, x)
    assert enum_elbo < iwae


@pytest.mark.parametrize("address", ["enum", "vimco"])
def test_one_training_step_moves_memory_embeddings_and_nets(address):
    vma, x = tiny(address), images(4)
    elbo = (
        pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
        if address == "enum"
        else VIMCO(num_particles=4, max_plate_nesting=1)
    )
    loss = elbo(vma.model, vma.guide)(x)
    loss.backward()
    for name, parameter in vma.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_memory_as_an_argument_and_kl_of_the_address():
    vma = VMA(SHAPE, latent_dim=2, embedding_dim=4, hidden=(8,), prior="flat")
    memory, x = images(5, seed=2).float(), images(3)
    parts = elbo_decomposition(vma.model, vma.guide, x, num_particles=3, memory=memory)
    q = vma.address_posterior(x, memory)
    expected = kl_divergence(Categorical(q), Categorical(torch.full((5,), 0.2))).detach()
    torch.testing.assert_close(parts.kl["a"], expected)
    assert parts.analytic_kl == {"a": True, "z": True}


def test_soft_attention_baseline_trains():
    model, x, memory = SoftAttentionVAE(SHAPE, latent_dim=2, hidden=(8,)), images(4), images(6)
    loss = pyro.infer.Trace_ELBO()(model.model, model.guide)(x, memory=memory)
    loss.backward()
    assert model.key_net[1].body[0].weight.grad.abs().sum() > 0
    # the same skip path as VMA's, and every net moves
    assert isinstance(model.skip, SkipPath) and model.skip.linear is None
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_soft_attention_elbo_equals_the_elbo_by_hand():
    torch.manual_seed(0)
    model = SoftAttentionVAE(SHAPE, latent_dim=2, embedding_dim=4, hidden=(8,))
    x, memory = images(2), images(3, seed=2)
    pyro.set_rng_seed(7)
    loss = pyro.infer.Trace_ELBO().loss(model.model, model.guide, x, memory=memory, num_data=6)
    # the same draw of z, from the guide
    pyro.set_rng_seed(7)
    z = poutine.trace(model.guide).get_trace(x, memory=memory).nodes["z"]["value"]  # (B, d)
    with torch.no_grad():
        # w_a(z) = softmax_a <e_a, g(z)> / ‖e_a‖, r(z) = Σ_a w_a m_a
        keys = model.key_net(memory)
        keys = keys / keys.norm(dim=-1, keepdim=True)
        weights = torch.softmax(model.query_net(z) @ keys.T, -1)  # (B, |M|)
        read = torch.einsum("ba,ahw->bhw", weights, memory[:, 0])[:, None]  # (B,) + SHAPE
        skip = model.skip.log_gain.exp() * (model.skip.weight * read + model.skip.bias)
        logits = model.decoder(torch.cat([z, read.flatten(1)], -1)) + skip
        log_p_x = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(-1)
        log_p_z = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_q_z = Normal(*model.encoder(x)).log_prob(z).sum(-1)
        by_hand = 6 / 2 * (log_p_z + log_p_x - log_q_z).sum()
    assert loss == pytest.approx(-by_hand.item(), rel=1e-5)


def test_bad_input():
    vma, x = tiny(), images(2)
    with pytest.raises(ValueError, match="memory: expected at least one slot"):
        vma.model(x, memory=torch.zeros((0,) + SHAPE))
    with pytest.raises(
        ValueError, match=r"memory: expected shape \(N,\) \+ \(1, 4, 4\), got \(3, 16\)"
    ):
        vma.guide(x, memory=torch.zeros(3, 16))
    with pytest.raises(ValueError, match="no memory of its own"):
        VMA(SHAPE, hidden=(8,)).model(x)
    with pytest.raises(ValueError, match="address: expected one of"):
        VMA(SHAPE, address="reinforce")
    with pytest.raises(ValueError, match="similarity: expected one of"):
        VMA(SHAPE, similarity="l2")
    # VIMCO samples the address; it refuses a guide that asks for enumeration
    with pytest.raises(ValueError, match="site 'a' asks for enumerate='parallel'"):
        VIMCO(num_particles=2).loss(vma.model, vma.guide, x)
    with pytest.raises(ValueError, match="K >= 2"):
        VIMCO(num_particles=1)
    with pytest.raises(ValueError, match="no memory of its own"):
        SoftAttentionVAE(SHAPE, hidden=(8,)).model(x)
    with pytest.raises(ValueError, match="memory: expected at least one slot"):
        SoftAttentionVAE(SHAPE, hidden=(8,)).guide(x, memory=torch.zeros((0,) + SHAPE))


def test_addressing_prior_is_flat_or_learned():
    keys = torch.randn(4, 3)
    net = torch.nn.Identity()
    assert torch.equal(Addressing(net, net, 3, prior="flat").prior_logits(keys), torch.zeros(4))
    learned = Addressing(net, net, 3)
    with torch.no_grad():
        learned.prior_query.copy_(torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(learned.prior_logits(keys), keys[:, 0] / keys.norm(dim=-1))


def test_addressing_and_similarity_refuse_bad_parts_in_one_line():
    net = torch.nn.Identity()
    with pytest.raises(TypeError, match="key_net: expected an nn.Module, got NoneType"):
        Addressing(None, net, 3)
    with pytest.raises(ValueError, match="embedding_dim: expected an int >= 1, got 0"):
        Addressing(net, net, 0)
    with pytest.raises(ValueError, match=r"keys: expected at least one slot .* empty memory"):
        similarity(torch.randn(0, 3), torch.randn(2, 3))


def test_inverse_cdf_categorical_draws_the_probabilities():
    from pyromem.memory.addressing import InverseCDFCategorical

    probs = torch.tensor([[0.0, 0.1, 0.6, 0.3], [0.25, 0.25, 0.5, 0.0]])
    # a plate of particles expands the batch without copying, as VIMCO's does
    draws = InverseCDFCategorical(probs=probs).expand((5000, 2)).sample((4,))
    assert draws.shape == (4, 5000, 2)
    counts = torch.stack([torch.bincount(draws[..., b].flatten(), minlength=4) for b in (0, 1)])
    assert counts[0, 0] == 0 and counts[1, 3] == 0  # slots of probability zero, never drawn
    n = draws[..., 0].numel()
    # within 5 standard errors of the binomial counts
    assert ((counts - n * probs).abs() <= 5 * (n * probs * (1 - probs)).sqrt() + 1).all()


def test_slot_keys_run_once_per_step_with_the_same_gradient():
    vma, x, memory = tiny("vimco", memory_size=None), images(3), images(4, seed=2)
    calls = []
    vma.addressing.key_net.register_forward_hook(lambda *_: calls.append(1))

    def gradient(model):
        vma.zero_grad()
        pyro.set_rng_seed(3)
        elbo = VIMCO(num_particles=3, max_plate_nesting=1)
        elbo.differentiable_loss(model, vma.guide, x, memory=memory).backward()
        return [p.grad.clone() for p in vma.addressing.key_net.parameters()]

    shared = gradient(vma.model)
    assert len(calls) == 1  # the guide's keys served the model
    # a copy of the memory is another tensor: the model computes its own keys
    separate = gradient(lambda x, memory: vma.model(x, memory=memory.clone()))
    assert len(calls) == 3
    for a, b in zip(shared, separate, strict=True):
        torch.testing.assert_close(a, b)


def test_gumbel_address_is_relaxed_in_training_and_discrete_in_eval():
    vma, x = tiny("gumbel"), images(2)
    vma.temperature = 0.3
    trace = poutine.trace(vma.guide).get_trace(x)
    a = trace.nodes["a"]["value"]
    assert a.is_floating_point() and a.shape == (2, 3) and a.requires_grad
    torch.testing.assert_close(a.logsumexp(-1), torch.zeros(2))  # the log of a simplex point
    assert trace.nodes["a"]["fn"].temperature == pytest.approx(0.3)
    vma.eval()
    assert poutine.trace(vma.guide).get_trace(x).nodes["a"]["value"].dtype == torch.long


def test_temperature_schedule_is_geometric_over_the_steps():
    from types import SimpleNamespace

    from pyromem.experiments.vma import TemperatureSchedule

    schedule, module = TemperatureSchedule(1.0, 0.25), SimpleNamespace(model=tiny("gumbel"))
    for step, expected in ((0, 1.0), (50, 0.5), (100, 0.25), (150, 0.25)):
        trainer = SimpleNamespace(global_step=step, estimated_stepping_batches=100)
        schedule.on_train_batch_start(trainer, module, None, 0)
        assert module.model.temperature == pytest.approx(expected)


def test_concrete_address_is_scored_by_the_categorical_kl():
    from pyromem.memory.addressing import ConcreteAddress

    q_logits, p_logits = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    temperature = torch.tensor(0.5)
    q = ConcreteAddress(temperature, logits=q_logits)
    p = ConcreteAddress(temperature, logits=p_logits)
    by_hand = (q_logits.softmax(-1) * (q_logits.log_softmax(-1) - p_logits.log_softmax(-1))).sum()
    torch.testing.assert_close(kl_divergence(q, p), by_hand.reshape(1))
    assert q.has_rsample and q.rsample().shape == (1, 3)


def test_a_vma_copies_after_a_guide_alone():
    import copy

    vma, x, memory = tiny("vimco", memory_size=None), images(2), images(3, seed=2)
    vma.guide(x, memory=memory)  # its keys wait for a model run that does not come
    twin = copy.deepcopy(vma)
    assert twin._guide_keys is None
    torch.testing.assert_close(twin.address_posterior(x, memory), vma.address_posterior(x, memory))
