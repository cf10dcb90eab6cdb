r"""VAE-GMM*: retrieval with a learned diagonal precision (Annabi et al. 2022, §4.5, App. E.2).

Starting from the encoder's :math:`\hat z`, each step is

.. math::

    \hat z \leftarrow \mathrm{softmax}\big(-\tfrac12 (\hat z - M_k)^\top P (\hat z - M_k)\big)_k
    \, M^\top,                                                                        \qquad (12)

the full fixed-point step of :class:`~pyromem.memory.GaussianMixtureMemory` with precision
:math:`P`. The steps are differentiable in :math:`P`, which is trained by gradient descent on
the mean squared error between the retrieved :math:`\hat z_T` and the correct pattern
:math:`M_{k^*}` under a given transformation of the queries, with the same T as at evaluation.
A dimension that the transformation scrambles (e.g. colour under a colour rotation) gets a
low precision, so the comparison with the stored patterns ignores it. :math:`P` is restricted to
a diagonal, as in App. E.2, and parametrised by its log so that it stays positive.
"""

import math

import torch
from torch import nn

from pyromem.infer.refinement import check_rate
from pyromem.memory import GaussianMixtureMemory


class LearnedPrecisionRetrieval(nn.Module):
    """T steps of eq. 12 with a trainable positive diagonal precision P.

    After :meth:`fit`, ``MemoryVAE(vae, memory, precision=retrieval.precision.detach())`` with
    a :class:`~pyromem.infer.MemoryFixedPoint` guide of the same ``num_steps`` is the same
    retrieval as a Pyro guide.

    :param int latent_dim: d.
    :param int num_steps: T, used in training and evaluation alike.
    :param float scale: the initial isotropic σ, P = σ⁻² I (the VAE-GMM baseline).
    """

    def __init__(self, latent_dim, num_steps=1, scale=1.0):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        scale = check_rate(scale, "scale")
        self.num_steps = num_steps
        self.log_precision = nn.Parameter(torch.full((latent_dim,), -2.0 * math.log(scale)))

    @property
    def precision(self):
        """P, shape ``(d,)``."""
        return self.log_precision.exp()

    def forward(self, z0, memory):
        r""":math:`\hat z_T` from the queries ``z0`` (shape ``(B, d)``) and ``memory``
        (``(N, d)``, or ``(B, N, d)`` for one memory per query); shape ``(B, d)``."""
        prior = GaussianMixtureMemory(memory, precision=self.precision)
        z = z0
        for _ in range(self.num_steps):
            z = prior.fixed_point_step(z)  # eq. 12
        return z

    def fit(self, z_queries, memory, targets, epochs=200, lr=0.05):
        """Trains P by full-batch Adam on the MSE between ``self(z_queries, memory)`` and
        ``targets``, the correct patterns (shape ``(B, d)``).

        :returns: the loss of each epoch, a list of floats.
        """
        if not isinstance(targets, torch.Tensor) or targets.shape != z_queries.shape:
            raise ValueError(
                f"targets must have the shape of z_queries {tuple(z_queries.shape)}, "
                f"got {getattr(targets, 'shape', type(targets).__name__)}"
            )
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}")
        optimizer = torch.optim.Adam([self.log_precision], lr=check_rate(lr, "lr"))
        z_queries, memory, targets = z_queries.detach(), memory.detach(), targets.detach()
        losses = []
        for _ in range(epochs):
            optimizer.zero_grad()
            loss = (self(z_queries, memory) - targets).pow(2).sum(-1).mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses
