"""pyromem: memory-conditioned generative models as Pyro programs.

Importing pyromem turns on Pyro's module-local parameters
(``pyro.settings.set(module_local_params=True)``), so that the parameters of a
:class:`~pyro.nn.PyroModule` live in the module rather than in Pyro's global
parameter store. ``ELBO()(model, guide)`` is then an ``nn.Module`` that plain
``torch.optim``, Lightning and DDP can train.
"""

import pyro

pyro.settings.set(module_local_params=True)

__version__ = "0.1.0"
