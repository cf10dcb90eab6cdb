r"""VAE-BP-GMM and VAE-BP-Hopfield: MAP refinement by gradient ascent on the log joint.

Annabi et al. (2022, §4.3, Alg. 2) refine the encoder's :math:`\hat z` by gradient descent of
rate :math:`\lambda` on

.. math::

    \mathcal{L}(x, \hat z) = \|f_\theta(\hat z) - x\|^2 - \gamma \log p(\hat z; M).   \qquad (10)

Here the gradient is taken through the model's own log joint, so any decoder and likelihood
work: each step ascends

.. math::

    J(\hat z) = \log p(x \mid \hat z) + w \log p(\hat z),

with :math:`w` = ``prior_weight``. For a Gaussian likelihood of variance 1/2,
:math:`\log p(x \mid \hat z) = -\|f_\theta(\hat z) - x\|^2 + c`, so :math:`J = -\mathcal{L} + c`
with :math:`\gamma = w`, and a step of rate :math:`\lambda` = ``lr`` is exactly Alg. 2's.
With a Gaussian-mixture memory prior this is VAE-BP-GMM; with Hopfield weights and
:math:`\beta = 1/\sigma^2` the prior term is eq. 46's :math:`\gamma(\tfrac12 \hat z^\top \hat z
- \beta^{-1} \log \sum_k e^{\beta \hat z^\top M_k})` up to the factor :math:`\beta` of the energy
(VAE-BP-Hopfield). For a unit-variance likelihood, :math:`w = 1` and rate :math:`\alpha` give
the free-energy descent of eq. 4, the update of predictive coding (App. C.1, eq. 30).

Monotonicity: a plain gradient step can overshoot, so each step backtracks per datapoint: the
rate of a datapoint whose :math:`J` would decrease is halved, up to ``max_backtracks`` times,
and a datapoint that finds no ascent keeps its :math:`\hat z`. Hence :math:`J` never decreases
along the refinement; where the full step ascends, the step is Alg. 2's.
"""

import numbers

import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from pyromem.checks import as_int, as_real
from pyromem.infer.refinement import (
    Refinement,
    backtracking_ascent,
    check_observed_site,
    check_rate,
)
from pyromem.infer.traces import per_datapoint, plate_nesting

# Deprecated alias, kept for one release: the name is declared in pyromem.models.plates.
from pyromem.models.plates import DATA_PLATE  # noqa: F401


class MAPRefinement(Refinement):
    """Gradient ascent of rate ``lr`` on ``log p(x | z) + prior_weight * log p(z)`` (eq. 10).

    :param model: any pyromem model; ``site`` should be its only latent site (other latent
        sites are drawn afresh from their priors at each evaluation).
    :param guide: its amortised guide.
    :param int num_steps: T.
    :param float lr: λ, the rate of the gradient step.
    :param float prior_weight: γ, the weight of the prior term.
    :param int max_backtracks: how many times a datapoint's rate may be halved in one step.
    :param str site: the refined site.
    """

    def __init__(
        self, model, guide, num_steps=10, lr=0.1, prior_weight=1.0, max_backtracks=20, site="z"
    ):
        super().__init__(model, guide, num_steps=num_steps, site=site)
        self.lr = check_rate(lr, "lr")
        if isinstance(prior_weight, bool) or not isinstance(prior_weight, numbers.Real):
            raise TypeError(f"prior_weight must be a float, got {prior_weight!r}")
        self.prior_weight = as_real(prior_weight, "prior_weight")
        as_int(max_backtracks, "max_backtracks", 0, error=TypeError, form="split")
        self.max_backtracks = max_backtracks

    def log_joint(self, z, x, *args, **kwargs):
        """:math:`J(z)` per datapoint, shape ``(B,)``, without the data plate's scaling.

        :param torch.Tensor z: shape ``(B, d)``.
        """
        conditioned = poutine.condition(self.model, data={self.site: z})
        with poutine.block():
            trace = poutine.trace(conditioned).get_trace(x, *args, **kwargs)
        total = z.new_zeros(z.shape[0])
        nesting = plate_nesting(trace)
        for name, node in trace.nodes.items():
            if node["type"] != "sample" or site_is_subsample(node):
                continue
            if node["is_observed"]:
                check_observed_site(node)
            # a poutine.mask holds (missing data); the scales are left out
            log_prob = scale_and_mask(node["fn"].log_prob(node["value"]), mask=node["mask"])
            # no particles: a leading dim of 1 stands for them
            log_prob = per_datapoint(log_prob, node, max(nesting, log_prob.dim()), outside="sum")
            log_prob = log_prob[0].expand(len(z))
            total = total + (self.prior_weight * log_prob if name == self.site else log_prob)
        return total

    def step(self, z, x, *args, **kwargs):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            value = self.log_joint(z, x, *args, **kwargs)
            (grad,) = torch.autograd.grad(value.sum(), z)
        (z,) = backtracking_ascent(
            lambda z: self.log_joint(z, x, *args, **kwargs),
            (z.detach(),),
            (grad,),
            value.detach(),
            self.lr,
            self.max_backtracks,
        )
        return z
