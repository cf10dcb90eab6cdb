r"""VAE-BP-GMM and VAE-BP-Hopfield on many memories at once: the gradient MAP of eq. 10.

Each query :math:`x` of memory :math:`s` starts at the encoder's :math:`\hat z_0` and takes
``num_steps`` gradient-ascent steps of rate :math:`\lambda` on

.. math::

    J(\hat z) = \log p_\theta(x \mid \hat z) + \gamma \log p(\hat z; M^{(s)}),        \qquad (10)

each step backtracking per query (its rate halved, up to ``max_backtracks`` times, until
:math:`J` does not decrease; a query that finds no ascent keeps its :math:`\hat z`). This is
:class:`~pyromem.infer.MAPRefinement` on a :class:`~pyromem.models.MemoryVAE`, step for step,
with the same line search (:func:`~pyromem.infer.refinement.backtracking_ascent`); what differs
is only how :math:`J` is computed, for speed:

* directly, as the decoder's log-likelihood plus :math:`\gamma` times the memory's
  :meth:`~pyromem.memory.GaussianMixtureMemory.log_prob`, not through a Pyro trace of the model
  (a trace costs milliseconds whatever the batch, and the line search evaluates :math:`J` up to
  ``max_backtracks + 1`` times a step);
* for the queries of all memories in one batch, and in the line search only for the queries
  still searching;
* the decoder skipped for a candidate whose prior term alone rules it out: with a Gaussian
  likelihood of fixed scale :math:`\log p(x \mid \hat z) \le -\tfrac D2 \log(2\pi s^2)`,
  so a candidate with :math:`-\tfrac D2 \log(2\pi s^2) + \gamma \log p(\hat z; M) < J(\hat
  z_t)` cannot ascend (most of the overshooting candidates of a large rate or :math:`\gamma`);
* for an MLP decoder :math:`f_\theta(\hat z) = W h(\hat z) + b` with a Gaussian likelihood of
  fixed scale :math:`s`, as a quadratic form in the last hidden layer :math:`h`,

  .. math::

      \|x - W h - b\|^2 = h^\top (W^\top W) h - 2\, h^\top W^\top (x - b) + \|x - b\|^2,

  so that a step costs an :math:`H \times H` product per query instead of :math:`D \times H`
  (:math:`H = 512`, :math:`D = 3072` on 32×32 RGB images).
"""

import math

import torch
from torch import nn

from pyromem.infer.refinement import backtracking_ascent
from pyromem.memory import GaussianMixtureMemory
from pyromem.nets.likelihoods import GaussianLikelihood


def log_likelihood_of(vae, x):
    r"""A function ``rows, z -> log p(x[rows] | z)`` for the images ``x`` of a batch, and an
    upper bound of its values.

    :param vae: a :class:`~pyromem.models.VAE`.
    :param torch.Tensor x: images ``(R,) + vae.input_shape``.
    :returns: ``(log_likelihood, upper)``: a callable taking a long tensor ``rows`` of shape
        ``(r,)`` and codes ``z`` of shape ``(r, d)``, returning shape ``(r,)`` (the quadratic
        form of the module docstring when the VAE has an MLP decoder and a Gaussian likelihood
        of fixed scale), and the bound, a float (``inf`` where none is known).
    """
    body = getattr(vae.decoder, "body", None)
    last = body[-1] if isinstance(body, nn.Sequential) else None
    likelihood = vae.likelihood
    if not (
        isinstance(last, nn.Linear)
        and isinstance(likelihood, GaussianLikelihood)
        and likelihood.log_scale is None
    ):
        return (lambda rows, z: vae.decode(z).log_prob(x[rows])), math.inf
    hidden, weight = body[:-1], last.weight
    residual = x.flatten(1) - last.bias
    gram = weight.mT @ weight  # (H, H)
    cross = residual @ weight  # (R, H): W^T (x - b) per image
    offset = residual.pow(2).sum(-1)
    variance = likelihood.fixed_scale**2
    log_normalizer = residual.shape[-1] * (
        math.log(likelihood.fixed_scale) + 0.5 * math.log(2 * math.pi)
    )

    def log_likelihood(rows, z):
        h = hidden(z)
        squared = ((h @ gram) * h).sum(-1) - 2 * (h * cross[rows]).sum(-1) + offset[rows]
        return -0.5 * squared / variance - log_normalizer

    return log_likelihood, -log_normalizer


def _pruned_log_joint(log_likelihood, upper, log_prior, z, value):
    r""":math:`J` of the candidates ``codes`` of the queries ``rows``, for the line search from
    the codes ``z`` (all queries, ``(R, d)``) of values ``value`` (``(R,)``): where the prior
    term plus the likelihood's bound ``upper`` already falls below the query's value, that
    bound stands for :math:`J` (it rules the candidate out) and the decoder is not run."""

    def objective(rows, codes):
        # the prior on the dense grid of codes: each query under its own memory
        prior_term = log_prior(z.index_copy(0, rows, codes))[rows]
        out = upper + prior_term
        possible = out >= value[rows]  # the decoder may accept these
        out[possible] = log_likelihood(rows[possible], codes[possible]) + prior_term[possible]
        return out

    return objective


def gradient_map(
    vae,
    x,
    memory,
    *,
    scale,
    weights="balanced",
    prior_weight=1.0,
    lr=0.01,
    num_steps=20,
    max_backtracks=20,
    trajectory=False,
):
    r"""Eq. 10's refinement of the encoder's codes of ``x``, one memory per leading index.

    :param vae: the trained :class:`~pyromem.models.VAE`.
    :param torch.Tensor x: queries ``(S, B) + vae.input_shape``.
    :param torch.Tensor memory: the stored codes ``(S, N, d)``.
    :param float scale: σ of the mixture (for Hopfield weights β = 1/σ², eq. 5).
    :param str weights: ``"balanced"`` (VAE-BP-GMM) or ``"hopfield"`` (VAE-BP-Hopfield).
    :param float prior_weight: γ.
    :param float lr: λ.
    :param int num_steps: T.
    :param int max_backtracks: halvings of a query's rate in one step.
    :param bool trajectory: also return the ``T + 1`` iterates.
    :returns: :math:`\hat z_T`, shape ``(S, B, d)`` [and the list of iterates].
    """
    num_memories, batch = x.shape[:2]
    images = x.reshape((-1,) + x.shape[2:])
    z = vae.encoder(images)[0].detach()
    # One distribution holds the S memories; its log density is evaluated on the dense
    # (S, B) grid of codes (cheap beside the decoder), where the queries not being evaluated
    # keep their current codes, so that each query is scored under its own memory.
    prior = GaussianMixtureMemory(memory.unsqueeze(-3), scale=scale, weights=weights)
    log_likelihood, upper = log_likelihood_of(vae, images)

    def log_prior(codes):
        return prior_weight * prior.log_prob(codes.reshape(num_memories, batch, -1)).reshape(-1)

    every = torch.arange(len(z), device=z.device)
    path = [z]
    for _ in range(num_steps):
        with torch.enable_grad():
            start = z.detach().requires_grad_()
            value = log_likelihood(every, start) + log_prior(start)
            (grad,) = torch.autograd.grad(value.sum(), start)
        objective = _pruned_log_joint(log_likelihood, upper, log_prior, z, value.detach())
        (z,) = backtracking_ascent(
            objective, (z,), (grad,), value.detach(), lr, max_backtracks, takes_rows=True
        )
        path.append(z)
    shape = (num_memories, batch, z.shape[-1])
    out = z.reshape(shape)
    return (out, [step.reshape(shape) for step in path]) if trajectory else out
