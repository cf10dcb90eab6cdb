"""The decorator of every model's ``model`` and ``guide``: Pyro's view of the module's parameters.

A pyromem model is a :class:`~pyro.nn.PyroModule` whose parameters are plain ``nn.Parameter``\\ s
(so that ``torch.optim``, Lightning and DDP train them and ``state_dict`` saves them). Two
things make Pyro see them too:

- ``model`` and ``guide`` run in the module's Pyro context (:func:`pyro.nn.pyro_method`), so
  every parameter they read, the module's own (VMA's learned memory and prior query point)
  as well as its nets', passes through a ``pyro.param`` statement: ``SVI`` with a
  ``pyro.optim`` optimiser and the ``Jit*`` ELBOs find it in the param store;
- a parameter that Pyro's param store holds as another tensor, as after
  ``pyro.get_param_store().load(path)`` or ``set_state(state)``, is copied into the module and
  the store pointed back at the module's parameter. Pyro does that for ``PyroParam``\\ s but
  not for plain ``nn.Parameter``\\ s, whose store entry would otherwise be trained by
  ``pyro.optim`` while the model kept reading its own, untrained, tensor.
"""

import functools

import pyro
import torch
from pyro.nn.module import pyro_method
from pyro.poutine.messenger import Messenger
from torch import nn


class _ParamsFromStore(Messenger):
    """Copies the param store's value of a module parameter into it where the store holds
    another tensor under its name, and makes the store hold the module's parameter."""

    def _pyro_param(self, msg):
        args = msg["args"]
        if len(args) < 2 or not isinstance(args[1], nn.Parameter):
            return
        name, parameter = args[0], args[1]
        store = pyro.get_param_store()
        held = store._params.get(name)
        if held is None or held is parameter:
            return
        if held.shape != parameter.shape:
            raise ValueError(
                f"Pyro's param store holds {name!r} of shape {tuple(held.shape)}, but the "
                f"model's parameter has shape {tuple(parameter.shape)}: the store was saved "
                "from another architecture (rebuild the model from its config)"
            )
        with torch.no_grad():
            parameter.copy_(held.detach().to(parameter))
        store._params[name] = parameter
        store._param_to_name.pop(held, None)
        store._param_to_name[parameter] = name


def pyro_program(fn):
    """Decorate a model's ``model`` or ``guide`` (see the module's docstring)."""
    method = pyro_method(fn)

    @functools.wraps(fn)
    def run(self, *args, **kwargs):
        with _ParamsFromStore():
            return method(self, *args, **kwargs)

    return run
