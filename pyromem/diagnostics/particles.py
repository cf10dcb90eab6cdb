"""Vectorised particle traces of a model/guide pair, reduced per datapoint.

Diagnostics score each datapoint separately, so every latent and observed site
must sit inside the model's ``pyro.plate("data", ...)`` (DESIGN.md, "sites have
stable names"). Particles are drawn in one vectorised pass by an outer
``pyro.plate("particles", K)`` placed left of all the model's plates, as Pyro's
``vectorize_particles=True`` does.
"""

import contextlib

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyromem.checks import check_program
from pyromem.infer.traces import per_datapoint, plate_nesting

# Deprecated aliases, kept for one release: DATA_PLATE is declared in pyromem.models.plates,
# per_datapoint in pyromem.infer.traces (imported above, and used here).
from pyromem.models.plates import DATA_PLATE  # noqa: F401


def trial_traces(model, guide, args, kwargs, name=None):
    """``(model_trace, guide_trace)`` of one draw without a particle plate: the trial run
    that finds the plate nesting (:func:`~pyromem.infer.traces.plate_nesting`), which also
    checks the arguments as Pyro's validation setting says, and the pair's sites
    (:func:`check_sites`). Its sites reduce per datapoint like one particle's, so the
    estimators here count it as their first draw.

    :param str name: the guide's name in error messages (default: "the guide").
    """
    check_program(model, "model")
    check_program(guide, "guide")
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    check_sites(model_trace, guide_trace, name)
    return model_trace, guide_trace


def check_sites(model_trace, guide_trace, name=None):
    """A one-line :class:`ValueError` when the model has no observed site (nothing to score:
    the model and guide swapped, say) or the guide lacks one of the model's latent sites
    (which the model would otherwise draw from its prior, unscored by the guide)."""
    if not observed_sites(model_trace):
        raise ValueError(
            "the model has no observed site, so there is no log p(x | z) to score "
            "(are the model and guide swapped?)"
        )
    missing = [s for s in latent_sites(model_trace) if s not in guide_trace.nodes]
    if missing:
        sites = [
            s
            for s, n in guide_trace.nodes.items()
            if n["type"] == "sample" and not site_is_subsample(n)
        ]
        guide = "the guide" if name is None else f"guide {name!r}"
        enumerated = [s for s in missing if model_trace.nodes[s]["infer"].get("enumerate")]
        why = (
            f" ({enumerated} enumerated in the model: these diagnostics draw every latent site "
            "from the guide and do not sum enumerated sites out)"
            if enumerated
            else ""
        )
        raise ValueError(
            f"{guide} has no sample site for the model's latent site(s) {missing}; "
            f"its sample sites: {sites}{why}"
        )


def is_point_mass(fn):
    """Whether the distribution ``fn`` is a point mass (a :class:`~pyro.distributions.Delta`,
    possibly wrapped in ``Independent``): a guide emitting one has no density, hence no
    bound on log p(x), importance ratios or k̂."""
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)


def is_point_guide(model_trace, guide_trace):
    """Whether the guide is a point mass at any of the model's latent sites
    (:func:`is_point_mass`), from the traces of one run."""
    return any(is_point_mass(guide_trace.nodes[s]["fn"]) for s in latent_sites(model_trace))


def max_plate_nesting(model, guide, args, kwargs):
    """The number of plate dims the model and guide use (one trial run, :func:`trial_traces`)."""
    return plate_nesting(*trial_traces(model, guide, args, kwargs))


def particle_validation(validated):
    """Pyro's validation setting for particles: off when the trial run (:func:`trial_traces`)
    has checked the same arguments, as set otherwise. Scoring the particles' sites
    (``log_prob``) under it too keeps torch from checking the data again at each pass."""
    return pyro.validation_enabled(False) if validated else contextlib.nullcontext()


def particle_traces(model, guide, args, kwargs, num_particles, plate_nesting, validated=False):
    """Trace ``num_particles`` guide draws and the model replayed on them.

    :param bool validated: the trial run (:func:`trial_traces`) has checked these
        arguments under Pyro's validation setting; the particles then run without it,
        which would repeat the same checks of the data over K copies (about a third of
        the time of a 10-particle ELBO of an MLP VAE).
    :returns: ``(model_trace, guide_trace)`` whose sites carry a leading
        particle dim at ``-(plate_nesting + 1)``.
    """

    def vectorised(fn):
        def wrapped(*a, **k):
            with pyro.plate("particles", num_particles, dim=-(plate_nesting + 1)):
                return fn(*a, **k)

        return wrapped

    with particle_validation(validated):
        guide_trace = poutine.trace(vectorised(guide)).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(vectorised(model), trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return model_trace, guide_trace


def latent_sites(model_trace):
    """Names of the model's latent sample sites, in the order the model draws them."""
    return [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]


def observed_sites(model_trace):
    """Names of the model's observed sample sites (``pyro.deterministic`` excluded)."""
    return [
        name
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and site["is_observed"]
        and not site["infer"].get("_deterministic", False)
    ]


def observed_scalars(model_trace, batch):
    """Observed scalars per datapoint, for bits/dim: every observed site's values over the
    batch's ``batch`` datapoints, so that a datapoint of several images (an episode of T)
    counts all of them, as its log-likelihood does.

    :param model_trace: a trace of the model on a batch of ``batch`` datapoints.
    :param int batch: B.
    """
    return (
        sum(model_trace.nodes[name]["value"].numel() for name in observed_sites(model_trace))
        // batch
    )


def masked(term, site):
    """A site's log-density (or KL) term with the site's mask applied, as Pyro's ELBOs apply
    it: zero where :func:`~pyro.poutine.mask` (or ``obs_mask``) masks the site out, e.g. the
    missing entries of a datapoint. The site's scale (a data plate's subsampling,
    :func:`~pyro.poutine.scale`) is not: the diagnostics score each datapoint once."""
    mask = site["mask"]
    if isinstance(mask, bool):  # poutine.mask(mask=False) masks every entry
        return term if mask else torch.zeros_like(term)
    return scale_and_mask(term, mask=mask)


def site_log_prob(site):
    """``site["fn"].log_prob(site["value"])``, masked as Pyro masks it (:func:`masked`)."""
    return masked(site["fn"].log_prob(site["value"]), site)


def log_ratio(model_trace, guide_trace, plate_nesting, keep_dims=False):
    """log p(x, z) − log q(z | x) of each particle, from the traces of :func:`particle_traces`.

    The model's observed sites, then its latent sites, are added and the guide's latent sites
    subtracted, each in the order the model draws them.

    :param int plate_nesting: the plate nesting given to :func:`particle_traces`.
    :param bool keep_dims: keep every plate's dim (the sites' log-densities summed as they
        broadcast, particles left of the plates) instead of reducing each site per datapoint.
    :returns: shape ``(K, B)``, or ``(K, 1)`` when no site depends on the datapoint; with
        ``keep_dims``, the broadcast batch shape of the sites.
    """

    def log_prob(site):
        value = site_log_prob(site)
        return value if keep_dims else per_datapoint(value, site, plate_nesting)

    log_weight = 0.0
    for name in observed_sites(model_trace) + latent_sites(model_trace):
        log_weight = log_weight + log_prob(model_trace.nodes[name])
    for name in latent_sites(model_trace):
        log_weight = log_weight - log_prob(guide_trace.nodes[name])
    return log_weight
