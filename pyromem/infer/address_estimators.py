r"""The estimators of a discrete address's gradient, one training objective per choice.

A memory model with a discrete address :math:`a` over :math:`|M|` slots (such as
:class:`~pyromem.models.VMA`) can be trained by (Bornschein et al. 2017, §2.1 and §4.2):

- ``"enum"``: exact enumeration of :math:`a` in the guide, ``TraceEnum_ELBO``
  (:math:`|M|` decoder passes per datapoint);
- ``"vimco"``: the K-sample bound with leave-one-out baselines (:class:`~pyromem.infer.VIMCO`);
- ``"rws"``: reweighted wake-sleep (:class:`ReweightedWakeSleep` here, per datapoint);
- ``"nvil"``: the score function of the one-sample ELBO with a learned, data-dependent
  baseline (Mnih & Gregor 2014): :class:`NVIL`, Pyro's ``TraceGraph_ELBO`` (which uses
  the guide site's ``infer={"baseline": {"nn_baseline": ..., "nn_baseline_input": x}}``)
  made differentiable;
- ``"gumbel"``: the Concrete / Gumbel-softmax relaxation (Maddison et al. 2017; Jang et
  al. 2017): the model and guide relax the address themselves and score it by the
  categorical KL (:class:`~pyromem.memory.addressing.ConcreteAddress`), so the objective is
  the reparameterised ELBO with analytic KLs, ``TraceMeanField_ELBO``;
- ``"soft"``: the soft-attention baseline, which has no address (``Trace_ELBO``).

:func:`address_objective` returns the objective of each.
"""

import math

import pyro.infer
import torch
from pyro.distributions.util import scale_and_mask
from pyro.util import warn_if_nan

from pyromem.checks import as_int
from pyromem.infer.traces import per_datapoint
from pyromem.infer.vimco import VIMCO
from pyromem.models.plates import DATA_PLATE

ADDRESS_ESTIMATORS = ("enum", "vimco", "rws", "nvil", "gumbel", "soft")


class ReweightedWakeSleep(pyro.infer.ReweightedWakeSleep):
    r"""Reweighted wake-sleep (reference [1]) with the importance weights of each datapoint
    kept apart, in its wake-wake form (reference [2]).

    Pyro's :class:`~pyro.infer.ReweightedWakeSleep` sums the log-weights of a whole batch
    before normalising them, so the K particles weigh the joint of B datapoints (its
    "mini-batch training is not supported"). Here, for each datapoint, K particles
    :math:`(a_k, z_k) \sim q(a, z | x)` get :math:`l_k = \log p(x, a_k, z_k) - \log q(a_k, z_k | x)`
    and normalised weights :math:`\bar w_k = \mathrm{softmax}_k l_k`; the model's loss is
    minus the K-sample bound (wake-θ), whose gradient takes the draws as data,

    .. math:: -\log \frac{1}{K} \sum_k e^{l_k},

    and the guide's is the wake-φ loss :math:`-\sum_k [\bar w_k]_\perp \log q(a_k, z_k | x)`,
    a self-normalised estimate of the gradient of :math:`\mathrm{KL}(p(a, z | x) \| q(a, z | x))`
    (biased for finite K). The data plate's subsampling scale multiplies both outside the
    normalisation, so it must be the same at every sample site. A site outside the data plate
    (a global latent) is one draw that every datapoint shares: the K weights are then those
    of the whole batch (with a subsampled data plate its scale differs from theirs, and is
    refused). Sleep-φ (``insomnia < 1``),
    which draws x from the model, is not offered.

    :meth:`differentiable_loss` has the value of the wake-θ loss and the gradient of the
    sum of both losses, so ``ReweightedWakeSleep()(model, guide)`` trains model and guide
    together with one torch optimiser, as the training engine does.

    :param int num_particles: K, at least 2.
    :param int max_plate_nesting: bound on the nested plates; guessed if not given.

    References

    [1] `Reweighted Wake-Sleep`, Jörg Bornschein, Yoshua Bengio (ICLR 2015)

    [2] `Revisiting Reweighted Wake-Sleep for Models with Stochastic Control Flow`,
        Tuan Anh Le, Adam R. Kosiorek, N. Siddharth, Yee Whye Teh, Frank Wood (UAI 2019)
    """

    def __init__(self, num_particles=4, max_plate_nesting=float("inf")):
        as_int(num_particles, "num_particles", error=TypeError, form="expected")
        if num_particles < 2:
            raise ValueError(
                "num_particles: reweighted wake-sleep normalises K >= 2 weights, got "
                f"{num_particles}"
            )
        # checked as VIMCO checks it: Pyro would fail inside its plates on the first step
        if max_plate_nesting != float("inf"):
            as_int(max_plate_nesting, "max_plate_nesting", 0, form="expected")
        super().__init__(
            num_particles=num_particles, insomnia=1.0, max_plate_nesting=max_plate_nesting
        )

    def _loss(self, model, guide, args, kwargs):
        (model_trace, guide_trace), *_ = self._get_traces(model, guide, args, kwargs)
        nesting, scale, first, outside = self.max_plate_nesting, None, None, False
        # each role's log-density inside the data plate, (K, B), and outside it, (K, 1)
        parts = {"model": [0.0, 0.0], "guide": [0.0, 0.0]}
        for trace, role in ((model_trace, "model"), (guide_trace, "guide")):
            for name, site in trace.nodes.items():
                if site["type"] != "sample":
                    continue
                if first is None:
                    scale, first = site["scale"], f"{role} site {name!r}"
                elif not torch.equal(torch.as_tensor(site["scale"]), torch.as_tensor(scale)):
                    raise ValueError(
                        "ReweightedWakeSleep applies the subsampling scale outside the "
                        f"normalisation, so every sample site needs the same scale; {first} "
                        f"has {scale} and {role} site {name!r} has {site['scale']}"
                    )
                inside = any(frame.name == DATA_PLATE for frame in site["cond_indep_stack"])
                outside = outside or not inside
                # Pyro counts the particles' plate in max_plate_nesting; a poutine.mask holds
                value = scale_and_mask(site["unscaled_log_prob"], mask=site["mask"])
                value = per_datapoint(value, site, nesting - 1, outside="sum")
                parts[role][0 if inside else 1] += value
        log_p, log_q = (_log_density(*parts[role], outside) for role in parts)
        # a guide without sample sites (the model draws every latent) has log q = 0
        log_q = torch.as_tensor(log_q)
        log_weight = (log_p - log_q.detach()).expand(self.num_particles, -1)
        log_sum = torch.logsumexp(log_weight, 0)
        wake_theta = -(scale * (log_sum - math.log(self.num_particles))).sum()
        weights = (log_weight - log_sum).exp().detach()
        wake_phi = -(scale * (weights * log_q).sum(0)).sum()
        warn_if_nan(wake_theta, "wake theta loss")
        warn_if_nan(wake_phi, "wake phi loss")
        return wake_theta, wake_phi

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """
        :returns: a tensor whose value is the wake-θ loss (minus the K-sample bound, summed
            over datapoints) and whose gradient is that of wake-θ plus wake-φ.
        :rtype: torch.Tensor
        """
        wake_theta, wake_phi = self._loss(model, guide, args, kwargs)
        return wake_theta + (wake_phi - wake_phi.detach())


