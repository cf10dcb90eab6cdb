import itertools
import math
import os
import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.nn import PyroModule
from torch.distributions import constraints

from pyromem.infer import VIMCO
from pyromem.models.plates import data_plate

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

SLOTS, LATENT = 3, 2


class Given(dist.TorchDistribution):
    """``base`` whose draws are the given ``value`` (differentiable for reparameterised bases).

    Lets a test feed the same random draws to two calls of an estimator.
    """

    arg_constraints = {}

    def __init__(self, base, value):
        self.base, self.value = base, value
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def has_rsample(self):
        return self.base.has_rsample

    @constraints.dependent_property
    def support(self):
        return self.base.support

    def expand(self, batch_shape, _instance=None):
        return Given(self.base.expand(batch_shape), self.value)

    def rsample(self, sample_shape=()):
        return self.value

    def sample(self, sample_shape=()):
        return self.value.detach()

    def log_prob(self, value):
        return self.base.log_prob(value)


class AddressModel(PyroModule):
    """a ~ Cat(softmax(π)), z | a ~ N(c_a, I), x | z, a ~ N(W z + m_a, 0.5² I);
    q(a | x) = Cat(softmax(U x + φ)), q(z | x, a) = N(A x + d_a, diag softplus(s)²).

    With ``latent=False`` the model has the address only: x | a ~ N(m_a, I).
    ``self.noise = (a, eps)`` makes the guide draw exactly these particles.
    """

    def __init__(self, dim=2, latent=True, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(3)

        def param(*shape):
            return torch.nn.Parameter(0.5 * torch.randn(*shape, generator=g, dtype=dtype))

        self.latent = latent
        self.prior_logits, self.means = param(SLOTS), param(SLOTS, dim)
        self.query, self.guide_logits = param(dim, SLOTS), param(SLOTS)
        if latent:
            self.prior_locs, self.weight = param(SLOTS, LATENT), param(LATENT, dim)
            self.encoder, self.offsets, self.raw_scale = (
                param(dim, LATENT),
                param(SLOTS, LATENT),
                param(LATENT),
            )
        self.noise = None

    def model(self, x, num_data=None):
        with data_plate(x, num_data):
            a = pyro.sample("a", dist.Categorical(logits=self.prior_logits))
            if self.latent:
                z = pyro.sample("z", dist.Normal(self.prior_locs[a], 1.0).to_event(1))
                pyro.sample(
                    "x", dist.Normal(z @ self.weight + self.means[a], 0.5).to_event(1), obs=x
                )
            else:
                pyro.sample("x", dist.Normal(self.means[a], 1.0).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        with data_plate(x, num_data):
            q_a = dist.Categorical(logits=x @ self.query + self.guide_logits)
            a = pyro.sample("a", q_a if self.noise is None else Given(q_a, self.noise[0]))
            if self.latent:
                loc = x @ self.encoder + self.offsets[a]
                scale = torch.nn.functional.softplus(self.raw_scale)
                q_z = dist.Normal(loc, scale).to_event(1)
                if self.noise is not None:
                    q_z = Given(q_z, loc + scale * self.noise[1])
                pyro.sample("z", q_z)

    def log_weights(self, x, a, eps, model_scale=1.0):
        """l_k = β log p(x, a_k, z_k) − log q(a_k, z_k | x) by hand, shape (K, B), where β is
        ``model_scale`` (a number, or one per datapoint)."""
        normal, log_softmax = torch.distributions.Normal, torch.log_softmax
        scale = torch.nn.functional.softplus(self.raw_scale)
        loc = x @ self.encoder + self.offsets[a]
        z = loc + scale * eps
        log_p = (
            log_softmax(self.prior_logits, -1)[a]
            + normal(self.prior_locs[a], 1.0).log_prob(z).sum(-1)
            + normal(z @ self.weight + self.means[a], 0.5).log_prob(x).sum(-1)
        )
        log_q = log_softmax(x @ self.query + self.guide_logits, -1).gather(-1, a.T).T + normal(
            loc, scale
        ).log_prob(z).sum(-1)
        return model_scale * log_p - log_q


def draw_noise(k, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(SLOTS, (k, batch), generator=g), torch.randn(k, batch, LATENT, generator=g)


def grads(module):
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def test_loss_is_minus_the_k_sample_bound_of_the_same_draws():
    torch.manual_seed(0)
    model, x, k = AddressModel(), torch.randn(3, 2), 5
    model.noise = draw_noise(k, len(x))
    # the particles are given: the model's plates are declared, not guessed from a trial run
    elbo = VIMCO(num_particles=k, max_plate_nesting=1)
    with torch.no_grad():
        log_weight = model.log_weights(x, *model.noise)
    # the scale N/B of the data plate multiplies each datapoint's log-mean-exp
    bound = 10 / 3 * (torch.logsumexp(log_weight, 0) - math.log(k)).sum()
    loss = elbo.loss(model.model, model.guide, x, num_data=10)
    assert loss == pytest.approx(-bound.item(), rel=1e-5)
    assert elbo.differentiable_loss(model.model, model.guide, x, 10).item() == pytest.approx(loss)
    assert elbo.loss_and_grads(model.model, model.guide, x, 10) == pytest.approx(loss)
    assert all(p.grad is not None for p in model.parameters())
    module = elbo(model.model, model.guide)
    assert isinstance(module, torch.nn.Module)
    assert module(x, num_data=10).item() == pytest.approx(loss)


def test_loss_with_random_draws_is_a_lower_bound_that_tightens_with_k():
    model, x = AddressModel(), torch.randn(4, 2)
    losses = {
        k: sum(VIMCO(k).loss(model.model, model.guide, x) for _ in range(200)) / 200
        for k in (2, 50)
    }
    assert losses[50] < losses[2]


@pytest.mark.parametrize(
    "baseline, beta", [("geometric", 1.0), ("arithmetic", 1.0), ("geometric", 0.5)]
)
def test_gradient_is_unbiased_against_exhaustive_enumeration(baseline, beta):
    # The model's only latent is an address over 3 slots; with K = 3 the expected
    # K-sample bound is a sum over all 3^3 particle tuples, so its gradient is exact.
    model, x, k = AddressModel(latent=False, dtype=torch.float64), torch.tensor([[0.3, -0.8]]), 3
    params, x_ = list(model.parameters()), x.double()
    log_q = torch.log_softmax(x_ @ model.query + model.guide_logits, -1)[0]
    # a tempered model (beta < 1) scales log p inside each weight; q draws the particles
    log_w = (
        beta * torch.log_softmax(model.prior_logits, -1)
        + beta * torch.distributions.Normal(model.means, 1.0).log_prob(x_).sum(-1)
        - log_q
    )
    exact_bound = sum(
        log_q[list(t)].sum().exp() * (torch.logsumexp(log_w[list(t)], 0) - math.log(k))
        for t in itertools.product(range(SLOTS), repeat=k)
    )
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(exact_bound, params)])

    # each of B copies of x is an independent estimate: a batch gives their sum
    elbo, batches, batch = VIMCO(num_particles=k, baseline=baseline), 40, 2000
    means = []
    for _ in range(batches):
        model.zero_grad()
        (
            elbo.differentiable_loss(
                poutine.scale(model.model, scale=beta), model.guide, x_.expand(batch, 2)
            )
            / -batch
        ).backward()
        means.append(grads(model))
    means = torch.stack(means)
    estimate, stderr = means.mean(0), means.std(0) / math.sqrt(batches)
    # every component within 4.5 standard errors (a false alarm about once in 10^4 runs)
    assert torch.all((estimate - exact).abs() < 4.5 * stderr + 1e-6), (estimate, exact, stderr)
    # and the test has power: the address's score-function term is many errors away from 0
    guide_part = slice(-SLOTS * 3, None)  # query (2 x 3) and guide_logits (3)
    assert (exact[guide_part].abs() / stderr[guide_part]).max() > 20


def test_datapoints_are_independent():
    torch.manual_seed(0)
    model, x, k = AddressModel(), torch.randn(2, 2), 4
    a, eps = draw_noise(k, 2)
    elbo = VIMCO(num_particles=k, max_plate_nesting=1)

    def loss_and_grad(rows):
        model.zero_grad()
        model.noise = (a[:, rows], eps[:, rows])
        loss = elbo.differentiable_loss(model.model, model.guide, x[rows], num_data=10)
        loss.backward()
        return loss.item(), grads(model)

    pair_loss, pair_grad = loss_and_grad([0, 1])
    (loss0, grad0), (loss1, grad1) = loss_and_grad([0]), loss_and_grad([1])
    # a batch of B out of N is scaled by N/B: the pair counts each datapoint half as much
    assert pair_loss == pytest.approx((loss0 + loss1) / 2, rel=1e-5)
    torch.testing.assert_close(pair_grad, (grad0 + grad1) / 2)


def test_bad_arguments_and_unsupported_models():
    with pytest.raises(ValueError, match="num_particles: .*K >= 2.*got 1"):
        VIMCO(num_particles=1)
    with pytest.raises(TypeError, match="num_particles"):
        VIMCO(num_particles=2.0)
    with pytest.raises(ValueError, match="baseline: .*'harmonic'"):
        VIMCO(baseline="harmonic")
    for nesting in (-1, "1", 1.5):
        with pytest.raises(ValueError, match="max_plate_nesting: expected an int >= 0"):
            VIMCO(max_plate_nesting=nesting)
    model, x = AddressModel(), torch.randn(2, 2)

    def enumerated_guide(x, num_data=None):
        with data_plate(x, num_data):
            pyro.sample(
                "a", dist.Categorical(logits=torch.zeros(SLOTS)), infer={"enumerate": "parallel"}
            )
            pyro.sample("z", dist.Normal(torch.zeros(LATENT), 1.0).to_event(1))

    with pytest.raises(ValueError, match="site 'a' asks for enumerate='parallel'.*TraceEnum_ELBO"):
        VIMCO(max_plate_nesting=1).loss(model.model, enumerated_guide, x)

    def global_latent_model(x, num_data=None):
        shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
        with data_plate(x, num_data):
            pyro.sample("x", dist.Normal(shift, 1.0), obs=x[:, 0])

    def global_latent_guide(x, num_data=None):
        pyro.sample("shift", dist.Normal(0.0, 1.0))

    # with the whole dataset the bound is exact; a subsample of it inside the exp is not
    VIMCO().loss(global_latent_model, global_latent_guide, x)
    with pytest.raises(
        ValueError,
        match="cannot subsample plate 'data' here: latent model site 'shift' lies outside it "
        "and model site 'x' inside it may depend on it",
    ):
        VIMCO().loss(global_latent_model, global_latent_guide, x, num_data=10)

    def branching_model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(z if z > 0 else -z, 1.0), obs=torch.tensor(1.0))

    with pytest.raises(ValueError, match="VIMCO vectorises its 3 particles.*torch.where"):
        VIMCO(3).loss(branching_model, lambda: pyro.sample("z", dist.Normal(0.0, 1.0)))


