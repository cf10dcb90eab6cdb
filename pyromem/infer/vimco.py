"""VIMCO: the multi-sample bound with leave-one-out baselines for non-reparameterised sites."""

import math

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.util import warn_if_nan

from pyromem.checks import as_int

BASELINES = ("geometric", "arithmetic")
PARTICLE_PLATE = "num_particles_vectorized"  # the plate of ELBO._vectorized_num_particles
# what torch says when a tensor with a particle dim drives Python control flow
CONTROL_FLOW_ERRORS = (
    "Boolean value of Tensor with more than one value is ambiguous",
    "cannot be converted to Scalar",
    "only one element tensors can be converted to Python scalars",
)


class VIMCO(ELBO):
    r"""
    Variational inference for Monte Carlo objectives (reference [1]), the
    estimator that Variational Memory Addressing trains its discrete address
    with (reference [2], eq. 7-8).

    For each datapoint, K particles :math:`(a_k, z_k) \sim q(a, z | x)` are drawn
    in one vectorised pass and weighted by

    .. math:: l_k = \log p(x, a_k, z_k) - \log q(a_k, z_k | x).

    The objective is the K-sample importance-weighted bound (reference [3])

    .. math:: \mathcal{L} = \log \frac{1}{K} \sum_k e^{l_k} \le \log p(x),

    and the gradient is that of the surrogate

    .. math:: \mathcal{L} + \sum_k \big[\mathcal{L} - \mathcal{L}_{-k}\big]_\perp
              \log q(a_k | x),

    where :math:`[\cdot]_\perp` stops gradients, :math:`a_k` stands for every
    non-reparameterised guide site of particle k, and reparameterised sites
    (such as :math:`z_k`) are differentiated through their samples as in the
    IWAE. The leave-one-out bound :math:`\mathcal{L}_{-k}` replaces :math:`l_k`
    by the mean of the other :math:`l_j` (the geometric mean of their weights,
    reference [1] eq. 10). It does not depend on particle k, so the estimator is
    unbiased. With ``baseline="arithmetic"`` it replaces :math:`e^{l_k}` by the
    arithmetic mean of the other weights instead, which gives
    :math:`\mathcal{L}_{-k} = \log \frac{1}{K-1} \sum_{j \ne k} e^{l_j}`, the
    form written in reference [2] eq. 8.

    **Blocks and cells.** A particle's log-weight must hold every term that its
    latent values can change; terms they cannot change may be bounded apart.
    Two sites share a log-weight when one is latent (sampled by the guide) and
    the other may depend on it. Pyro's plate semantics say which may: a site may
    depend on any site outside its plates, sites at different indices of a plate
    are independent given the sites outside it, and, as for every Pyro ELBO under
    subsampling, a site outside a subsampled plate does not depend on the values
    inside it (only the batch's exist). The sites that share log-weights form
    *blocks*. A block's log-weights keep the dims of the plates that enclose all
    of its sites (its *cells*: typically the datapoints of
    ``pyro.plate("data", ...)``), sum over its other plates, and take the
    log-sum-exp over particles separately in each cell. Blocks and cells are
    independent in the model and in the guide, so the sum of their bounds is a
    lower bound on :math:`\log p(x)`, never looser than one log-sum-exp over the
    whole program.

    **Scales.** A site's scale is the product of its plates' subsampling factors
    :math:`N/B` and of any :func:`~pyro.poutine.scale` around it. The factor of
    the subsampled plates that enclose a block multiplies the block's bound of
    each cell outside the log-sum-exp, so that B out of N cells give an unbiased
    estimate of the sum over all N. Any other scale :math:`\beta_s` (a tempered
    or weighted likelihood, per-datapoint weights) is part of the density being
    bounded, so it multiplies the site's log-density inside each particle's
    log-weight, :math:`l_k = \sum_s \beta_s \log p_s - \sum_t \beta_t \log q_t`;
    this is exact. The score-function terms use the unscaled :math:`\log q`, the
    density the particles are drawn from.

    **Subsampling that has a multi-sample treatment**, and is handled:

    - a subsampled plate that encloses every site of its block (the data plate);
    - plates subsampled independently of each other, with no latent site outside
      both: each is the cell plate of its own block;
    - a subsampled plate nested in the data plate, when no latent site of the
      datapoint lies outside it: it is a second cell plate of the block, whose
      bound is scaled by :math:`N_i N_j / (B_i B_j)`; sites of the datapoint that
      are observed and outside it form a block of their own.

    **Refused**, with a :class:`ValueError` naming the latent site and the plate:
    a latent site outside a subsampled plate whose sites may depend on it (a
    global latent outside the data plate, a per-datapoint latent outside a
    subsampled plate of pixels, crossed subsampled plates that each hold
    latents). There the particle's log-weight holds a sum over every index of
    the plate inside the exponential, and an unbiased estimate of that sum from a
    subsample, put inside the log-mean-exp, gives neither an unbiased estimate of
    the bound nor a bound (Jensen's inequality runs the wrong way for
    :math:`\exp`). Subsample a plate that encloses the latent, or none.

    The K particles are drawn in one vectorised pass (an outermost
    :func:`~pyro.plate` of size K), so every sampled value has a particle dim:
    a model or guide that branches on a sampled value in Python (``if z > 0``,
    ``z.item()``) is refused with an error that says so; write the branch with
    :func:`torch.where` or a mask.

    The leave-one-out bounds of all K particles cost :math:`O(K)` memory and time
    per cell: the sum of the other weights is the total less the particle's own
    weight, taken relative to the largest weight, except for the largest weight
    itself, whose others are summed directly (a log-difference there would lose
    every digit when that weight dominates).

    :meth:`differentiable_loss` makes ``VIMCO()(model, guide)`` an
    :class:`~pyro.infer.elbo.ELBOModule` that torch optimisers, Lightning and
    DDP train; its value is :math:`-\mathcal{L}` summed over datapoints, like
    :meth:`loss`.

    :param int num_particles: K, at least 2 (the leave-one-out baseline needs another particle).
    :param str baseline: ``"geometric"`` (reference [1]) or ``"arithmetic"`` (reference [2] eq. 8).
    :param int max_plate_nesting: bound on the number of nested :func:`pyro.plate`
        contexts; guessed from one run of the model and guide if not given.
    :param bool retain_graph: passed to ``backward`` by :meth:`loss_and_grads`.

    References

    [1] `Variational inference for Monte Carlo objectives`,
        Andriy Mnih, Danilo J. Rezende (ICML 2016)

    [2] `Variational Memory Addressing in Generative Models`,
        Jörg Bornschein, Andriy Mnih, Daniel Zoran, Danilo J. Rezende (NeurIPS 2017)

    [3] `Importance Weighted Autoencoders`,
        Yuri Burda, Roger Grosse, Ruslan Salakhutdinov (ICLR 2016)
    """

    def __init__(
        self,
        num_particles=4,
        baseline="geometric",
        max_plate_nesting=float("inf"),
        retain_graph=None,
    ):
        as_int(num_particles, "num_particles", error=TypeError, form="expected")
        if num_particles < 2:
            raise ValueError(
                f"num_particles: VIMCO needs K >= 2 particles for its leave-one-out "
                f"baseline, got {num_particles}"
            )
        if baseline not in BASELINES:
            raise ValueError(f"baseline: expected one of {BASELINES}, got {baseline!r}")
        if max_plate_nesting != float("inf"):
            as_int(max_plate_nesting, "max_plate_nesting", 0, form="expected")
        self.baseline = baseline
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
            retain_graph=retain_graph,
        )

    def _get_trace(self, model, guide, args, kwargs):
        try:
            model_trace, guide_trace = get_importance_trace(
                "flat", self.max_plate_nesting, model, guide, args, kwargs
            )
        except (RuntimeError, ValueError) as error:
            if not any(message in str(error) for message in CONTROL_FLOW_ERRORS):
                raise
            raise ValueError(
                f"VIMCO vectorises its {self.num_particles} particles (an outermost plate at "
                f"dim {-self.max_plate_nesting}), so every sampled value carries a particle "
                "dim and cannot drive Python control flow (if/while on it, .item(), float()); "
                "write the branch with torch.where or a mask (torch said: "
                f"{str(error).splitlines()[0]})"
            ) from error
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and site["infer"].get("enumerate"):
                raise ValueError(
                    f"VIMCO samples every guide site, but site {name!r} asks for "
                    f"enumerate={site['infer']['enumerate']!r}; use TraceEnum_ELBO to "
                    "enumerate it, or drop its infer={'enumerate': ...}"
                )
        return model_trace, guide_trace

    def _log_weights(self, model, guide, args, kwargs):
        """The log-weights, score-function terms and subsampling scale of each block.

        :returns: a list with one ``(log_weight, score, scale)`` per block (see the
            class docstring): ``log_weight`` and ``score`` have ``max_plate_nesting``
            dims, particles at dim 0 and the block's cell plates at their own dims
            (its other plates summed out); ``score`` is the sum of the unscaled
            log q over the block's non-reparameterised guide sites (0 if none);
            ``scale`` is the subsampling factor of the block's cell plates.
        """
        (model_trace, guide_trace), *_ = self._get_traces(model, guide, args, kwargs)
        sites = [
            _Site(name, role, site)
            for role, trace in (("model", model_trace), ("guide", guide_trace))
            for name, site in trace.nodes.items()
            if site["type"] == "sample"
        ]
        rank = self.max_plate_nesting
        blocks = []
        for block in _blocks(sites):
            cells = set.intersection(*(set(site.frames) for site in block))
            _check_subsampling(block, cells)
            frames = [block[0].frames[name] for name in cells]
            keep = {-rank} | {frame.dim for frame in frames if frame.vectorized}
            sum_dims = [dim for dim in range(-rank, 0) if dim not in keep]
            scale = _subsample_factor(frames)
            log_weight, score = 0.0, 0.0
            for site in block:
                # the plates' subsampling factor leaves the site's scale; the rest stays inside
                inner_scale = site.site["scale"] / scale
                value = site.site["unscaled_log_prob"]
                value = value.reshape((1,) * (rank - value.dim()) + value.shape)
                weight = scale_and_mask(value, inner_scale, site.site["mask"])
                weight = weight.sum(sum_dims, keepdim=True) if sum_dims else weight
                if site.role == "model":
                    log_weight = log_weight + weight
                    continue
                log_weight = log_weight - weight
                score_parts = site.site["score_parts"]
                if not is_identically_zero(score_parts.score_function):
                    if not is_identically_zero(score_parts.entropy_term):
                        raise NotImplementedError(
                            "VIMCO does not support the partially reparameterised site "
                            f"{site.name!r}"
                        )
                    log_q = scale_and_mask(value, mask=site.site["mask"])
                    score = score + (log_q.sum(sum_dims, keepdim=True) if sum_dims else log_q)
            blocks.append(
                (log_weight.expand(self.num_particles, *log_weight.shape[1:]), score, scale)
            )
        return blocks

    def _leave_one_out(self, log_weight):
        """L_{-k} for each particle k (particles at dim 0), without gradients.

        O(K) per cell: the log-sum-exp of the other weights is the total less the
        particle's own weight, relative to the largest weight m (so the difference
        keeps the largest weight, at least 1, unless it is the particle's own); for
        the particle with the largest weight, the others are summed directly.
        """
        k = self.num_particles
        peak, top = log_weight.max(0, keepdim=True)
        shift = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        weights = (log_weight - shift).exp()
        others = (weights.sum(0, keepdim=True) - weights).log() + shift
        without_top = log_weight.scatter(0, top, -math.inf).logsumexp(0, keepdim=True)
        others = others.scatter(0, top, without_top)
        if self.baseline == "geometric":
            # the mean of the others' log-weights, -inf if one of them is (a weight of zero)
            zero = log_weight == -math.inf
            finite = log_weight.masked_fill(zero, 0.0)
            mean_of_others = (finite.sum(0, keepdim=True) - finite) / (k - 1)
            mean_of_others = mean_of_others.masked_fill(
                zero.sum(0, keepdim=True) > zero.int(), -math.inf
            )
            return torch.logaddexp(others, mean_of_others) - math.log(k)
        return others - math.log(k - 1)

    def _bound(self, model, guide, args, kwargs):
        # an empty program bounds log 1 = 0, as Pyro's ELBOs return
        bound_sum = surrogate_sum = torch.zeros(())
        for log_weight, score, scale in self._log_weights(model, guide, args, kwargs):
            bound = torch.logsumexp(log_weight, 0) - math.log(self.num_particles)
            surrogate = bound
            if isinstance(score, torch.Tensor) and score.requires_grad:
                with torch.no_grad():
                    learning_signal = bound - self._leave_one_out(log_weight)
                surrogate = surrogate + (learning_signal * (score - score.detach())).sum(0)
            bound_sum = (scale * bound).sum() + bound_sum.to(bound.device)
            surrogate_sum = (scale * surrogate).sum() + surrogate_sum.to(bound.device)
        return bound_sum, surrogate_sum

    @torch.no_grad()
    def loss(self, model, guide, *args, **kwargs):
        """
        :returns: −L, the negative K-sample bound summed over the datapoints
            (scaled by the subsampling scale).
        :rtype: float
        """
        bound, _ = self._bound(model, guide, args, kwargs)
        loss = -bound.item()
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """
        :returns: a tensor whose value is :meth:`loss` and whose gradient is
            minus the VIMCO gradient estimate.
        :rtype: torch.Tensor
        """
        _, surrogate = self._bound(model, guide, args, kwargs)
        loss = -surrogate
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs):
        """
        Computes :meth:`loss` and accumulates the VIMCO gradient estimate into
        the ``.grad`` of the parameters.

        :rtype: float
        """
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.item()


