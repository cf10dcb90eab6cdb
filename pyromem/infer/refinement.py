r"""Iterative refinement of an amortised guide's point estimate, as a Pyro guide.

An amortised guide :math:`q_\phi(z \mid x)` answers in one forward pass; iterative inference
improves its answer for the model at hand (Marino 2019, §2; Annabi et al. 2022, §4): start
from the guide's mean :math:`\hat z_0 = \mathbb{E}_{q_\phi}[z]` and apply ``num_steps`` updates

.. math::

    \hat z_{t+1} = \mathrm{step}(\hat z_t, x),

each a descent step on the variational free energy :math:`F(x, \hat z) = -\log p(x, \hat z) + C`
of a point-mass posterior (eq. 4 and eq. 13-18 of Annabi et al.). The guide then emits
:math:`q(z \mid x) = \delta_{\hat z_T}(z)`, so that any ELBO of Pyro computes
:math:`-\log p(x, \hat z_T)` for it (the entropy of a point mass is taken as 0).

Refinement changes neither the model's nor the guide's parameters nor their ``.grad``: every
gradient it takes is :func:`torch.autograd.grad` with respect to :math:`\hat z` alone, and
:math:`\hat z_T` enters the loss as a constant, so an SVI step with a refinement guide trains
the model's parameters at the refined point and leaves the amortised guide alone.

References:

[1] Annabi, Pitti, Quoy. "On the Relationship Between Variational Inference and Auto-Associative
    Memory." NeurIPS 2022.
[2] Marino. "Predictive Coding, Variational Autoencoders, and Biological Connections." 2019.
"""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.poutine.runtime import NonlocalExit

from pyromem.checks import as_int, as_real, check_program
from pyromem.models.plates import DATA_PLATE, data_plate


