"""VIMCO on the valid and invalid model/guide pairs of Pyro's ``tests/infer/test_valid_models.py``.

Our adaptation of the cases that apply to an estimator without enumeration (those
Pyro runs with ``Trace_ELBO``, ``TraceGraph_ELBO`` or ``TraceMeanField_ELBO``; one
case per model/guide pair, whichever of those estimators Pyro ran it with). Each
case either trains like Pyro's (a step of SVI, then ``loss``, ``differentiable_loss``
and ``loss_and_grads`` agreeing on the same draws, no warning), raises the error
Pyro's estimators raise, or raises the error VIMCO documents: a subsampled plate
with a latent site outside it, and an enumerated guide site.
"""

import warnings

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI
from pyro.infer.reparam import LatentStableReparam
from pyro.optim import Adam
from torch.distributions import constraints

from pyromem.infer import VIMCO

pytestmark = pytest.mark.filterwarnings("ignore:.*treespec.*")

OK = ("ok", None)
#  what VIMCO documents, beyond Pyro's own errors
LATENT_OUTSIDE = "VIMCO cannot subsample plate .*latent .* lies outside it"
ENUMERATED = "VIMCO samples every guide site"


def bernoulli_p():
    return pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)


def same(program):
    """The pair (program, program): the guide is the model, as in many of Pyro's cases."""
    return program, program


CASES = {}


def case(name, expected=OK, elbo=None):
    def register(build):
        CASES[name] = (build, expected, elbo or {})
        return build

    return register


def model_with_param(program):
    """``program`` as the guide, with p a parameter; as the model, with p fixed."""

    def model():
        program(torch.tensor(0.5))

    def guide():
        program(bernoulli_p())

    return model, guide


@case("nonempty_model_empty_guide_ok")
def _():
    def model():
        pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1), obs=torch.zeros(2))

    return model, lambda: None


@case("nonempty_model_empty_guide_error", ("error", "Found vars in model but not guide"))
def _():
    return lambda: pyro.sample("x", dist.Normal(0.0, 1.0)), lambda: None


@case("empty_model_empty_guide_ok")
def _():
    return lambda: None, lambda: None


@case("variable_clash_in_model_error", ("error", "Multiple sample sites named"))
def _():
    def model():
        pyro.sample("x", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Bernoulli(0.5))

    return model, lambda: pyro.sample("x", dist.Bernoulli(bernoulli_p()))


@case("variable_clash_in_guide_error", ("error", "Multiple sample sites named"))
def _():
    def guide():
        pyro.sample("x", dist.Bernoulli(bernoulli_p()))
        pyro.sample("x", dist.Bernoulli(bernoulli_p()))

    return lambda: pyro.sample("x", dist.Bernoulli(0.5)), guide


@case(
    "model_guide_dim_mismatch_error",
    ("error", "invalid log_prob shape|Model and guide event_dims disagree"),
)
def _():
    def guide():
        loc = pyro.param("loc", torch.zeros(2, 1))
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(2))

    return lambda: pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1)), guide


@case("model_guide_shape_mismatch_error", ("error", "Model and guide shapes disagree"))
def _():
    def guide():
        loc = pyro.param("loc", torch.zeros(2, 1))
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(2))

    return lambda: pyro.sample("x", dist.Normal(torch.zeros(1, 2), 1.0).to_event(2)), guide


for has_rsample in (False, True):

    @case(f"set_has_rsample_ok[{has_rsample}]")
    def _(has_rsample=has_rsample):
        def model():
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal((100 * z).clamp(0, 1), 1.0), obs=torch.tensor(0.0))

        def guide():
            loc = pyro.param("loc", torch.tensor(0.0))
            pyro.sample("z", dist.Normal(loc, 1.0).has_rsample_(has_rsample))

        return model, guide


@case("not_has_rsample_ok")
def _():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Bernoulli(z.round().clamp(0.2, 0.8)), obs=torch.tensor(0.0))

    def guide():
        pyro.sample("z", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0).has_rsample_(False))

    return model, guide


