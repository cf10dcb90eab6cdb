"""Every model of ``pyromem.models`` and the refinement guides of ``pyromem.infer`` under Pyro's
own tools (docs/concepts.md, "Models are Pyro programs"): Predictive, the poutine handlers,
model relations (what ``pyro.render_model`` draws), the ELBOs, SVI with ``pyro.optim``, a plain
``torch.optim`` loop, vectorised particles, and saving through ``state_dict`` or Pyro's param
store. Everything is tiny (8×8 images, a few slots): the file runs in seconds."""

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    Predictive,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.inspect import get_model_relations

from pyromem.infer import (
    GaussianRefinement,
    IterativeAmortizedGuide,
    MAPRefinement,
    MemoryFixedPoint,
    PredictiveCoding,
)
from pyromem.models import VAE, VMA, KanervaPlusPlus, MemoryVAE, PixelMemory
from pyromem.models.vma import SoftAttentionVAE

B, T, D, N = 3, 2, 2, 4  # images (episodes), images per episode, latent width, slots


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        # Trace_ELBO on a guide site marked for enumeration, jit tracer warnings
        warnings.simplefilter("ignore")
        yield


def _images(*shape):
    return torch.bernoulli(torch.full(shape + (1, 8, 8), 0.5))


def _vae():
    return VAE((1, 8, 8), latent_dim=D, hidden=(8,))


def _vma(address="enum", **options):
    return VMA(
        (1, 8, 8), memory_size=N, latent_dim=D, embedding_dim=4, hidden=(8,), address=address,
        **options,
    )  # fmt: skip


def _kpp(write="block"):
    return KanervaPlusPlus(
        (1, 8, 8), latent_dim=D, memory_shape=(1, 8, 8), block_shape=(4, 4), embed_dim=8,
        channels=(4,), write=write,
    )  # fmt: skip


#: name -> (model, its data, the sample sites of its model, of its guide)
CASES = {
    "vae": lambda: (_vae(), _images(B), {"z", "x"}, {"z"}),
    "memory_vae": lambda: (MemoryVAE(_vae(), torch.randn(5, D)), _images(B), {"z", "x"}, {"z"}),
    "pixel_memory": lambda: (
        PixelMemory((1, 4, 4), torch.rand(5, 16), obs_scale=0.1),
        torch.rand(B, 1, 4, 4),
        {"z", "x"},
        {"z"},
    ),
    **{
        f"vma_{address}": (
            lambda address=address: (_vma(address), _images(B), {"a", "z", "x"}, {"a", "z"})
        )
        for address in ("enum", "vimco", "rws", "nvil", "gumbel")
    },
    "soft_attention": lambda: (
        SoftAttentionVAE((1, 8, 8), memory_size=N, latent_dim=D, embedding_dim=4, hidden=(8,)),
        _images(B),
        {"z", "x"},
        {"z"},
    ),
    "kpp_block": lambda: (_kpp("block"), _images(B, T), {"memory", "y", "z", "x"}, {"y", "z"}),
    "kpp_dense": lambda: (_kpp("dense"), _images(B, T), {"memory", "y", "z", "x"}, {"y", "z"}),
    "kpp_none": lambda: (_kpp("none"), _images(B, T), {"z", "x"}, {"z"}),
}
#: the guides with a discrete address that is not relaxed
DISCRETE = {"vma_enum", "vma_vimco", "vma_rws", "vma_nvil"}


def _sites(trace, kind="sample"):
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == kind and not name.startswith(("data", "episode"))
    }


def _batch(name, x):
    """The leading dims of a site of one model run: (T, B) for K++'s time-major sites."""
    return (x.shape[1], x.shape[0]) if name.startswith("kpp") else (x.shape[0],)


# ---- site names, deterministic memory, relations ---------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_sites_have_the_stable_names_and_memory_is_deterministic(name):
    model, x, model_sites, guide_sites = CASES[name]()
    trace = poutine.trace(model.model).get_trace(x)
    assert _sites(trace) == model_sites
    assert _sites(poutine.trace(model.guide).get_trace(x)) == guide_sites
    observed = x.transpose(0, 1) if name.startswith("kpp") else x  # K++'s sites: (T, B, ...)
    assert trace.nodes["x"]["is_observed"] and torch.equal(trace.nodes["x"]["value"], observed)
    for site in model_sites - {"x"}:
        data = [f for f in trace.nodes[site]["cond_indep_stack"] if f.name == "data"]
        assert data and data[0].size == x.shape[0], site  # every site in the data plate
    if "memory" in model_sites:
        memory = trace.nodes["memory"]
        assert memory["infer"].get("_deterministic") is True
        assert torch.equal(memory["value"], model.write(x))  # eq. 5, M = f_mem(pool_T f_enc(X))


