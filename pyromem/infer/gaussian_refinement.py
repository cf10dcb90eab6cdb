r"""Semi-amortised variational inference: refine the encoder's Gaussian per datapoint.

The amortised guide :math:`q_\phi(z \mid x) = \mathcal{N}(\mu_\phi(x), \mathrm{diag}\,
\sigma_\phi(x)^2)` leaves an *amortisation gap* (Cremer et al. 2018): its ELBO falls short of
that of the best Gaussian for each datapoint. Semi-amortised inference (Kim et al. 2018)
closes it by starting from :math:`\lambda_0 = (\mu_\phi(x), \log \sigma_\phi(x))` and taking
``num_steps`` gradient-ascent steps on that datapoint's own ELBO,

.. math::

    \lambda_{t+1} = \lambda_t + \eta\, \nabla_\lambda \mathcal{L}(x, \lambda_t), \qquad
    \mathcal{L}(x, \lambda) = \mathbb{E}_{q_\lambda}[\log p(x \mid z)]
        - \mathrm{KL}(q_\lambda(z) \,\|\, p(z)),

then emitting :math:`q_{\lambda_T}(z \mid x)`, a Normal guide, so every ELBO of Pyro (and
:class:`~pyromem.infer.VIMCO`) applies to it as to the amortised one.

The expectation is a reparameterised Monte Carlo estimate over ``num_particles`` draws
:math:`z_s = \mu + \sigma \odot \epsilon_s`, with the KL analytic where torch registers it
(a Normal prior) and :math:`\log q(z_s) - \log p(z_s)` otherwise (a memory prior). The base
noise :math:`\epsilon_{1:S}` is drawn once per call and held over the steps, in antithetic
pairs :math:`\pm\epsilon` rescaled to unit second moment per dim: the objective is then a
deterministic function of :math:`\lambda`, each step can backtrack per datapoint until it does
not decrease (as :class:`~pyromem.infer.MAPRefinement` does for the log joint), and for a
likelihood quadratic in :math:`z` (a linear-Gaussian model) its maximiser has exactly the mean
of the best Gaussian of the true ELBO (its scales too only where the likelihood couples no two
dims, or d = 1: the held noise's cross-moments between dims are not 0).

With ``differentiable=True`` the steps stay in the autograd graph (``create_graph=True``), so a
loss on the refined guide trains the encoder through them (Kim et al. 2018, Alg. 1). Otherwise
the refined :math:`\lambda_T` is a constant and the encoder receives no gradient from it.
Either way refining never writes a ``.grad``: every derivative is
:func:`torch.autograd.grad` with respect to :math:`\lambda` alone.

References:

[1] Kim, Wiseman, Miller, Sontag, Rush. "Semi-Amortized Variational Autoencoders." ICML 2018.
[2] Cremer, Li, Duvenaud. "Inference Suboptimality in Variational Autoencoders." ICML 2018.
[3] Marino. "Predictive Coding, Variational Autoencoders, and Biological Connections." 2019.
"""

from typing import NamedTuple

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pyromem.checks import as_int
from pyromem.infer.refinement import (
    Refinement,
    backtracking_ascent,
    check_observed_site,
    check_rate,
)
from pyromem.infer.traces import per_datapoint, plate_nesting

# Deprecated alias, kept for one release: the name is declared in pyromem.models.plates.
from pyromem.models.plates import DATA_PLATE  # noqa: F401


class GaussianState(NamedTuple):
    """The refined variational parameters and the base noise held over the steps.

    :ivar torch.Tensor loc: μ, shape ``(B, d)``.
    :ivar torch.Tensor log_scale: log σ, shape ``(B, d)``.
    :ivar torch.Tensor noise: ε, shape ``(S,) + (1,) * (n - 1) + (B, d)``, the particles left
        of the model's n plates.
    """

    loc: torch.Tensor
    log_scale: torch.Tensor
    noise: torch.Tensor

    def detach(self):
        return GaussianState(*(t.detach() for t in self))