for subsample in (None, 2):
    tag = "full" if subsample is None else "subsample"

    @case(f"iplate_ok[{tag}]")
    def _(subsample=subsample):
        def program(p):
            for i in pyro.plate("plate", 4, subsample):
                pyro.sample(f"x_{i}", dist.Bernoulli(p))

        return model_with_param(program)

    for nesting in (0, float("inf")):
        for swap in (False, True):
            name = "iplate_iplate_swap_ok" if swap else "iplate_iplate_ok"

            @case(f"{name}[{tag}-{nesting}]", elbo={"max_plate_nesting": nesting})
            def _(subsample=subsample, swap=swap):
                def program(p, swap):
                    outer = pyro.plate("plate_0", 3, subsample)
                    inner = pyro.plate("plate_1", 3, subsample)
                    for i in inner if swap else outer:
                        for j in outer if swap else inner:
                            pair = (j, i) if swap else (i, j)
                            pyro.sample("x_{}_{}".format(*pair), dist.Bernoulli(p))

                return lambda: program(torch.tensor(0.5), False), lambda: program(
                    bernoulli_p(), swap
                )


for subsample in (None, 5):
    tag = "full" if subsample is None else "subsample"

    @case(f"plate_ok[{tag}]")
    def _(subsample=subsample):
        def program(p):
            with pyro.plate("plate", 10, subsample) as ind:
                pyro.sample("x", dist.Bernoulli(p).expand_by([len(ind)]))

        return model_with_param(program)

    def model(subsample=subsample):
        with pyro.plate("plate", 10, subsample):
            pyro.sample("x", dist.Bernoulli(0.5))

    @case(f"plate_subsample_param_ok[{tag}]")
    def _(subsample=subsample, model=model):
        def guide():
            with pyro.plate("plate", 10, subsample) as ind:
                assert pyro.param("p0", torch.tensor(0.0), event_dim=0).shape == ()
                p = pyro.param("p", 0.5 * torch.ones(10), event_dim=0)
                assert len(p) == len(ind)
                pyro.sample("x", dist.Bernoulli(p))

        return model, guide

    @case(f"plate_subsample_primitive_ok[{tag}]")
    def _(subsample=subsample, model=model):
        def guide():
            with pyro.plate("plate", 10, subsample) as ind:
                assert pyro.subsample(torch.tensor(0.0), event_dim=0).shape == ()
                p = pyro.subsample(0.5 * torch.ones(10), event_dim=0)
                assert len(p) == len(ind)
                pyro.sample("x", dist.Bernoulli(p))

        return model, guide

    for shape, fits in [
        ((), True),
        ((1,), True),
        ((10,), True),
        ((3, 1), True),
        ((3, 10), True),
        ((5,), False),
        ((3, 5), False),
    ]:
        expected = OK if fits else ("error", "invalid shape of pyro.param")

        @case(f"plate_param_size_mismatch_error[{tag}-{shape}]", expected)
        def _(subsample=subsample, model=model, shape=shape):
            def guide():
                with pyro.plate("plate", 10, subsample):
                    pyro.param("p0", torch.ones(shape), event_dim=0)
                    pyro.sample("x", dist.Bernoulli(pyro.param("p", torch.ones(10), event_dim=0)))

            return model, guide

    @case(f"iplate_in_model_not_guide_ok[{tag}]")
    def _(subsample=subsample):
        def model():
            for _ in pyro.plate("plate", 10, subsample):
                pass
            pyro.sample("x", dist.Bernoulli(0.5))

        return model, lambda: pyro.sample("x", dist.Bernoulli(bernoulli_p()))

    for validate in (True, False):
        expected = ("error", "Found plate statements in guide but not model") if validate else OK

        @case(
            f"iplate_in_guide_not_model_error[{tag}-{validate}]", expected, {"validate": validate}
        )
        def _(subsample=subsample, validate=validate):
            def guide():
                for _ in pyro.plate("plate", 10, subsample):
                    pass
                pyro.sample("x", dist.Bernoulli(bernoulli_p()))

            return lambda: pyro.sample("x", dist.Bernoulli(0.5)), guide