class Refinement:
    """A Pyro guide that refines an amortised guide's estimate of one latent site.

    Subclasses implement :meth:`step`. The guide is called as ``guide(x, *args, **kwargs)``
    with the model's arguments, and emits ``pyro.sample(site, Delta(z_hat).to_event(1))`` in
    ``data_plate(x, num_data)``, ``num_data`` being the size of the model's data plate at
    ``site`` (so it is right however ``num_data`` was passed, by keyword or by position).

    The model must draw ``site`` inside ``pyro.plate("data", ...)``
    (:func:`~pyromem.models.plates.data_plate`), one latent of event shape ``(d,)`` per
    datapoint: every refinement scores each datapoint on its own, and a site outside that
    plate, or a guide whose width or batch is not the model's, is refused with a
    ``ValueError`` before the first step. The refinements that score the likelihood
    (:class:`~pyromem.infer.MAPRefinement`, :class:`~pyromem.infer.GaussianRefinement`)
    also refuse an observed site outside that plate, at its first evaluation, before any
    update (:func:`check_observed_site`).

    :param callable model: the Pyro model, called as ``model(x, *args, **kwargs)``.
    :param callable guide: an amortised guide of the model with a sample site ``site`` whose
        distribution has a ``mean`` of shape ``(B, d)``.
    :param int num_steps: T, the number of refinement steps (0 returns the guide's mean).
    :param str site: the name of the latent site refined.
    """

    def __init__(self, model, guide, num_steps=10, site="z"):
        check_program(model, "model")
        check_program(guide, "guide")
        as_int(num_steps, "num_steps", 0)
        if not isinstance(site, str):
            raise TypeError(f"site must be a str, got {type(site).__name__}")
        self.model = model
        self.guide = guide
        self.num_steps = num_steps
        self.site = site
        # the size of the model's data plate, read by check_site in the refinement of the
        # current call, for the plate __call__ emits in
        self._num_data = None

    def amortized(self, x, *args, **kwargs):
        """The amortised guide's distribution at ``site``, batch shape ``(B,)``, event ``(d,)``."""
        with poutine.block():
            trace = poutine.trace(self.guide).get_trace(x, *args, **kwargs)
        node = trace.nodes.get(self.site)
        if node is None or node["type"] != "sample":
            raise ValueError(
                f"guide must have a sample site {self.site!r} to start refinement from, "
                f"got sites {[n for n, s in trace.nodes.items() if s['type'] == 'sample']}"
            )
        return node["fn"]

    def initial(self, x, *args, **kwargs):
        r""":math:`\hat z_0`, the amortised guide's mean of ``site``, shape ``(B, d)``,
        checked against the model's site (:meth:`check_site`)."""
        z = self.amortized(x, *args, **kwargs).mean.detach()
        self.check_site(self.model_site(x, *args, **kwargs), z)
        return z

    def model_site(self, x, *args, **kwargs):
        """The model's sample site ``site``, as Pyro's message: its ``fn``, ``is_observed`` and
        ``cond_indep_stack`` (the plates around it).

        The model runs only up to the site: a nonlocal exit there spares the decoder.
        Latent sites the model draws before ``site``, if any, are drawn from their priors.
        """
        escape = poutine.escape(self.model, escape_fn=lambda msg: msg["name"] == self.site)
        with poutine.block():
            try:
                escape(x, *args, **kwargs)
            except NonlocalExit as exit_:
                exit_.reset_stack()
                return exit_.site
        raise ValueError(f"model must have a sample site {self.site!r}, but it has none")

    def prior(self, x, *args, **kwargs):
        """The model's distribution at ``site`` (batch shape ``(B,)`` in the data plate)."""
        return self.model_site(x, *args, **kwargs)["fn"]

    def check_site(self, site, z):
        r"""Checks that the model's ``site`` (a message of :meth:`model_site`) is a latent
        of event shape ``(d,)`` in the data plate, ``d`` the width of the start
        :math:`\hat z_0` (shape ``(B, d)``), and returns its distribution.

        Refinements score each datapoint on its own (:func:`~pyromem.infer.traces.per_datapoint`):
        in a plate of another name, every datapoint's score would be the whole batch's, and
        the steps silently wrong. The size of the data plate is kept for :meth:`__call__`.

        :raises ValueError: naming the site, and that it is observed, or the plates, the
            widths, the batch shapes (a start not of shape ``(B, d)``) or the start's NaN or
            infinite values.
        """
        name = self.site
        if site["is_observed"]:
            raise ValueError(f"model's site {name!r} is observed; refine a latent site")
        frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
        if not frames:
            plates = [f.name for f in site["cond_indep_stack"]]
            raise ValueError(
                f"model's site {name!r} must lie in pyro.plate({DATA_PLATE!r}, ...) "
                f"(pyromem.models.plates.data_plate), got plates {plates}"
            )
        event_shape = tuple(site["fn"].event_shape)
        if z.dim() == 0 or event_shape != tuple(z.shape[-1:]):
            raise ValueError(
                f"the guide's site {name!r} must have the model's event shape {event_shape} per "
                f"datapoint, got a guide mean of shape {tuple(z.shape)}: the guide does not "
                "match the model"
            )
        # one row per datapoint of the model's batch: a guide drawing z outside its data plate
        # (one row for the batch) would fail deep in the first step's broadcasting
        batch_shape = tuple(site["fn"].batch_shape)
        if tuple(z.shape[:-1]) != batch_shape:
            raise ValueError(
                f"the guide's site {name!r} must have the model's batch shape {batch_shape} "
                f"(one row per datapoint of x), got a guide mean of shape {tuple(z.shape)}: "
                "the guide does not match the model or x"
            )
        if not torch.isfinite(z).all():
            raise ValueError(
                f"the guide's site {name!r} has a mean with NaN or infinite values: the "
                "amortised guide has diverged, and there is nothing to refine from"
            )
        frame = frames[0]
        self._num_data = frame.size if frame.full_size is None else frame.full_size
        return site["fn"]

    def step(self, z, x, *args, **kwargs):
        r"""One update :math:`\hat z_t \to \hat z_{t+1}`, both of shape ``(B, d)``."""
        raise NotImplementedError

    def refine(self, x, *args, trajectory=False, **kwargs):
        r""":math:`\hat z_T` after ``num_steps`` steps from :math:`\hat z_0`, shape ``(B, d)``.

        :param bool trajectory: also return the list :math:`[\hat z_0, \dots, \hat z_T]`.
        """
        with torch.no_grad():
            z = self.initial(x, *args, **kwargs)
            path = [z]
            for _ in range(self.num_steps):
                z = self.step(z, x, *args, **kwargs).detach()
                path.append(z)
        return (z, path) if trajectory else z

    def distribution(self, state):
        r"""The guide's distribution at ``site`` given the refined state: here
        :math:`\delta_{\hat z_T}`; refinements of a whole distribution override it."""
        return dist.Delta(state).to_event(1)

    def __call__(self, x, *args, **kwargs):
        if torch.jit.is_tracing():
            # the steps run the model and the amortised guide hidden from Pyro's traces, with
            # loops whose length depends on the data: a trace would record one path
            raise NotImplementedError(
                f"{type(self).__name__} cannot be compiled by JitTrace_ELBO or the other Jit* "
                "ELBOs (its steps depend on the data): use Trace_ELBO, TraceMeanField_ELBO "
                "or VIMCO"
            )
        self._num_data = None
        state = self.refine(x, *args, **kwargs)
        # the model's data plate, as check_site read it; a subclass that never checks the
        # site falls back on the keyword argument
        num_data = self._num_data if self._num_data is not None else kwargs.get("num_data")
        with data_plate(x, num_data):
            return pyro.sample(self.site, self.distribution(state))


