r"""Iterative amortised inference: a learned update of the guide's parameters from the ELBO's
gradient (Marino, Yue, Mandt 2018; Marino 2019, §2).

Direct amortised inference maps :math:`x` to :math:`\lambda = (\mu, \log\sigma)` in one pass;
iterative amortised inference learns an optimiser instead,

.. math::

    \lambda_{t+1} = \lambda_t + f_\psi\big(\lambda_t, \nabla_\lambda \mathcal{L}(x, \lambda_t)\big),

started from the amortised guide's :math:`\lambda_0` and run for ``num_steps`` steps, the
guide emitting :math:`\mathcal{N}(\mu_T, \mathrm{diag}\,\sigma_T^2)`. Here :math:`f_\psi` is
a small MLP applied to each latent dim alike (so one update serves any width d), whose inputs
are :math:`\mu, \log\sigma` and the two gradients, each compressed as
:math:`\mathrm{sign}(g) \log(1 + |g|)` (Andrychowicz et al. 2016) since the ELBO's gradient
spans orders of magnitude. Its last layer starts at zero: an untrained update is the identity,
and the guide starts as good as the amortised one.

The gradients :math:`\nabla_\lambda \mathcal{L}` are the reparameterised estimates of
:class:`~pyromem.infer.GaussianRefinement` (held noise, analytic KL where registered); they
enter :math:`f_\psi` as inputs and are not differentiated through, as in Marino et al. (2018).
Everything else stays in the graph: a loss on the emitted guide (any Pyro ELBO, or
:class:`~pyromem.infer.VIMCO`) trains :math:`\psi` and the encoder end to end. The guide is
an ``nn.Module``: give its ``parameters()`` to the optimiser, next to the model's.

References:

[1] Marino, Yue, Mandt. "Iterative Amortized Inference." ICML 2018.
[2] Marino. "Predictive Coding, Variational Autoencoders, and Biological Connections." 2019.
[3] Andrychowicz et al. "Learning to Learn by Gradient Descent by Gradient Descent." NeurIPS
    2016.
"""

import torch
from torch import nn

from pyromem.checks import as_int
from pyromem.infer.gaussian_refinement import GaussianRefinement, GaussianState


class IterativeAmortizedGuide(GaussianRefinement, nn.Module):
    r"""A Normal guide refined by a learned update :math:`\lambda \leftarrow \lambda +
    f_\psi(\lambda, \nabla_\lambda \mathcal{L})`.

    :param callable model: the Pyro model, called as ``model(x, *args, **kwargs)``.
    :param callable guide: its amortised Gaussian guide, for :math:`\lambda_0`.
    :param int num_steps: T.
    :param int hidden: the width of the update MLP's two hidden layers.
    :param int num_particles: S, the reparameterised draws of each gradient estimate, an even
        number (antithetic pairs).
    :param str site: the refined latent site.
    """

    def __init__(self, model, guide, num_steps=5, hidden=32, num_particles=2, site="z"):
        nn.Module.__init__(self)
        GaussianRefinement.__init__(
            self,
            model,
            guide,
            num_steps=num_steps,
            num_particles=num_particles,
            differentiable=True,
            site=site,
        )
        as_int(hidden, "hidden", 1)
        self.update = nn.Sequential(
            nn.Linear(4, hidden),
            nn.ELU(),
            nn.Linear(hidden, hidden),
            nn.ELU(),
            nn.Linear(hidden, 2),
        )
        nn.init.zeros_(self.update[-1].weight)
        nn.init.zeros_(self.update[-1].bias)

    def value_and_grad(self, state, x, *args, **kwargs):
        loc, log_scale, noise = state
        with torch.enable_grad():
            leaves = GaussianState(
                loc.detach().requires_grad_(), log_scale.detach().requires_grad_(), noise
            )
            value = self.elbo(leaves, x, *args, **kwargs)
            grads = torch.autograd.grad(value.sum(), leaves[:2])
        return state, value.detach(), grads

    def step(self, state, x, *args, **kwargs):
        state, _, (grad_loc, grad_log_scale) = self.value_and_grad(state, x, *args, **kwargs)
        loc, log_scale = state.loc, state.log_scale
        inputs = torch.stack(
            [loc, log_scale, _compress(grad_loc), _compress(grad_log_scale)], dim=-1
        ).to(self.update[0].weight.dtype)
        delta = self.update(inputs).to(loc.dtype)
        return GaussianState(loc + delta[..., 0], log_scale + delta[..., 1], state.noise)


def _compress(grad):
    return grad.sign() * grad.abs().log1p()