@case("iplate_variable_clash_error", ("error", "Multiple sample sites named"))
def _():
    def program(p):
        for _ in pyro.plate("plate", 2):
            pyro.sample("x", dist.Bernoulli(p))

    return model_with_param(program)


@case("plate_no_size_ok")
def _():
    def program(p):
        with pyro.plate("plate"):
            pyro.sample("x", dist.Bernoulli(p).expand_by([10]))

    return model_with_param(program)


@case("plate_broadcast_error", ("error", "Shape mismatch inside plate"))
def _():
    def model():
        with pyro.plate("plate", 10, 5):
            pyro.sample("x", dist.Bernoulli(0.5).expand_by([2]))

    return same(model)


@case("plate_iplate_ok")
def _():
    def program(p):
        with pyro.plate("plate", 3, 2) as ind:
            for i in pyro.plate("iplate", 3, 2):
                pyro.sample(f"x_{i}", dist.Bernoulli(p).expand_by([len(ind)]))

    return model_with_param(program)


@case("iplate_plate_ok")
def _():
    def program(p):
        inner = pyro.plate("plate", 3, 2)
        for i in pyro.plate("iplate", 3, 2):
            with inner as ind:
                pyro.sample(f"x_{i}", dist.Bernoulli(p).expand_by([len(ind)]))

    return model_with_param(program)


for sizes in [(3,), (3, 4), (3, 4, 5)]:

    @case(f"plate_stack_ok[{sizes}]")
    def _(sizes=sizes):
        def program(p):
            with pyro.plate_stack("plate_stack", sizes):
                pyro.sample("x", dist.Bernoulli(p))

        return model_with_param(program)

    @case(f"plate_stack_and_plate_ok[{sizes}]")
    def _(sizes=sizes):
        def program(p):
            with pyro.plate_stack("plate_stack", sizes), pyro.plate("plate", 7):
                pyro.sample("x", dist.Bernoulli(p))

        return model_with_param(program)


# a latent x_i outside the subsampled inner plate, which y_ij may depend on
@case("nested_plate_plate_ok", ("error", LATENT_OUTSIDE))
def _():
    def model():
        with pyro.plate("plate_outer", 10, 5) as i:
            pyro.sample("x", dist.Bernoulli(0.5).expand_by([len(i)]))
            with pyro.plate("plate_inner", 11, 6) as j:
                pyro.sample("y", dist.Bernoulli(0.5).expand_by([len(j), len(i)]))

    return same(model)


# crossed subsampled plates: x (outer) and y (inner) are latents that z may depend on
@case("plate_reuse_ok", ("error", LATENT_OUTSIDE))
def _():
    def model():
        outer = pyro.plate("plate_outer", 10, 5, dim=-1)
        inner = pyro.plate("plate_inner", 11, 6, dim=-2)
        with outer as i:
            pyro.sample("x", dist.Bernoulli(0.5).expand_by([len(i)]))
        with inner as j:
            pyro.sample("y", dist.Bernoulli(0.5).expand_by([len(j), 1]))
        with outer as i, inner as j:
            pyro.sample("z", dist.Bernoulli(0.5).expand_by([len(j), len(i)]))

    return same(model)