def check_observed_site(node):
    """Raise a one-line ``ValueError`` unless the model's observed site ``node`` (a trace's
    message) lies in ``pyro.plate("data", ...)``.

    A refinement scores each datapoint on its own (:func:`~pyromem.infer.traces.per_datapoint`);
    an observed site outside the data plate would add the whole batch's log-likelihood to every
    datapoint's objective, so each step would move on B times the likelihood's gradient and
    every datapoint's step be accepted or refused on the others' values, silently.
    """
    if node["infer"].get("_deterministic", False):  # pyro.deterministic: no density to score
        return
    if not any(frame.name == DATA_PLATE for frame in node["cond_indep_stack"]):
        plates = [frame.name for frame in node["cond_indep_stack"]]
        raise ValueError(
            f"model's observed site {node['name']!r} must lie in pyro.plate({DATA_PLATE!r}, ...) "
            f"(pyromem.models.plates.data_plate), got plates {plates}: a refinement scores each "
            "datapoint on its own"
        )


def check_rate(value, name, allow_none=False):
    """``value`` as a positive finite float (or None where allowed), else a ValueError naming
    it: a rate, a step size or a scale of a refinement."""
    return as_real(value, name, positive=True, allow_none=allow_none)


def backtracking_ascent(objective, params, grads, value, lr, max_backtracks, takes_rows=False):
    r"""One gradient-ascent step per datapoint that never decreases ``objective``.

    Each datapoint's candidate is :math:`\theta + \eta\, g`; the rate :math:`\eta` (``lr`` at
    first) of a datapoint whose objective would fall below ``value`` is halved, up to
    ``max_backtracks`` times, and a datapoint that finds no ascent keeps its parameters. A
    datapoint stops searching at the first rate that ascends. The candidates stay in the
    autograd graph of ``params`` and ``grads`` (for a refinement trained through), while
    ``objective`` is evaluated on detached copies without a graph.

    With ``takes_rows`` the objective is evaluated only on the datapoints still searching:
    it is called as ``objective(rows, *candidates)``, ``rows`` the indices of those datapoints
    (a long tensor of shape ``(r,)``) and each candidate of shape ``(r, d)``, and returns shape
    ``(r,)``. Any value below ``value[rows]`` rules a candidate out, so an objective may return
    an upper bound of its value where that bound alone does so. Otherwise it is called as
    ``objective(*candidates)`` on all datapoints, shape ``(B, d)`` each, and returns shape
    ``(B,)`` (a datapoint whose search has ended is evaluated again at its accepted candidate,
    and its result ignored): for objectives that cannot be evaluated on a subset, such as a
    trace of the model on the whole batch.

    :param callable objective: the value per datapoint (see above).
    :param tuple params: the current parameters, each of shape ``(B, d)``.
    :param tuple grads: the objective's gradient with respect to each of ``params``.
    :param torch.Tensor value: the objective at ``params``, shape ``(B,)``.
    :param float lr: the full step's rate.
    :param int max_backtracks: how many times a datapoint's rate may be halved.
    :param bool takes_rows: whether ``objective`` takes the rows to evaluate.
    :returns: the new parameters, a tuple like ``params``.
    """
    rate = torch.full_like(value, lr).unsqueeze(-1)
    accepted = torch.zeros(value.shape, dtype=torch.bool, device=value.device)
    searching = torch.arange(len(value), device=value.device)
    with torch.no_grad():
        fixed = tuple(p.detach() for p in params)
        directions = tuple(g.detach() for g in grads)
        for _ in range(max_backtracks + 1):
            if takes_rows:
                step = rate[searching]
                candidate = tuple(
                    p[searching] + step * g[searching]
                    for p, g in zip(fixed, directions, strict=True)
                )
                ascent = objective(searching, *candidate) >= value[searching]
            else:
                candidate = tuple(p + rate * g for p, g in zip(fixed, directions, strict=True))
                ascent = (objective(*candidate) >= value)[searching]
            accepted[searching[ascent]] = True
            searching = searching[~ascent]
            if len(searching) == 0:
                break
            rate[searching] = rate[searching] / 2
    # the accepted rates, now in the graph of params and grads
    accepted = accepted.unsqueeze(-1)
    return tuple(torch.where(accepted, p + rate * g, p) for p, g in zip(params, grads, strict=True))