@pytest.mark.parametrize("weight", ["tempered", "per datapoint"])
def test_a_scaled_model_weighs_each_particle_and_subsampling_scales_outside(weight):
    torch.manual_seed(0)
    model, x, k = AddressModel(), torch.randn(3, 2), 5
    model.noise = draw_noise(k, len(x))
    beta = torch.tensor(0.5) if weight == "tempered" else torch.tensor([0.2, 1.0, 3.0])
    with torch.no_grad():
        log_weight = model.log_weights(x, *model.noise, model_scale=beta)
    bound = 10 / 3 * (torch.logsumexp(log_weight, 0) - math.log(k)).sum()
    scaled_model = poutine.scale(model.model, scale=beta)
    loss = VIMCO(num_particles=k, max_plate_nesting=1).loss(
        scaled_model, model.guide, x, num_data=10
    )
    assert loss == pytest.approx(-bound.item(), rel=1e-5)


@pytest.mark.parametrize("baseline", ["geometric", "arithmetic"])
def test_leave_one_out_equals_the_direct_k_by_k_sums(baseline):
    k, g = 6, torch.Generator().manual_seed(0)
    log_weight = 3 * torch.randn(k, 5, dtype=torch.float64, generator=g)
    log_weight[2, 1] = 400.0  # one weight dominates its datapoint by e^400
    log_weight[:2, 2] = 60.0  # a tie for the largest weight
    log_weight[4, 3] = -math.inf  # a particle of zero weight
    log_weight[:, 4] = log_weight[:, 4] * 1e-12  # weights equal to 12 digits
    expected = torch.empty_like(log_weight)
    for i in range(k):
        others = torch.cat([log_weight[:i], log_weight[i + 1 :]])
        if baseline == "geometric":
            stand_in = others.mean(0, keepdim=True)
            expected[i] = torch.logsumexp(torch.cat([others, stand_in]), 0) - math.log(k)
        else:
            expected[i] = torch.logsumexp(others, 0) - math.log(k - 1)
    actual = VIMCO(num_particles=k, baseline=baseline)._leave_one_out(log_weight)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    single = VIMCO(num_particles=k, baseline=baseline)._leave_one_out(log_weight.float())
    torch.testing.assert_close(single.double(), expected, rtol=1e-6, atol=1e-5)