for number, (x_shape, y_shape, z_shape, match) in enumerate(
    [
        (["o"], ["i"], ["o", "i"], "invalid log_prob shape"),
        (["o", 1], ["o"], ["o", "i"], "Shape mismatch inside plate"),
        (["o", 1], ["i"], ["i", 1], "invalid log_prob shape|shape mismatch"),
        (["o", 1], ["i"], ["o", "o"], "hape mismatch inside plate"),
    ],
    start=1,
):

    @case(f"nested_plate_plate_dim_error_{number}", ("error", match))
    def _(x_shape=x_shape, y_shape=y_shape, z_shape=z_shape):
        def model():
            p = torch.tensor([0.5])
            with pyro.plate("plate_outer", 10, 5) as i:
                sizes = {"o": len(i), 1: 1}
                pyro.sample("x", dist.Bernoulli(p).expand_by([sizes[d] for d in x_shape]))
                with pyro.plate("plate_inner", 11, 6) as j:
                    sizes["i"] = len(j)
                    pyro.sample("y", dist.Bernoulli(p).expand_by([sizes[d] for d in y_shape]))
                    pyro.sample("z", dist.Bernoulli(p).expand_by([sizes[d] for d in z_shape]))

        return same(model)


@case("nested_plate_plate_subsample_param_ok", ("error", LATENT_OUTSIDE))
def _():
    def model():
        with pyro.plate("plate_outer", 10, 5):
            pyro.sample("x", dist.Bernoulli(0.2))
            with pyro.plate("plate_inner", 11, 6):
                pyro.sample("y", dist.Bernoulli(0.2))

    def guide():
        assert pyro.param("p0", 0.5 * torch.ones(4, 5), event_dim=2).shape == (4, 5)
        with pyro.plate("plate_outer", 10, 5):
            assert pyro.param("p1", 0.5 * torch.ones(10, 3), event_dim=1).shape == (5, 3)
            pyro.sample("x", dist.Bernoulli(pyro.param("px", 0.5 * torch.ones(10), event_dim=0)))
            with pyro.plate("plate_inner", 11, 6):
                py = pyro.param("py", 0.5 * torch.ones(11, 10), event_dim=0)
                pyro.sample("y", dist.Bernoulli(py))

    return model, guide


@case("nonnested_plate_plate_ok")
def _():
    def model():
        with pyro.plate("plate_0", 10, 5) as i:
            pyro.sample("x0", dist.Bernoulli(0.5).expand_by([len(i)]))
        with pyro.plate("plate_1", 11, 6) as j:
            pyro.sample("x1", dist.Bernoulli(0.5).expand_by([len(j)]))

    return same(model)


# the latent x_0 lies outside the subsampled plate2 in which y_j may depend on it
@case("three_indep_plate_at_different_depths_ok", ("error", LATENT_OUTSIDE))
def _():
    def program(p):
        inner = pyro.plate("plate2", 10, 5)
        for i in pyro.plate("plate0", 2):
            pyro.sample(f"x_{i}", dist.Bernoulli(p))
            if i == 0:
                for j in pyro.plate("plate1", 2):
                    with inner as ind:
                        pyro.sample(f"y_{j}", dist.Bernoulli(p).expand_by([len(ind)]))
            else:
                with inner as ind:
                    pyro.sample("z", dist.Bernoulli(p).expand_by([len(ind)]))

    return model_with_param(program)


@case("plate_wrong_size_error", ("error", "Shape mismatch inside plate"))
def _():
    def program(p):
        with pyro.plate("plate", 10, 5) as ind:
            pyro.sample("x", dist.Bernoulli(p).expand_by([1 + len(ind)]))

    return model_with_param(program)


for enumerate_ in (None, "sequential", "parallel"):
    expected = OK if enumerate_ is None else ("error", ENUMERATED)

    @case(f"enum_discrete_misuse_warning[{enumerate_}]", expected, {"max_plate_nesting": 0})
    def _(enumerate_=enumerate_):
        def guide():
            pyro.sample("x", dist.Bernoulli(bernoulli_p()), infer={"enumerate": enumerate_})

        return lambda: pyro.sample("x", dist.Bernoulli(0.5)), guide


