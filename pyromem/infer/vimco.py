"""VIMCO: the multi-sample bound with leave-one-out baselines for non-reparameterised sites."""

import math

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.elbo import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import get_dependent_plate_dims
from pyro.util import warn_if_nan

BASELINES = ("geometric", "arithmetic")


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

    Datapoints are never pooled: the log-weights keep the dims of every plate
    that encloses all sample sites of the model and guide (typically
    ``pyro.plate("data", ...)``), sum over the other plates, and take the
    log-sum-exp over particles separately for each datapoint. The subsampling
    scale of the data plate is applied outside the log-sum-exp, so that a batch
    of B out of N datapoints gives an unbiased estimate of N/B times the bound
    of the batch; it must therefore be the same at every sample site.

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
        if isinstance(num_particles, bool) or not isinstance(num_particles, int):
            raise TypeError(f"num_particles: expected an int, got {type(num_particles).__name__}")
        if num_particles < 2:
            raise ValueError(
                f"num_particles: VIMCO needs K >= 2 particles for its leave-one-out "
                f"baseline, got {num_particles}"
            )
        if baseline not in BASELINES:
            raise ValueError(f"baseline: expected one of {BASELINES}, got {baseline!r}")
        self.baseline = baseline
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
            retain_graph=retain_graph,
        )

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, guide, args, kwargs
        )
        for name, site in guide_trace.nodes.items():
            if site["type"] == "sample" and site["infer"].get("enumerate"):
                raise ValueError(
                    f"VIMCO samples every guide site, but site {name!r} asks for "
                    f"enumerate={site['infer']['enumerate']!r}; use TraceEnum_ELBO to "
                    "enumerate it, or drop its infer={'enumerate': ...}"
                )
        return model_trace, guide_trace

    def _log_weights(self, model, guide, args, kwargs):
        """The log-weights, the score-function terms and the subsampling scale.

        :returns: ``(log_weight, score, scale)``: ``log_weight`` and ``score`` have
            ``max_plate_nesting`` dims with particles at dim 0 and the datapoints'
            plates at their own dims (other plates summed out); ``score`` is the
            sum of log q over non-reparameterised guide sites (0 if there is none);
            ``scale`` is the sites' common subsampling scale.
        """
        (model_trace, guide_trace), *_ = self._get_traces(model, guide, args, kwargs)
        sites = [
            site
            for trace in (model_trace, guide_trace)
            for site in trace.nodes.values()
            if site["type"] == "sample"
        ]
        rank = self.max_plate_nesting
        sum_dims = get_dependent_plate_dims(sites)

        def per_datapoint(site, value):
            value = scale_and_mask(value, mask=site["mask"])
            value = value.reshape((1,) * (rank - value.dim()) + value.shape)
            return value.sum(sum_dims, keepdim=True) if sum_dims else value

        scale, scale_site = None, None
        log_weight, score = 0.0, 0.0
        for trace, sign, role in ((model_trace, 1.0, "model"), (guide_trace, -1.0, "guide")):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if scale_site is None:
                    scale, scale_site = site["scale"], f"{role} site {name!r}"
                elif not _same_scale(site["scale"], scale):
                    raise ValueError(
                        "VIMCO applies the subsampling scale outside the log-sum-exp, so every "
                        f"sample site needs the same scale; {scale_site} has {scale} and "
                        f"{role} site {name!r} has {site['scale']}"
                    )
                log_prob = per_datapoint(site, site["unscaled_log_prob"])
                log_weight = log_weight + sign * log_prob
                if sign < 0 and not is_identically_zero(site["score_parts"].score_function):
                    if not is_identically_zero(site["score_parts"].entropy_term):
                        raise NotImplementedError(
                            f"VIMCO does not support the partially reparameterised site {name!r}"
                        )
                    score = score + log_prob
        if not isinstance(log_weight, torch.Tensor):
            raise ValueError("VIMCO found no sample sites in the model and guide")
        return log_weight.expand(self.num_particles, *log_weight.shape[1:]), score, scale

    def _leave_one_out(self, log_weight):
        """L_{-k} for each particle k (particles at dim 0), without gradients."""
        k = self.num_particles
        others = log_weight.unsqueeze(0).expand(k, *log_weight.shape).clone()
        diagonal = torch.arange(k, device=log_weight.device)
        if self.baseline == "geometric":
            others[diagonal, diagonal] = (log_weight.sum(0, keepdim=True) - log_weight) / (k - 1)
            return torch.logsumexp(others, 1) - math.log(k)
        others[diagonal, diagonal] = -math.inf
        return torch.logsumexp(others, 1) - math.log(k - 1)

    def _bound(self, model, guide, args, kwargs):
        log_weight, score, scale = self._log_weights(model, guide, args, kwargs)
        bound = torch.logsumexp(log_weight, 0) - math.log(self.num_particles)
        surrogate = bound
        if isinstance(score, torch.Tensor) and score.requires_grad:
            with torch.no_grad():
                learning_signal = bound - self._leave_one_out(log_weight)
            surrogate = surrogate + (learning_signal * (score - score.detach())).sum(0)
        return (scale * bound).sum(), (scale * surrogate).sum()

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


def _same_scale(a, b):
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    return a == b
