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
low precision, so the comparison with the stored patterns ignores it.

:math:`P` is a positive diagonal by default, as in the analysis of App. E.2, parametrised by
its log. With ``full=True`` it is a full matrix, as in the authors' code (a trainable
``d × d`` matrix started at the identity), parametrised as :math:`P = A^\top A` so that it
stays positive semi-definite: a transformation that moves the codes along a direction no single
latent dimension holds (an MLP VAE's codes of colour, say) needs the rotation that a diagonal
lacks.
"""

import math

import torch
from torch import nn

from pyromem.checks import as_float_tensor, as_int, check_net_input
from pyromem.infer.refinement import check_rate
from pyromem.memory import GaussianMixtureMemory

#: The ridge of a full P, relative to the initial σ⁻².
RIDGE = 1e-3


class LearnedPrecisionRetrieval(nn.Module):
    """T steps of eq. 12 with a trainable precision P (full, or positive diagonal).

    After :meth:`fit`, ``MemoryVAE(vae, memory, precision=retrieval.precision.detach())`` with
    a :class:`~pyromem.infer.MemoryFixedPoint` guide of the same ``num_steps`` is the same
    retrieval as a Pyro guide.

    :param int latent_dim: d.
    :param int num_steps: T, used in training and evaluation alike.
    :param float scale: the initial isotropic σ, P = σ⁻² I (the VAE-GMM baseline; a full P
        starts at (1 + :data:`RIDGE`) σ⁻² I).
    :param bool full: a full P = AᵀA, as in the authors' code, instead of a diagonal one
        (App. E.2).
    """

    def __init__(self, latent_dim, num_steps=1, scale=1.0, full=False):
        super().__init__()
        as_int(latent_dim, "latent_dim", 1)
        as_int(num_steps, "num_steps", 1)
        scale = check_rate(scale, "scale")
        self.num_steps = num_steps
        self.full = bool(full)
        if self.full:
            # A = factor / scale with factor trained from I: Adam's steps are then relative
            # to the initial precision, at any scale of the codes.
            self.register_buffer("inverse_scale", torch.tensor(1.0 / scale))
            self.factor = nn.Parameter(torch.eye(latent_dim))
        else:
            self.log_precision = nn.Parameter(torch.full((latent_dim,), -2.0 * math.log(scale)))

    @property
    def precision(self):
        """P: shape ``(d, d)`` when full, ``(d,)`` (its diagonal) otherwise."""
        if self.full:
            # a ridge of 1e-3 σ⁻² keeps P positive definite when training drops a direction
            ridge = RIDGE * torch.eye(
                len(self.factor), dtype=self.factor.dtype, device=self.factor.device
            )
            return (self.factor.mT @ self.factor + ridge) * self.inverse_scale**2
        return self.log_precision.exp()

    def covariance(self):
        """P as the keyword argument of :class:`~pyromem.memory.GaussianMixtureMemory`."""
        return {"precision_matrix" if self.full else "precision": self.precision}

    def _prior(self, memory):
        # P has the dtype of this module's parameters, which the memory must share: named here,
        # since the user made the module, not its precision
        if isinstance(memory, torch.Tensor) and memory.is_floating_point():
            check_net_input(self, memory, "memory")
        return GaussianMixtureMemory(memory, **self.covariance())

    def forward(self, z0, memory):
        r""":math:`\hat z_T` from the queries ``z0`` (shape ``(B, d)``) and ``memory``
        (``(N, d)``, or any batch of memories that broadcasts with the queries' batch, e.g.
        ``(S, 1, N, d)`` against ``(S, B, d)``); shape that of ``z0``."""
        return self._prior(memory).fixed_point(z0, self.num_steps)  # eq. 12

    def log_responsibility(self, z, memory, targets):
        r""":math:`\log r_{k^*}(z)`, the log posterior of the correct patterns ``targets``
        (stored in ``memory``) at the codes ``z`` (both shaped like ``z``) under P:
        :math:`-\log N - \tfrac12 (z - M_{k^*})^\top P (z - M_{k^*}) + \tfrac12 \log\det P
        - \tfrac d2 \log 2\pi - \log p(z; M)`, balanced weights."""
        prior = self._prior(memory)
        diff, precision = z - targets, self.precision
        if self.full:
            quadratic, log_det = ((diff @ precision) * diff).sum(-1), torch.logdet(precision)
        else:
            quadratic, log_det = (diff.pow(2) * precision).sum(-1), precision.log().sum()
        log_component = -0.5 * quadratic + 0.5 * log_det - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        return log_component - math.log(prior.num_patterns) - prior.log_prob(z)

    def fit(self, z_queries, memory, targets, epochs=200, lr=0.05, loss="mse"):
        r"""Trains P by full-batch Adam on ``loss``: ``"mse"``, the squared error between
        ``self(z_queries, memory)`` and ``targets``, the correct patterns (shape ``(B, d)``),
        summed over the d dims and averaged over the queries, as in §4.5; or ``"nll"``, the
        mean of :math:`-\log r_{k^*}` at ``z_queries`` (:meth:`log_responsibility`), whose
        minimum (every :math:`r_{k^*} = 1`) also zeroes the MSE of the iterates, and whose
        gradient does not vanish where the T softmax steps saturate (where the MSE's does: see
        docs/retrieval.md).

        :returns: the loss of each epoch, a list of floats.
        :raises TypeError: if ``z_queries``, ``memory`` or ``targets`` is not a floating-point
            tensor of the dtype of this module's parameters.
        :raises ValueError: if ``targets`` does not have the shape of ``z_queries``, a width
            is not d, or a value is NaN or infinite: checked before the first step, which such
            values would make NaN in P.
        """
        width = self.factor.shape[-1] if self.full else self.log_precision.shape[-1]
        for value, name in ((z_queries, "z_queries"), (memory, "memory"), (targets, "targets")):
            as_float_tensor(value, name)
        if targets.shape != z_queries.shape:
            raise ValueError(
                f"targets must have the shape of z_queries {tuple(z_queries.shape)}, "
                f"got {tuple(targets.shape)}"
            )
        # the memory first: the dtype of all three is usually its
        for value, name in ((memory, "memory"), (z_queries, "z_queries"), (targets, "targets")):
            if value.dim() == 0 or value.shape[-1] != width:
                raise ValueError(
                    f"{name} must have shape (..., {width}), d = {width} the width of P, "
                    f"got {tuple(value.shape)}"
                )
            check_net_input(self, value, name)
            if not torch.isfinite(value).all():
                raise ValueError(f"{name} must be finite, got NaN or infinite values")
        as_int(epochs, "epochs", 1)
        if loss not in ("mse", "nll"):
            raise ValueError(f"loss must be 'mse' or 'nll', got {loss!r}")
        optimizer = torch.optim.Adam(self.parameters(), lr=check_rate(lr, "lr"))
        z_queries, memory, targets = z_queries.detach(), memory.detach(), targets.detach()
        losses = []
        for _ in range(epochs):
            optimizer.zero_grad()
            value = self.training_loss(z_queries, memory, targets, loss)
            value.backward()
            optimizer.step()
            losses.append(value.item())
        return losses

    def training_loss(self, z_queries, memory, targets, loss="mse"):
        """The ``loss`` of :meth:`fit` at the current P, a 0-dim tensor."""
        if loss == "nll":
            return -self.log_responsibility(z_queries, memory, targets).mean()
        return (self(z_queries, memory) - targets).pow(2).sum(-1).mean()