@pytest.mark.parametrize("name", ["vae", "vma_enum", "kpp_block"])
def test_model_relations_are_the_generative_story(name):
    """What ``pyro.render_model(..., render_distributions=True)`` draws."""
    model, x, _, _ = CASES[name]()
    relations = get_model_relations(model.model, (x,))
    expected = {
        "vae": {"z": [], "x": ["z"]},
        "vma_enum": {"a": [], "z": ["a"], "x": ["a", "z"]},
        # M is deterministic (Pyro draws it as an observed node); z reads it through y
        "kpp_block": {"memory": [], "y": [], "z": ["y"], "x": ["z"]},
    }[name]
    assert relations["sample_sample"] == expected
    assert relations["observed"] == (["memory", "x"] if name == "kpp_block" else ["x"])
    assert set(relations["plate_sample"]["data"]) == set(expected)
    distributions = {"vae": "Normal", "vma_enum": "InverseCDFCategorical", "kpp_block": "Normal"}
    assert (
        relations["sample_dist"][next(iter(expected)) if name != "kpp_block" else "y"]
        == (distributions[name])
    )
    assert relations["sample_dist"]["x"] == "Bernoulli"


def test_render_model_draws_the_sites():
    pytest.importorskip("graphviz")
    vma, x, _, _ = CASES["vma_enum"]()
    graph = pyro.render_model(vma.model, (x,), render_distributions=True)
    assert all(f"\t{site} [" in graph.source for site in ("a", "z", "x"))


# ---- Predictive --------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("name", CASES)
def test_predictive_shapes_prior_and_posterior(name, parallel):
    """Predictive keeps an observed x as it is (Pyro's rule); ``poutine.uncondition`` draws it,
    x then only giving the batch (docs/concepts.md)."""
    model, x, model_sites, _ = CASES[name]()
    batch = _batch(name, x)
    observed = x.transpose(0, 1) if name.startswith("kpp") else x
    for guide in (None, model.guide):
        kept = Predictive(model.model, guide=guide, num_samples=2, parallel=parallel)(x)
        assert all(torch.equal(s, observed) for s in kept["x"])
        drawn = poutine.uncondition(model.model)
        samples = Predictive(drawn, guide=guide, num_samples=3, parallel=parallel)(x)
        assert set(samples) == model_sites
        assert samples["x"].shape == (3,) + batch + x.shape[len(batch) :]
        assert not all(torch.equal(s, observed) for s in samples["x"])
        z_event = 16 if name == "pixel_memory" else D
        assert samples["z"].shape == (3,) + batch + (z_event,)
        if "a" in samples and samples["a"].dtype == torch.long:
            assert (
                samples["a"].shape == (3, B) and 0 <= samples["a"].min() <= samples["a"].max() < N
            )
        if "memory" in samples:  # left-padded to the two plates, as Pyro does; deterministic
            assert samples["memory"].shape[:3] == (3, 1, B)
            assert torch.allclose(
                samples["memory"][:, 0], model.write(x).expand(3, *model.write(x).shape)
            )
        only = Predictive(drawn, guide=guide, num_samples=2, return_sites=["z"])(x)
        assert set(only) == {"z"} and only["z"].shape[0] == 2


def test_predictive_draws_z_from_the_prior_or_from_the_guide():
    vae, x, _, _ = CASES["vae"]()
    prior = Predictive(vae.model, num_samples=4000, parallel=True, return_sites=["z"])(x)["z"]
    assert prior.mean((0, 1)).abs().max() < 0.05 and (prior.std((0, 1)) - 1).abs().max() < 0.05
    posterior = Predictive(vae.model, guide=vae.guide, num_samples=4000, parallel=True)(x)["z"]
    loc, scale = vae.encoder(x)
    assert torch.allclose(posterior.mean(0), loc, atol=4 * scale.max().item() / 60)
    assert torch.allclose(posterior.std(0), scale, rtol=0.06)