@case("plate_shape_broadcasting")
def _():
    data = torch.ones(1000, 2)

    def model():
        with pyro.plate("num_particles", 10, dim=-3):
            with pyro.plate("components", 2, dim=-1):
                p = pyro.sample("p", dist.Beta(1.1, 1.1))
                assert p.shape[-3:] == (10, 1, 2)
            with pyro.plate("data", data.shape[0], dim=-2):
                pyro.sample("obs", dist.Bernoulli(p), obs=data)

    def guide():
        with pyro.plate("num_particles", 10, dim=-3), pyro.plate("components", 2, dim=-1):
            pyro.sample("p", dist.Beta(1.1, 1.1))

    return model, guide


# x (plate_outer) is a latent outside the subsampled plate_inner_1
@case("dim_allocation_ok", ("error", LATENT_OUTSIDE), {"max_plate_nesting": 4})
def _():
    def model():
        p = torch.tensor(0.5)
        with pyro.plate("plate_outer", 10, 5, dim=-3):
            assert pyro.sample("x", dist.Bernoulli(p)).shape[-3:] == (5, 1, 1)
            with pyro.plate("plate_inner_1", 11, 6):
                assert pyro.sample("y", dist.Bernoulli(p)).shape[-3:] == (5, 1, 6)
                with pyro.plate("plate_inner_2", 12, 7):
                    assert pyro.sample("z", dist.Bernoulli(p)).shape[-3:] == (5, 7, 6)
                    with pyro.plate("plate_inner_3", 13, 8):
                        assert pyro.sample("q", dist.Bernoulli(p)).shape[-4:] == (8, 5, 7, 6)

    return same(model)


@case("dim_allocation_error", ("error", "collide at dim="))
def _():
    def model():
        with pyro.plate("plate_outer", 10, 5, dim=-2):
            pyro.sample("x", dist.Bernoulli(0.5))
            with pyro.plate("plate_inner_1", 11, 6):
                pyro.sample("y", dist.Bernoulli(0.5))
                with pyro.plate("plate_inner_2", 12, 7, dim=-1):
                    pyro.sample("z", dist.Bernoulli(0.5))

    return same(model)


@case("vectorized_num_particles", elbo={"num_particles": 10, "max_plate_nesting": 2})
def _():
    data = torch.ones(1000, 2)

    def model():
        with pyro.plate("components", 2):
            p = pyro.sample("p", dist.Beta(1.1, 1.1))
            assert p.shape == (10, 1, 2)
            with pyro.plate("data", data.shape[0]):
                pyro.sample("obs", dist.Bernoulli(p), obs=data)

    def guide():
        with pyro.plate("components", 2):
            pyro.sample("p", dist.Beta(1.1, 1.1))

    return model, guide


def normal_pair(mask=True, scale=1.0):
    """x ~ N(0, 1), y | x ~ N(x, 1) observed at 0 (masked or scaled); q(x) = N(loc, 1)."""

    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        with poutine.mask(mask=mask), poutine.scale(scale=scale):
            pyro.sample("y", dist.Normal(x, 1.0), obs=torch.tensor(0.0))

    def guide():
        pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))

    return model, guide


@case("mean_field_ok")
def _():
    def model():
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
        pyro.sample("y", dist.Normal(x, 1.0))

    def guide():
        x = pyro.sample("x", dist.Normal(pyro.param("loc", torch.tensor(0.0)), 1.0))
        pyro.sample("y", dist.Normal(x, 1.0))

    return model, guide


for mask in (True, False):

    @case(f"mean_field_mask_ok[{mask}]")
    def _(mask=mask):
        def model():
            x = pyro.sample("x", dist.Normal(0.0, 1.0).mask(mask))
            pyro.sample("y", dist.Normal(x, 1.0))

        def guide():
            loc = pyro.param("loc", torch.tensor(0.0))
            x = pyro.sample("x", dist.Normal(loc, 1.0).mask(mask))
            pyro.sample("y", dist.Normal(x, 1.0))

        return model, guide


