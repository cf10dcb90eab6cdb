r"""VAE-GMM and VAE-Hopfield: the amortised estimate moved by memory fixed-point steps.

With the bottom-up pathway left to the encoder (Annabi et al. 2022, §4.4, App. C.3), the free
energy of :math:`\hat z` keeps only the prior term, :math:`F(\hat z) = -\log p(\hat z; M) + C`,
and gradient descent on it with rate :math:`\alpha` is

.. math::

    \hat z \leftarrow \hat z + \alpha P \big(\bar m(\hat z) - \hat z\big),
    \qquad \bar m(\hat z) = \textstyle\sum_k r_k(\hat z) M_k,                         \qquad (44)

where :math:`r_k` are the mixture's responsibilities. For :math:`P = \sigma^{-2} I` and
:math:`\alpha = \sigma^2` this is :math:`\hat z \leftarrow \mathrm{softmax}(-\|\hat z - M\|^2 /
2\sigma^2)\, M^\top` (eq. 45 = eq. 11, VAE-GMM); with Hopfield weights and
:math:`\beta = 1/\sigma^2` it is the MCHN update :math:`\mathrm{softmax}(\beta \hat z M) M^\top`
(eq. 27-28 = eq. 8, VAE-Hopfield); with a learned diagonal precision it is eq. 12 (VAE-GMM*).
"""

import torch

from pyromem.infer.refinement import Refinement, check_rate
from pyromem.memory import GaussianMixtureMemory


class MemoryFixedPoint(Refinement):
    """Refines ``site`` by ``num_steps`` of ``prior.fixed_point_step(z, alpha)`` (eq. 44).

    ``prior`` is the model's distribution at ``site``, which must be a
    :class:`~pyromem.memory.GaussianMixtureMemory` (e.g. :class:`~pyromem.models.MemoryVAE`);
    its weights and covariance choose between VAE-GMM (eq. 11), VAE-Hopfield (eq. 8) and
    VAE-GMM* (eq. 12). The step is an EM step on the prior energy, so that energy never
    increases along the refinement (nor for gradient steps with ``alpha <= 2 / λ_max(P)``).
    The prior is read once per refinement and iterated by
    :meth:`~pyromem.memory.GaussianMixtureMemory.fixed_point`.

    :param model: a model whose ``site`` has a Gaussian-mixture memory prior.
    :param guide: its amortised guide.
    :param int num_steps: T.
    :param float alpha: the rate of eq. 44; ``None`` takes the full step (α = σ², eq. 45).
    :param str site: the refined site.
    """

    def __init__(self, model, guide, num_steps=10, alpha=None, site="z"):
        super().__init__(model, guide, num_steps=num_steps, site=site)
        self.alpha = check_rate(alpha, "alpha", allow_none=True)

    def memory_prior(self, x, *args, **kwargs):
        """The model's :class:`~pyromem.memory.GaussianMixtureMemory` at ``site``."""
        prior = self.prior(x, *args, **kwargs)
        if not isinstance(prior, GaussianMixtureMemory):
            raise TypeError(
                f"MemoryFixedPoint needs a GaussianMixtureMemory prior at site {self.site!r}, "
                f"got {type(prior).__name__}"
            )
        return prior

    def step(self, z, x, *args, **kwargs):
        return self.memory_prior(x, *args, **kwargs).fixed_point_step(z, self.alpha)

    def refine(self, x, *args, trajectory=False, **kwargs):
        if self.num_steps == 0:  # the guide's mean: the model is not run
            return super().refine(x, *args, trajectory=trajectory, **kwargs)
        with torch.no_grad():
            z = self.initial(x, *args, **kwargs)
            prior = self.memory_prior(x, *args, **kwargs)
            return prior.fixed_point(z, self.num_steps, self.alpha, trajectory=trajectory)
