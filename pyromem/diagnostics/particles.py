"""Vectorised particle traces of a model/guide pair, reduced per datapoint.

Diagnostics score each datapoint separately, so every latent and observed site
must sit inside the model's ``pyro.plate("data", ...)`` (DESIGN.md, "sites have
stable names"). Particles are drawn in one vectorised pass by an outer
``pyro.plate("particles", K)`` placed left of all the model's plates, as Pyro's
``vectorize_particles=True`` does.
"""

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample

DATA_PLATE = "data"


def max_plate_nesting(model, guide, args, kwargs):
    """The number of plate dims the model and guide use (one trial run)."""
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    dims = [
        -frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    ]
    return max(dims, default=0)


def particle_traces(model, guide, args, kwargs, num_particles, plate_nesting):
    """Trace ``num_particles`` guide draws and the model replayed on them.

    :returns: ``(model_trace, guide_trace)`` whose sites carry a leading
        particle dim at ``-(plate_nesting + 1)``.
    """

    def vectorised(fn):
        def wrapped(*a, **k):
            with pyro.plate("particles", num_particles, dim=-(plate_nesting + 1)):
                return fn(*a, **k)

        return wrapped

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


def per_datapoint(value, site, plate_nesting):
    """Reduce a site's batch-shaped tensor to shape ``(num_particles, batch)``.

    :param torch.Tensor value: a tensor broadcastable to the site's batch shape,
        e.g. ``site["fn"].log_prob(site["value"])``.
    :param dict site: the trace site, whose ``cond_indep_stack`` names the plates.
    :param int plate_nesting: the model's plate nesting, as given to
        :func:`particle_traces`.
    """
    data_frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_frames:
        raise ValueError(
            f"site {site['name']!r} is outside pyro.plate({DATA_PLATE!r}, ...); per-datapoint "
            "diagnostics need every latent and observed site inside the data plate"
        )
    rank = plate_nesting + 1
    value = value.reshape((1,) * (rank - value.dim()) + value.shape)
    data_dim = rank + data_frames[0].dim
    other = [d for d in range(1, rank) if d != data_dim]
    if other:
        value = value.sum(other, keepdim=True)
    return value.reshape(value.shape[0], -1)
