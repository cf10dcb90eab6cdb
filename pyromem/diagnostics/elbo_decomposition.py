"""The ELBO of each datapoint split into the terms of its sites.

For a model p(x, z) = Π_s p(z_s | pa_s) Π_o p(x_o | pa_o) and a guide q(z | x),

    ELBO(x) = Σ_o E_q[log p(x_o | pa_o)] − Σ_s E_q[KL(q(z_s | ·) ‖ p(z_s | pa_s))],

where each KL is conditional on the particle's parents and is computed
analytically when torch registers ``kl_divergence`` for the pair of
distributions, and by the single-sample Monte Carlo estimate
log q(z_s) − log p(z_s) otherwise. Masks (:func:`~pyro.poutine.mask`, e.g. missing data)
apply as in Pyro's ELBOs: a log-likelihood and log p by the model's mask, log q and an
analytic KL by the guide's; scales (a subsampled plate's, :func:`~pyro.poutine.scale`) do
not, so that each datapoint is scored once. Both are averaged over ``num_particles``
draws from the guide: the trial run that finds the plate nesting (and checks
the arguments, under Pyro's validation setting), then the others vectorised in
one pass, traced and scored without validation.
"""

from dataclasses import dataclass

import pyro
import torch
from torch.distributions import kl_divergence

from pyromem.checks import as_int
from pyromem.diagnostics.particles import (
    latent_sites,
    masked,
    observed_scalars,
    observed_sites,
    particle_traces,
    site_log_prob,
    trial_traces,
)
from pyromem.diagnostics.units import bits_per_dim
from pyromem.infer.traces import per_datapoint, plate_nesting


@dataclass
class ELBODecomposition:
    """Per-datapoint terms of the ELBO, in nats.

    :ivar log_likelihood: a dict observed site name → expected log-likelihood, shape
        ``(B,)``.
    :ivar kl: a dict latent site name → KL of the guide from the prior, shape ``(B,)``.
    :ivar analytic_kl: a dict latent site name → whether its KL is analytic.
    :ivar num_dims: the number of observed scalars per datapoint (for bits/dim), an int.
    :ivar num_particles: the number of guide draws averaged, an int.
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


def _site_kl(model_site, guide_site):
    # masked as Pyro's ELBOs mask the terms: log q by the guide's mask and log p by the
    # model's (Trace_ELBO), an analytic KL by the guide's (TraceMeanField_ELBO)
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return site_log_prob(guide_site) - site_log_prob(model_site), False
    return masked(kl, guide_site), True


def elbo_decomposition(model, guide, x, num_particles=10, **kwargs):
    """Per-datapoint expected log-likelihood of each observed site and KL of each latent site.

    :param callable model: a Pyro model called as ``model(x, **kwargs)``, whose
        sites lie in ``pyro.plate("data", ...)``.
    :param callable guide: a guide for ``model`` with the same signature.
    :param torch.Tensor x: a batch of B datapoints.
    :param int num_particles: the number of vectorised guide draws averaged.
    :param kwargs: further keyword arguments of the model and guide.
    :rtype: ELBODecomposition
    :raises ValueError: if the model has no observed site (e.g. model and guide swapped) or
        the guide lacks one of the model's latent sites
        (:func:`~pyromem.diagnostics.particles.check_sites`).
    """
    as_int(num_particles, "num_particles", 1)
    args = (x,)
    with torch.no_grad():
        # the trial run that finds the plate nesting is the first particle; it refuses a
        # model without observed sites and a guide without one of the model's latent sites
        model_trace, guide_trace = trial_traces(model, guide, args, kwargs)
        nesting = plate_nesting(model_trace, guide_trace)
        observed, latent = observed_sites(model_trace), latent_sites(model_trace)

        def summed_terms(model_trace, guide_trace):
            # each site's term per datapoint summed over the pass's draws, and whether each KL
            # is analytic
            terms, analytic = {}, {}
            for name in observed:
                terms[name] = site_log_prob(model_trace.nodes[name])
            for name in latent:
                terms[name], analytic[name] = _site_kl(
                    model_trace.nodes[name], guide_trace.nodes[name]
                )
            sums = {
                name: per_datapoint(term, model_trace.nodes[name], nesting).sum(0)
                for name, term in terms.items()
            }
            return sums, analytic

        totals, analytic = summed_terms(model_trace, guide_trace)
        if num_particles > 1:
            # traced and scored without validation: the trial has checked the same arguments,
            # which torch's log_prob would check again
            with pyro.validation_enabled(False):
                traces = particle_traces(model, guide, args, kwargs, num_particles - 1, nesting)
                particles, _ = summed_terms(*traces)
            totals = {name: total + particles[name] for name, total in totals.items()}
        num_dims = observed_scalars(model_trace, len(x))
    batch = len(x)
    return ELBODecomposition(
        log_likelihood={name: (totals[name] / num_particles).expand(batch) for name in observed},
        kl={name: (totals[name] / num_particles).expand(batch) for name in latent},
        analytic_kl=analytic,
        num_dims=num_dims,
        num_particles=num_particles,
    )
