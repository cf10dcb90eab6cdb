"""Reductions of a Pyro trace's sites per datapoint, shared by the guides here and diagnostics.

A pyromem model puts its datapoints in ``pyro.plate(DATA_PLATE, ...)``
(:func:`~pyromem.models.plates.data_plate`); vectorised particles, when there are any, sit left
of every plate of the model, as Pyro's ``vectorize_particles=True`` puts them. The refinement
guides of this package score each datapoint of a batch on its own, and so do the diagnostics
(:mod:`pyromem.diagnostics`), which import these functions from here, the lowest layer that
needs them.
"""

from pyromem.models.plates import DATA_PLATE

OUTSIDE = ("raise", "sum")


def plate_nesting(*traces):
    """The number of plate dims the sample sites of ``traces`` use: the largest ``-dim`` of
    their vectorised plates, 0 when there is none."""
    dims = [
        -frame.dim
        for trace in traces
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.dim is not None
    ]
    return max(dims, default=0)


def per_datapoint(value, site, plate_nesting, outside="raise"):
    """Reduce a site's batch-shaped tensor to shape ``(num_particles, batch)``.

    Every dim but the particles' (dim 0 of the result) and the data plate's is summed out.

    :param torch.Tensor value: a tensor broadcastable to the site's batch shape,
        e.g. ``site["fn"].log_prob(site["value"])``, with its particles (if any) at dim
        ``-(plate_nesting + 1)``; a tensor without them reduces to shape ``(1, batch)``.
    :param dict site: the trace site, whose ``cond_indep_stack`` names the plates.
    :param int plate_nesting: the model's plate nesting (at least that of the site).
    :param str outside: what a site outside ``pyro.plate(DATA_PLATE, ...)`` gives:
        ``"raise"`` a :class:`ValueError` (per-datapoint diagnostics need every site inside),
        ``"sum"`` its sum over every dim but the particles', shape ``(num_particles, 1)``, the
        same for every datapoint (a global site).
    """
    if outside not in OUTSIDE:
        raise ValueError(f"outside must be one of {OUTSIDE}, got {outside!r}")
    data_frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
    if not data_frames and outside == "raise":
        raise ValueError(
            f"site {site['name']!r} is outside pyro.plate({DATA_PLATE!r}, ...); per-datapoint "
            "diagnostics need every latent and observed site inside the data plate"
        )
    rank = plate_nesting + 1
    value = value.reshape((1,) * (rank - value.dim()) + value.shape)
    if not data_frames:
        return value.reshape(value.shape[0], -1).sum(-1, keepdim=True)
    data_dim = value.dim() + data_frames[0].dim
    other = [d for d in range(1, value.dim()) if d != data_dim]
    if other:
        value = value.sum(other, keepdim=True)
    return value.reshape(value.shape[0], -1)
