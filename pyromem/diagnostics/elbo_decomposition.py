"""The ELBO of each datapoint split into the terms of its sites.

For a model p(x, z) = Π_s p(z_s | pa_s) Π_o p(x_o | pa_o) and a guide q(z | x),

    ELBO(x) = Σ_o E_q[log p(x_o | pa_o)] − Σ_s E_q[KL(q(z_s | ·) ‖ p(z_s | pa_s))],

where each KL is conditional on the particle's parents and is computed
analytically when torch registers ``kl_divergence`` for the pair of
distributions, and by the single-sample Monte Carlo estimate
log q(z_s) − log p(z_s) otherwise. Both are averaged over ``num_particles``
draws from the guide: the trial run that finds the plate nesting, then the
others vectorised.
"""

from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

from pyromem.checks import as_int
from pyromem.diagnostics.particles import (
    latent_sites,
    observed_sites,
    particle_traces,
    trial_traces,
)
from pyromem.diagnostics.units import bits_per_dim
from pyromem.infer.traces import per_datapoint, plate_nesting


@dataclass
class ELBODecomposition:
    """Per-datapoint terms of the ELBO, in nats.

    :ivar dict log_likelihood: observed site name → expected log-likelihood, shape ``(B,)``.
    :ivar dict kl: latent site name → KL of the guide from the prior, shape ``(B,)``.
    :ivar dict analytic_kl: latent site name → whether its KL is analytic.
    :ivar int num_dims: the number of observed scalars per datapoint (for bits/dim).
    :ivar int num_particles: the number of guide draws averaged.
    """

    log_likelihood: dict
    kl: dict
    analytic_kl: dict
    num_dims: int
    num_particles: int

    @property
    def elbo(self):
        """The ELBO of each datapoint in nats, shape ``(B,)``."""
        return sum(self.log_likelihood.values()) - sum(self.kl.values())

    @property
    def bits_per_dim(self):
        """The negative ELBO of each datapoint in bits per observed dim, shape ``(B,)``."""
        return bits_per_dim(self.elbo, self.num_dims)

    def summary(self):
        """Means over the datapoints as plain floats (nats per datapoint)."""
        return {
            "elbo_nats": self.elbo.mean().item(),
            "bits_per_dim": self.bits_per_dim.mean().item(),
            "kl": {name: value.mean().item() for name, value in self.kl.items()},
            "log_likelihood": {
                name: value.mean().item() for name, value in self.log_likelihood.items()
            },
            "analytic_kl": dict(self.analytic_kl),
            "num_particles": self.num_particles,
        }


def _site_log_likelihood(model_site, guide_site):
    return model_site["fn"].log_prob(model_site["value"])


def _site_kl(model_site, guide_site):
    try:
        return kl_divergence(guide_site["fn"], model_site["fn"]), True
    except NotImplementedError:
        value = guide_site["value"]
        return guide_site["fn"].log_prob(value) - model_site["fn"].log_prob(value), False


def elbo_decomposition(model, guide, x, num_particles=10, **kwargs):
    """Per-datapoint expected log-likelihood of each observed site and KL of each latent site.

    :param callable model: a Pyro model called as ``model(x, **kwargs)``, whose
        sites lie in ``pyro.plate("data", ...)``.
    :param callable guide: a guide for ``model`` with the same signature.
    :param torch.Tensor x: a batch of B datapoints.
    :param int num_particles: the number of vectorised guide draws averaged.
    :param kwargs: further keyword arguments of the model and guide.
    :rtype: ELBODecomposition
    """
    as_int(num_particles, "num_particles", 1)
    args = (x,)
    with torch.no_grad():
        # the trial run that finds the plate nesting is the first particle
        passes = [trial_traces(model, guide, args, kwargs)]
        nesting = plate_nesting(*passes[0])
        if num_particles > 1:
            passes.append(
                particle_traces(
                    model, guide, args, kwargs, num_particles - 1, nesting, validated=True
                )
            )
        model_trace = passes[0][0]
        for name in latent_sites(model_trace):
            if name not in passes[0][1].nodes:
                raise ValueError(f"the guide has no sample site {name!r} for the model's latent")

        def mean_over_particles(name, term):
            # term(model site, guide site) per datapoint, summed over the passes' draws
            total = 0.0
            for model_pass, guide_pass in passes:
                site = model_pass.nodes[name]
                value = term(site, guide_pass.nodes.get(name))
                total = total + per_datapoint(value, site, nesting).sum(0)
            return total / num_particles

        log_likelihood, num_dims = {}, 0
        for name in observed_sites(model_trace):
            log_likelihood[name] = mean_over_particles(name, _site_log_likelihood)
            num_dims += model_trace.nodes[name]["fn"].event_shape.numel()
        kl, analytic = {}, {}
        for name in latent_sites(model_trace):
            analytic[name] = _site_kl(model_trace.nodes[name], passes[0][1].nodes[name])[1]
            kl[name] = mean_over_particles(name, lambda *sites: _site_kl(*sites)[0])
    batch = len(x)
    return ELBODecomposition(
        log_likelihood={k: v.expand(batch) for k, v in log_likelihood.items()},
        kl={k: v.expand(batch) for k, v in kl.items()},
        analytic_kl=analytic,
        num_dims=num_dims,
        num_particles=num_particles,
    )