class _Site:
    """A sample site of the model or the guide, with the facts that place it in a block."""

    def __init__(self, name, role, site):
        self.name, self.role, self.site = name, role, site
        # plates by name: a sequential plate's counter differs between model and guide when
        # they iterate in different orders. VIMCO's own particle plate is not a program's plate.
        self.frames = {
            frame.name: frame for frame in site["cond_indep_stack"] if frame.name != PARTICLE_PLATE
        }
        self.subsampled = {name for name, frame in self.frames.items() if _is_subsampled(frame)}
        self.latent = role == "guide" or not site["is_observed"]

    def __str__(self):
        return f"{self.role} site {self.name!r}"


def _is_subsampled(frame):
    return frame.full_size is not None and float(frame.full_size) != float(frame.size)


def _subsample_factor(frames):
    factor = 1.0
    for frame in frames:
        if _is_subsampled(frame):
            factor = factor * frame.full_size / frame.size
    return factor


def _may_depend(site, latent):
    """Whether ``site``'s density may change with the value of ``latent``, a site of the
    same program (the model's densities see the guide's values through their namesakes)."""
    if not latent.latent or site.role != latent.role:
        return False
    # sites at different iterations of a sequential plate are independent
    for name, frame in site.frames.items():
        if name in latent.frames and frame.counter != latent.frames[name].counter:
            return False
    # nothing outside a subsampled plate depends on the values inside it
    return latent.subsampled <= site.frames.keys()