# ---- poutine handlers ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vae", "memory_vae", "vma_enum", "soft_attention", "kpp_block"])
def test_conditioning_on_z_sets_what_x_is_drawn_from(name):
    model, x, _, _ = CASES[name]()
    shape = poutine.trace(model.model).get_trace(x).nodes["z"]["value"].shape
    means = []
    for value in (torch.zeros(shape), torch.full(shape, 2.0)):
        trace = poutine.trace(poutine.condition(model.model, data={"z": value})).get_trace(x)
        assert torch.equal(trace.nodes["z"]["value"], value) and trace.nodes["z"]["is_observed"]
        means.append(trace.nodes["x"]["fn"].mean)
    assert not torch.allclose(means[0], means[1])
    if name in ("vae", "memory_vae"):
        vae = model if name == "vae" else model.vae
        assert torch.allclose(means[1], vae.decode(torch.full(shape, 2.0)).mean)


@pytest.mark.parametrize("name", ["vae", "vma_vimco", "kpp_block"])
def test_conditioning_on_x_scores_the_new_observation(name):
    model, x, _, _ = CASES[name]()
    other = 1 - x
    if name.startswith("kpp"):  # its site "x" is time-major
        other = other.transpose(0, 1)
    guide_trace = poutine.trace(model.guide).get_trace(x)
    replayed = poutine.replay(poutine.condition(model.model, data={"x": other}), guide_trace)
    node = poutine.trace(replayed).get_trace(x).nodes["x"]
    assert torch.equal(node["value"], other) and node["is_observed"]
    original = poutine.trace(poutine.replay(model.model, guide_trace)).get_trace(x).nodes["x"]
    scored = node["fn"].log_prob(node["value"])
    assert torch.allclose(scored, original["fn"].log_prob(other))  # the same z, the new x
    assert not torch.allclose(scored, original["fn"].log_prob(original["value"]))


@pytest.mark.parametrize("name", CASES)
def test_replay_block_and_scale(name):
    model, x, model_sites, guide_sites = CASES[name]()
    guide_trace = poutine.trace(model.guide).get_trace(x)
    trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(x)
    for site in guide_sites:  # the model reads the guide's draws
        assert torch.equal(trace.nodes[site]["value"], guide_trace.nodes[site]["value"])
    blocked = poutine.trace(poutine.block(model.model, hide=["z"])).get_trace(x)
    assert _sites(blocked) == model_sites - {"z"}
    exposed = poutine.trace(poutine.block(model.model, expose=["x"])).get_trace(x)
    assert _sites(exposed) == {"x"}
    # scale multiplies every log-density; the ELBO of a scaled pair is scaled alike
    scaled = poutine.trace(poutine.replay(poutine.scale(model.model, 0.25), trace)).get_trace(x)
    assert torch.allclose(scaled.log_prob_sum(), 0.25 * trace.log_prob_sum(), rtol=1e-5)
    elbo = TraceEnum_ELBO(max_plate_nesting=2) if name == "vma_enum" else Trace_ELBO()
    pyro.set_rng_seed(1)
    loss = elbo.loss(model.model, model.guide, x)
    pyro.set_rng_seed(1)
    half = elbo.loss(poutine.scale(model.model, 0.5), poutine.scale(model.guide, 0.5), x)
    assert half == pytest.approx(0.5 * loss, rel=1e-5, abs=1e-4)


# ---- the ELBOs -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_every_elbo_scores_every_model(name):
    model, x, _, _ = CASES[name]()
    nesting = 2 if name.startswith("kpp") else 1
    elbos = [
        Trace_ELBO(),
        TraceEnum_ELBO(max_plate_nesting=nesting),
        Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=nesting),
        TraceEnum_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=nesting),
    ]
    for elbo in elbos:  # (a pixel memory has no parameter: nothing to differentiate)
        assert torch.isfinite(torch.tensor(elbo.loss(model.model, model.guide, x)))
    mean_field = TraceMeanField_ELBO(num_particles=3, vectorize_particles=True)
    if name in DISCRETE:  # docs/concepts.md: a discrete guide is not mean-field reparameterised
        with pytest.raises(NotImplementedError, match="reparameterized"):
            mean_field.loss(model.model, model.guide, x)
    else:
        assert torch.isfinite(torch.tensor(mean_field.loss(model.model, model.guide, x)))


def test_trace_and_mean_field_elbo_agree_in_expectation():
    vae, x, _, _ = CASES["vae"]()
    for seed in range(2):  # the same draws of z: only the KL of z differs, MC against analytic
        pyro.set_rng_seed(seed)
        mc = Trace_ELBO(num_particles=2000, vectorize_particles=True).loss(vae.model, vae.guide, x)
        pyro.set_rng_seed(seed)
        analytic = TraceMeanField_ELBO(num_particles=2000, vectorize_particles=True)
        assert mc == pytest.approx(analytic.loss(vae.model, vae.guide, x), abs=0.15)
    # no KL of a Normal from a Gaussian-mixture memory is registered: the same estimate
    memory_vae, x, _, _ = CASES["memory_vae"]()
    pyro.set_rng_seed(0)
    mc = Trace_ELBO(num_particles=4).loss(memory_vae.model, memory_vae.guide, x)
    pyro.set_rng_seed(0)
    assert TraceMeanField_ELBO(num_particles=4).loss(memory_vae.model, memory_vae.guide, x) == (
        pytest.approx(mc)
    )