class GaussianRefinement(Refinement):
    r"""Gradient ascent on each datapoint's ELBO over the encoder's :math:`(\mu, \log\sigma)`.

    :param callable model: the Pyro model, called as ``model(x, *args, **kwargs)``; ``site``
        must lie in its data plate. Other latent sites, if any, are drawn from their priors
        (their ELBO terms then cancel and are left out).
    :param callable guide: an amortised guide with a sample site ``site`` whose distribution
        has a ``mean`` and a ``stddev`` of shape ``(B, d)`` (a diagonal Normal, or any
        distribution read through its first two moments).
    :param int num_steps: T.
    :param float lr: η, the rate of each step.
    :param int num_particles: S, the reparameterised draws of the ELBO estimate, an even
        number: S / 2 antithetic pairs.
    :param bool differentiable: keep the steps in the autograd graph, for training through them.
    :param int max_backtracks: how many times a datapoint's rate may be halved in one step.
    :param str site: the refined latent site.
    """

    def __init__(
        self,
        model,
        guide,
        num_steps=20,
        lr=0.05,
        num_particles=8,
        differentiable=False,
        max_backtracks=10,
        site="z",
    ):
        super().__init__(model, guide, num_steps=num_steps, site=site)
        self.lr = check_rate(lr, "lr")
        as_int(num_particles, "num_particles", 1, error=TypeError, form="split")
        as_int(max_backtracks, "max_backtracks", 0, error=TypeError, form="split")
        if num_particles % 2:
            raise ValueError(
                f"num_particles: expected an even number (the draws come in antithetic pairs), "
                f"got {num_particles}"
            )
        if not isinstance(differentiable, bool):
            raise TypeError(f"differentiable: expected a bool, got {differentiable!r}")
        self.num_particles = num_particles
        self.differentiable = differentiable
        self.max_backtracks = max_backtracks

    def initial(self, x, *args, **kwargs):
        r""":math:`\lambda_0`: the amortised guide's mean and log standard deviation, with the
        base noise of this call, as a :class:`GaussianState`, checked against the model's
        site (:meth:`~pyromem.infer.Refinement.check_site`)."""
        q = self.amortized(x, *args, **kwargs)
        loc, scale = q.mean, q.stddev
        if loc.dim() != 2 or scale.shape != loc.shape:
            raise ValueError(
                f"the guide's site {self.site!r} must have a mean and stddev of shape (B, d), "
                f"got {tuple(loc.shape)} and {tuple(scale.shape)}"
            )
        self.check_site(self.model_site(x, *args, **kwargs), loc)
        # log σ is refined: a point mass (a MAPRefinement, a Delta guide) has σ = 0, whose
        # log is -inf, and the emitted Normal(μ, 0) would make every ELBO NaN
        if not ((scale > 0) & torch.isfinite(scale)).all():
            raise ValueError(
                f"the guide's site {self.site!r} must have a positive, finite stddev to refine, "
                f"got a stddev in [{scale.min().item():.3g}, {scale.max().item():.3g}]: "
                f"{type(self).__name__} refines a distribution "
                "with a density, not a point mass such as a MAPRefinement or a Delta"
            )
        if not self.differentiable:
            loc, scale = loc.detach(), scale.detach()
        # the particles go left of every plate of the model, as Pyro's vectorised particles do
        shape = (self.num_particles // 2,) + (1,) * (self._plate_nesting(x, *args, **kwargs) - 1)
        half = torch.randn(shape + loc.shape, dtype=loc.dtype, device=loc.device)
        noise = torch.cat([half, -half])
        noise = noise / noise.pow(2).mean(0).sqrt()
        return GaussianState(loc, scale.log(), noise)

    def distribution(self, state):
        """:math:`q_{\\lambda_T}(z \\mid x)`, a diagonal Normal with event shape ``(d,)``."""
        return dist.Normal(state.loc, state.log_scale.exp()).to_event(1)

    def elbo(self, state, x, *args, **kwargs):
        r""":math:`\mathcal{L}(x, \lambda)` per datapoint with the state's base noise, shape
        ``(B,)``, without the data plate's scaling."""
        loc, log_scale, noise = state
        q = self.distribution(state)
        z = loc + log_scale.exp() * noise
        nesting = noise.dim() - 2
        conditioned = poutine.condition(self.model, data={self.site: z})
        with poutine.block():
            trace = poutine.trace(conditioned).get_trace(x, *args, **kwargs)
        value = 0.0
        for name, node in trace.nodes.items():
            if node["type"] != "sample" or site_is_subsample(node):
                continue
            if name == self.site:
                try:
                    kl = kl_divergence(q, node["fn"])
                except NotImplementedError:
                    log_ratio = q.log_prob(z) - node["fn"].log_prob(z)
                    kl = per_datapoint(log_ratio, node, nesting, outside="sum").mean(0)
                value = value - kl
            elif node["is_observed"]:
                check_observed_site(node)
                # a poutine.mask holds (missing data); the scales are left out
                log_prob = scale_and_mask(node["fn"].log_prob(node["value"]), mask=node["mask"])
                value = value + per_datapoint(log_prob, node, nesting, outside="sum").mean(0)
        return value.expand(len(loc))

    def _plate_nesting(self, x, *args, **kwargs):
        with poutine.block():
            trace = poutine.trace(self.model).get_trace(x, *args, **kwargs)
        node = trace.nodes.get(self.site)
        if node is None or node["type"] != "sample" or node["is_observed"]:
            latent = [
                n
                for n, s in trace.nodes.items()
                if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
            ]
            raise ValueError(
                f"model has no latent sample site {self.site!r}; its latent sites: {latent}"
            )
        return max(plate_nesting(trace), 1)

    def value_and_grad(self, state, x, *args, **kwargs):
        r"""``(state, value, grads)``: the state whose :math:`(\mu, \log\sigma)` the
        gradients are taken at, :math:`\mathcal{L}(x, \lambda)` and
        :math:`(\nabla_\mu \mathcal{L}, \nabla_{\log\sigma} \mathcal{L})`, each per
        datapoint; the gradients keep their graph when the refinement is differentiable."""
        loc, log_scale, noise = state
        with torch.enable_grad():
            if not (self.differentiable and loc.requires_grad):
                loc = loc.detach().requires_grad_()
            if not (self.differentiable and log_scale.requires_grad):
                log_scale = log_scale.detach().requires_grad_()
            state = GaussianState(loc, log_scale, noise)
            value = self.elbo(state, x, *args, **kwargs)
            grads = torch.autograd.grad(
                value.sum(), (loc, log_scale), create_graph=self.differentiable
            )
        return state, value.detach(), grads

    def step(self, state, x, *args, **kwargs):
        state, value, (grad_loc, grad_log_scale) = self.value_and_grad(state, x, *args, **kwargs)
        loc, log_scale = backtracking_ascent(
            lambda loc, log_scale: self.elbo(
                GaussianState(loc, log_scale, state.noise), x, *args, **kwargs
            ),
            (state.loc, state.log_scale),
            (grad_loc, grad_log_scale),
            value,
            self.lr,
            self.max_backtracks,
        )
        return GaussianState(loc, log_scale, state.noise)

    def refine(self, x, *args, trajectory=False, **kwargs):
        r""":math:`\lambda_T` after ``num_steps`` steps, a :class:`GaussianState`.

        :param bool trajectory: also return the list :math:`[\lambda_0, \dots, \lambda_T]`.
        """
        state = self.initial(x, *args, **kwargs)
        if not self.differentiable:
            state = state.detach()
        path = [state]
        for _ in range(self.num_steps):
            state = self.step(state, x, *args, **kwargs)
            if not self.differentiable:
                state = state.detach()
            path.append(state)
        return (state, path) if trajectory else state