def _log_density(inside, outside, joint):
    """A trace's log-density per datapoint, ``(K, B)``, from its parts inside the data plate
    ``(K, B)`` and outside it ``(K, 1)``; or, ``joint``, of all datapoints together, ``(K, 1)``:
    a site outside the data plate is one draw that every datapoint shares, so the datapoints'
    weights are one weight, and the site counts once."""
    if joint and isinstance(inside, torch.Tensor):
        inside = inside.sum(-1, keepdim=True)
    return inside + outside


class NVIL(pyro.infer.TraceGraph_ELBO):
    r"""Pyro's ``TraceGraph_ELBO`` with a :meth:`differentiable_loss`, so that torch
    optimisers and the training engine use its score-function estimator with baselines.

    For a non-reparameterised guide site :math:`a` with
    ``infer={"baseline": {"nn_baseline": b, "nn_baseline_input": x}}`` the gradient is that of

    .. math:: \mathcal{L} + [c - b(x)]_\perp \log q(a | x) - (c_\perp - b(x))^2,

    with :math:`c` the ELBO terms downstream of :math:`a` (reference [1]'s learning signal
    and input-dependent baseline, trained by the squared error; the running centring and
    scaling of the signal of reference [1] are left out). The value is minus the ELBO.

    References

    [1] `Neural Variational Inference and Learning in Belief Networks`,
        Andriy Mnih, Karol Gregor (ICML 2014)
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        """
        :returns: a tensor whose value is minus the ELBO and whose gradient is that of the
            surrogate loss (the baselines' squared errors included).
        :rtype: torch.Tensor
        """
        elbo, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        loss = -elbo.detach() + (surrogate - surrogate.detach())
        warn_if_nan(loss, "loss")
        return loss


def address_objective(address, num_particles=4):
    """The training objective of an address estimator (see the module's docstring).

    :param str address: one of :data:`ADDRESS_ESTIMATORS`.
    :param int num_particles: K of ``"vimco"`` and ``"rws"``.
    :returns: a Pyro ELBO with ``differentiable_loss``.
    """
    if address == "enum":
        return pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    if address == "vimco":
        return VIMCO(num_particles=num_particles, max_plate_nesting=1)
    if address == "rws":
        return ReweightedWakeSleep(num_particles=num_particles, max_plate_nesting=1)
    if address == "nvil":
        return NVIL(max_plate_nesting=1)
    if address == "gumbel":
        return pyro.infer.TraceMeanField_ELBO(max_plate_nesting=1)
    if address == "soft":
        return pyro.infer.Trace_ELBO(max_plate_nesting=1)
    raise ValueError(f"address: expected one of {ADDRESS_ESTIMATORS}, got {address!r}")