def test_trace_enum_elbo_sums_out_the_address():
    vma, x, _, _ = CASES["vma_enum"]()
    guide_trace = poutine.trace(poutine.enum(vma.guide, first_available_dim=-2)).get_trace(x)
    assert guide_trace.nodes["a"]["value"].shape == (N, 1)  # every slot at once
    enumerated, sampled = [], []
    for seed in range(2):
        pyro.set_rng_seed(seed)
        elbo = TraceEnum_ELBO(num_particles=1000, vectorize_particles=True, max_plate_nesting=1)
        enumerated.append(elbo.loss(vma.model, vma.guide, x))
        pyro.set_rng_seed(seed)
        sampled.append(
            Trace_ELBO(num_particles=4000, vectorize_particles=True).loss(vma.model, vma.guide, x)
        )
    assert abs(enumerated[0] - enumerated[1]) < 0.05  # only z is drawn
    assert sum(enumerated) / 2 == pytest.approx(sum(sampled) / 2, abs=0.1)


def test_vectorised_and_sequential_particles_agree():
    vae, x, _, _ = CASES["vae"]()
    vectorised = Trace_ELBO(num_particles=400, vectorize_particles=True)
    sequential = Trace_ELBO(num_particles=400)
    assert vectorised.loss(vae.model, vae.guide, x) == pytest.approx(
        sequential.loss(vae.model, vae.guide, x), abs=0.4
    )


@pytest.mark.parametrize(
    "name", ["vae", "memory_vae", "vma_vimco", "vma_enum", "soft_attention", "kpp_block"]
)
def test_jit_elbos_compute_the_elbo(name):
    """A compiled ELBO draws its noise by other torch calls than the eager one (the same seed
    gives other draws), so the two are compared as estimates of one ELBO."""
    model, x, _, _ = CASES[name]()
    if name == "vma_enum":
        jit, eager = JitTraceEnum_ELBO, TraceEnum_ELBO
    else:
        jit, eager = JitTrace_ELBO, Trace_ELBO
    options = {"num_particles": 300, "vectorize_particles": True, "max_plate_nesting": 2}
    compiled = jit(ignore_jit_warnings=True, **options)
    first = compiled.differentiable_loss(model.model, model.guide, x)  # compiles
    again = compiled.differentiable_loss(model.model, model.guide, x)
    other = compiled.differentiable_loss(model.model, model.guide, 1 - x)  # x is an input
    assert first.requires_grad and not torch.equal(again, other)
    expected = eager(**options).loss(model.model, model.guide, x)
    assert again.item() == pytest.approx(expected, abs=0.5)
    svi = SVI(
        model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), jit(ignore_jit_warnings=True)
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    svi.step(x)
    assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []


# ---- training: SVI with pyro.optim, torch.optim ------------------------------------------


@pytest.mark.parametrize(
    "name", ["vae", "vma_enum", "vma_nvil", "vma_gumbel", "soft_attention", "kpp_block"]
)
def test_svi_with_pyro_optim_trains_every_parameter(name):
    """Including the parameters the model reads itself: VMA's learned memory and prior query
    point, the soft-attention memory."""
    model, x, _, _ = CASES[name]()
    elbo = {
        "vma_enum": TraceEnum_ELBO(max_plate_nesting=1),
        "vma_nvil": TraceGraph_ELBO(),
        "vma_gumbel": TraceMeanField_ELBO(),
    }.get(name, Trace_ELBO())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
    for _ in range(2):
        svi.step(x)
    assert [n for n, p in model.named_parameters() if torch.equal(p, before[n])] == []