def _blocks(sites):
    """Partitions the sites into blocks: the smallest sets closed under sharing a name
    (a site of the model and of the guide) and :func:`_may_depend` either way."""
    parent = list(range(len(sites)))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, site in enumerate(sites):
        for j in range(i):
            other = sites[j]
            if site.name == other.name or _may_depend(site, other) or _may_depend(other, site):
                parent[root(i)] = root(j)
    blocks = {}
    for i, site in enumerate(sites):
        blocks.setdefault(root(i), []).append(site)
    return list(blocks.values())


def _check_subsampling(block, cells):
    """Refuses a block with a subsampled plate that does not enclose all of its sites."""
    for plate in sorted(set().union(*(site.subsampled for site in block)) - cells):
        inside = [site for site in block if plate in site.frames]
        outside = [site for site in block if plate not in site.frames]
        # the block holds sites on both sides because one inside may depend on a latent outside
        site, latent = next(
            ((s, t) for s in inside for t in outside if _may_depend(s, t)),
            (inside[0], outside[0]),
        )
        raise ValueError(
            f"VIMCO cannot subsample plate {plate!r} here: latent {latent} lies outside it "
            f"and {site} inside it may depend on it, so each particle's log-weight holds a "
            f"sum over every index of {plate!r} inside the log-sum-exp, and a subsample of "
            f"that sum gives a biased bound; put {latent.name!r} inside {plate!r}, or do not "
            f"subsample {plate!r} (see the VIMCO docstring)"
        )