case("reparam_ok")(normal_pair)
for mask in (True, False, torch.tensor(True), torch.tensor(False)):
    case(f"reparam_mask_ok[{mask}]")(lambda mask=mask: normal_pair(mask=mask))
for scale in (1, 0.1, torch.tensor(0.5)):
    case(f"reparam_scale_ok[{scale}]")(lambda scale=scale: normal_pair(scale=scale))


def dirichlet_plate(mask=True, scale=1.0):
    """c ~ LogNormal, two Dirichlet(c) observations in a plate (masked or scaled)."""
    data = torch.randn(2, 3).exp()
    data /= data.sum(-1, keepdim=True)

    def model():
        c = pyro.sample("c", dist.LogNormal(0.0, 1.0).expand([3]).to_event(1))
        with pyro.plate("data", len(data)), poutine.mask(mask=mask):
            with poutine.scale(scale=scale):
                pyro.sample("obs", dist.Dirichlet(c), obs=data)

    def guide():
        loc = pyro.param("loc", torch.zeros(3))
        spread = pyro.param("scale", torch.ones(3), constraint=constraints.positive)
        pyro.sample("c", dist.LogNormal(loc, spread).to_event(1))

    return model, guide


for mask in (True, False, torch.tensor(True), torch.tensor(False), torch.tensor([False, True])):
    case(f"reparam_mask_plate_ok[{mask}]")(lambda mask=mask: dirichlet_plate(mask=mask))
for scale in (1, 0.1, torch.tensor(0.5), torch.tensor([0.1, 0.9])):
    case(f"reparam_scale_plate_ok[{scale}]")(lambda scale=scale: dirichlet_plate(scale=scale))


@case("reparam_stable")
def _():
    @poutine.reparam(config={"z": LatentStableReparam()})
    def model():
        stability = pyro.sample("stability", dist.Uniform(0.0, 2.0))
        skew = pyro.sample("skew", dist.Uniform(-1.0, 1.0))
        y = pyro.sample("z", dist.Stable(stability, skew))
        pyro.sample("x", dist.Poisson(y.abs()), obs=torch.tensor(1.0))

    def guide():
        pyro.sample("stability", dist.Delta(torch.tensor(1.5)))
        pyro.sample("skew", dist.Delta(torch.tensor(0.0)))
        pyro.sample("z_uniform", dist.Delta(torch.tensor(0.1)))
        pyro.sample("z_exponential", dist.Delta(torch.tensor(1.0)))

    return model, guide


def run_like_pyro(model, guide, elbo):
    """A step of SVI (``loss_and_grads``), then ``loss`` and ``differentiable_loss`` on the
    same draws (Pyro's ``assert_ok``)."""
    SVI(model, guide, Adam({"lr": 1e-6}), elbo).step()
    pyro.set_rng_seed(0)
    loss = elbo.loss(model, guide)
    pyro.set_rng_seed(0)
    assert elbo.differentiable_loss(model, guide).item() == pytest.approx(loss, abs=0.01)


@pytest.mark.parametrize("name", sorted(CASES))
def test_pyro_valid_models_case(name):
    build, (outcome, match), options = CASES[name]
    options = dict(options)
    validate = options.pop("validate", True)
    elbo = VIMCO(num_particles=options.pop("num_particles", 3), **options)
    model, guide = build()
    with pyro.validation_enabled(validate):
        if outcome == "ok":
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                warnings.filterwarnings("ignore", ".*treespec.*")
                run_like_pyro(model, guide, elbo)
        else:
            # Pyro's own suite turns warnings into errors: some of its checks warn
            errors = (NotImplementedError, UserWarning, KeyError, ValueError, RuntimeError)
            with warnings.catch_warnings(), pytest.raises(errors, match=match):
                warnings.simplefilter("error")
                warnings.filterwarnings("ignore", ".*treespec.*")
                SVI(model, guide, Adam({"lr": 1e-6}), elbo).step()