def test_plates_subsampled_apart_and_nested_are_bounded_cell_by_cell():
    """A subsampled data plate i (observed y_i) with a subsampled nested plate j of local
    latents z_ij (observed x_ij), beside an independently subsampled plate g (latent u_g,
    observed w_g): the bound is a log-mean-exp per cell (i, j) and per g, scaled outside."""
    k, g = 4, torch.Generator().manual_seed(0)
    rows, cols, groups = torch.tensor([1, 4]), torch.tensor([0, 2, 3]), torch.tensor([2])
    y, x_data, w_data = torch.randn(6, generator=g), torch.randn(6, 5), torch.randn(3)
    eps_z, eps_u = torch.randn(k, 3, 2, generator=g), torch.randn(k, 1, 1, generator=g)
    beta = 0.7  # a tempered likelihood of x

    def model():
        with pyro.plate("rows", 6, subsample=rows, dim=-1):
            pyro.sample("y", dist.Normal(0.0, 1.0), obs=y[rows])
            with pyro.plate("cols", 5, subsample=cols, dim=-2):
                z = pyro.sample("z", dist.Normal(0.0, 1.0))
                with poutine.scale(scale=beta):
                    pyro.sample("x", dist.Normal(z, 0.5), obs=x_data[rows][:, cols].T)
        with pyro.plate("groups", 3, subsample=groups, dim=-1):
            u = pyro.sample("u", dist.Normal(0.0, 2.0))
            pyro.sample("w", dist.Normal(u, 1.0), obs=w_data[groups])

    def guide():
        with pyro.plate("rows", 6, subsample=rows, dim=-1):
            with pyro.plate("cols", 5, subsample=cols, dim=-2):
                pyro.sample("z", Given(dist.Normal(0.3, 0.8).expand([3, 2]), 0.3 + 0.8 * eps_z))
        with pyro.plate("groups", 3, subsample=groups, dim=-1):
            pyro.sample("u", Given(dist.Normal(-0.2, 1.5).expand([1]), -0.2 + 1.5 * eps_u))

    normal = torch.distributions.Normal
    z, u = 0.3 + 0.8 * eps_z, -0.2 + 1.5 * eps_u
    l_z = (
        normal(0.0, 1.0).log_prob(z)
        + beta * normal(z, 0.5).log_prob(x_data[rows][:, cols].T)
        - normal(0.3, 0.8).log_prob(z)
    )
    l_u = normal(0.0, 2.0).log_prob(u) + normal(u, 1.0).log_prob(w_data[groups])
    l_u = l_u - normal(-0.2, 1.5).log_prob(u)
    bound = (
        6 / 2 * normal(0.0, 1.0).log_prob(y[rows]).sum()
        + (6 / 2) * (5 / 3) * (torch.logsumexp(l_z, 0) - math.log(k)).sum()
        + 3 / 1 * (torch.logsumexp(l_u, 0) - math.log(k)).sum()
    )
    loss = VIMCO(num_particles=k, max_plate_nesting=2).loss(model, guide)
    assert loss == pytest.approx(-bound.item(), rel=1e-5)

    def local_latent_outside_cols():
        with pyro.plate("rows", 6, subsample=rows, dim=-1):
            v = pyro.sample("v", dist.Normal(0.0, 1.0))
            with pyro.plate("cols", 5, subsample=cols, dim=-2):
                pyro.sample("x", dist.Normal(v, 1.0), obs=x_data[rows][:, cols].T)

    def guide_v():
        with pyro.plate("rows", 6, subsample=rows, dim=-1):
            pyro.sample("v", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="plate 'cols' here: latent model site 'v'"):
        VIMCO(num_particles=k, max_plate_nesting=2).loss(local_latent_outside_cols, guide_v)


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from lightning.pytorch.callbacks import Callback
    sys.path.insert(0, {tests!r})
    from test_vimco import AddressModel
    from pyromem.infer import VIMCO
    from pyromem.train import fit

    class SaveParameters(Callback):
        def on_train_end(self, trainer, pl_module):
            state = {{k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}}
            torch.save(state, {out!r} + f"/rank{{trainer.global_rank}}.pt")

    torch.manual_seed(0)
    model = AddressModel()
    torch.save(model.state_dict(), {out!r} + "/initial.pt")
    data = torch.randn(64, 2)
    result = fit(model, data, epochs=2, batch_size=8, lr=1e-2, out_dir={out!r}, elbo=VIMCO(4),
                 accelerator="cpu", devices=2, strategy="ddp", progress=False,
                 callbacks=[SaveParameters()])
    print("EPOCHS", result.epochs)
    """
)


def test_trains_under_ddp_on_two_cpu_processes_with_identical_parameters(tmp_path):
    script = tmp_path / "ddp_vimco.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(__file__), out=str(tmp_path)))
    completed = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "EPOCHS 2" in completed.stdout
    initial, rank0, rank1 = (
        torch.load(tmp_path / f"{n}.pt") for n in ("initial", "rank0", "rank1")
    )
    for name in initial:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0)
        assert not torch.equal(rank0[name], initial[name]), name