@pytest.mark.parametrize("name", ["vae", "vma_enum", "kpp_block"])
def test_a_torch_optim_loop_on_the_elbo_module_lowers_the_loss(name):
    model, x, _, _ = CASES[name]()
    elbo = TraceEnum_ELBO(max_plate_nesting=1) if name == "vma_enum" else Trace_ELBO()
    loss_fn = elbo(model.model, model.guide)
    assert isinstance(loss_fn, torch.nn.Module)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = loss_fn(x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < sum(losses[:3])


# ---- saving and loading ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vae", "memory_vae", "vma_rws", "soft_attention", "kpp_dense"])
def test_state_dict_round_trip_into_a_model_rebuilt_from_its_config(name):
    model, x, _, _ = CASES[name]()
    SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-1}), Trace_ELBO()).step(x)
    if name == "memory_vae":
        rebuilt = MemoryVAE(VAE(**model.vae.config))
    else:
        rebuilt = type(model)(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    losses = []
    for m in (model, rebuilt):
        pyro.set_rng_seed(5)
        losses.append(Trace_ELBO().loss(m.model, m.guide, x))
    assert losses[0] == losses[1]


@pytest.mark.parametrize("name", ["vae", "vma_enum"])
def test_param_store_save_and_load_restores_the_model(name, tmp_path):
    """``pyro.get_param_store().load`` reaches the module at the next model or guide call, and
    SVI goes on training the module (and not a copy of it in the store)."""
    model, x, _, _ = CASES[name]()
    elbo = TraceEnum_ELBO(max_plate_nesting=1) if name == "vma_enum" else Trace_ELBO()
    svi = SVI(model.model, model.guide, pyro.optim.Adam({"lr": 1e-1}), elbo)
    svi.step(x)
    pyro.get_param_store().save(tmp_path / "params.pt")
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        svi.step(x)
    pyro.get_param_store().load(tmp_path / "params.pt")
    poutine.trace(model.guide).get_trace(x)
    poutine.trace(model.model).get_trace(x)
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    svi.step(x)
    assert [n for n, p in model.named_parameters() if torch.equal(p, saved[n])] == []
    for name_, p in model.named_parameters():  # the store holds the module's own tensors
        assert pyro.get_param_store()[f"{model._pyro_name}.{name_}"] is p


# ---- the refinement guides of pyromem.infer ------------------------------------------------


def _refinements(memory_vae):
    args = (memory_vae.model, memory_vae.guide)
    return {
        "map": MAPRefinement(*args, num_steps=2),
        "gaussian": GaussianRefinement(*args, num_steps=2),
        "fixed_point": MemoryFixedPoint(*args, num_steps=2),
        "iterative": IterativeAmortizedGuide(*args, num_steps=2),
        "predictive_coding": PredictiveCoding(*args, memory_vae.vae.decoder.body, num_steps=2),
    }


@pytest.mark.parametrize(
    "kind", ["map", "gaussian", "fixed_point", "iterative", "predictive_coding"]
)
def test_refinement_guides_under_pyro_tools(kind):
    memory_vae, x, _, _ = CASES["memory_vae"]()
    guide = _refinements(memory_vae)[kind]
    trace = poutine.trace(guide).get_trace(x)
    assert _sites(trace) == {"z"}
    assert [f.name for f in trace.nodes["z"]["cond_indep_stack"]] == ["data"]
    point = kind in ("map", "fixed_point", "predictive_coding")
    assert isinstance(trace.nodes["z"]["fn"].base_dist, dist.Delta if point else dist.Normal)
    samples = Predictive(memory_vae.model, guide=guide, num_samples=3, parallel=True)(x)
    assert samples["z"].shape == (3, B, D) and samples["x"].shape == (3,) + x.shape
    if point:  # a point mass: every posterior draw is the refined estimate
        assert torch.allclose(samples["z"], guide.refine(x).expand(3, B, D), atol=1e-6)
    for elbo in (
        Trace_ELBO(),
        TraceMeanField_ELBO(),
        Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1),
    ):
        assert torch.isfinite(torch.tensor(elbo.loss(memory_vae.model, guide, x)))
    replayed = poutine.trace(poutine.replay(memory_vae.model, trace)).get_trace(x)
    assert torch.equal(replayed.nodes["z"]["value"], trace.nodes["z"]["value"])
    scaled = poutine.trace(poutine.scale(guide, 0.5)).get_trace(x)
    assert scaled.nodes["z"]["scale"] == 0.5
    SVI(memory_vae.model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO()).step(x)


@pytest.mark.parametrize(
    "kind", ["map", "gaussian", "fixed_point", "iterative", "predictive_coding"]
)
def test_refinement_guides_refuse_the_jit_elbos_in_one_line(kind):
    memory_vae, x, _, _ = CASES["memory_vae"]()
    guide = _refinements(memory_vae)[kind]
    with pytest.raises(NotImplementedError, match="cannot be compiled by JitTrace_ELBO"):
        JitTrace_ELBO(ignore_jit_warnings=True).differentiable_loss(memory_vae.model, guide, x)
