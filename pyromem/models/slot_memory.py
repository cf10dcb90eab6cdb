"""The base of models that read a memory of slots: their own, or one passed with each call.

A memory is a tensor ``(N,) + memory_shape`` of N slots. A model either owns one
(a learned parameter, or a fixed buffer set with :meth:`SlotMemoryModel.set_memory`)
or receives one per call (few-shot episodes), and :meth:`~SlotMemoryModel.resolve_memory`
turns the argument into the memory to read, checked once here for every model.
:meth:`~SlotMemoryModel.slot_weights` says how much each slot serves each image,
so recipes ask the model instead of switching on its kind.
"""

import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from torch import nn

from pyromem.checks import as_int, parameter_dtype
from pyromem.data.validation import check_images

#: How a model holds a memory of its own.
MEMORY_KINDS = ("learned", "fixed")


def check_memory(memory, memory_shape, dtype=None):
    """Raise unless ``memory`` is a non-empty, finite float tensor ``(N,) + memory_shape``
    (of ``dtype``, the model's, when given)."""
    if not isinstance(memory, torch.Tensor):
        raise TypeError(f"memory: expected a torch.Tensor, got {type(memory).__name__}")
    if memory.dim() != len(memory_shape) + 1 or memory.shape[1:] != memory_shape:
        raise ValueError(
            f"memory: expected shape (N,) + {tuple(memory_shape)}, got {tuple(memory.shape)}"
        )
    if memory.shape[0] == 0:
        raise ValueError("memory: expected at least one slot, got an empty memory")
    if not memory.is_floating_point():
        raise TypeError(f"memory: expected a floating-point tensor, got {memory.dtype}")
    if dtype is not None and memory.dtype != dtype:
        raise TypeError(
            f"memory is {memory.dtype} but the model's parameters are {dtype}: convert one to "
            "the other with .to(dtype)"
        )
    # one sum is finite only if every value is (it costs no mask per slot); where it is
    # not, the values decide (a sum of finite values may overflow)
    if not torch.isfinite(memory.detach().sum()) and not torch.isfinite(memory).all():
        raise ValueError("memory: expected finite values, got NaN or infinite ones")


def check_memory_options(kind, memory_size):
    """Raise unless ``kind`` is one of :data:`MEMORY_KINDS` and ``memory_size`` a positive int
    or ``None``: a model's memory arguments, checked before it builds anything."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"memory: expected 'learned' or 'fixed', got {kind!r}")
    as_int(memory_size, "memory_size", 1, form="expected", allow_none=True)


class SlotMemoryModel(PyroModule):
    """A Pyro model reading a memory of slots ``(N,) + memory_shape``.

    Subclasses set ``memory_shape`` (a ``torch.Size``), call :meth:`init_memory` in
    their constructor and implement :meth:`slot_weights`.
    """

    memory_shape: torch.Size

    def init_memory(self, memory_size, kind="learned"):
        """Give the model its own memory of ``memory_size`` slots: a learned parameter
        (uniform in [0, 1) at first), a fixed buffer of zeros (filled by :meth:`set_memory`),
        or none (``memory_size=None``) when memories come with each call.

        :raises ValueError: on a kind not in :data:`MEMORY_KINDS` or a size that is not a
            positive int.
        """
        check_memory_options(kind, memory_size)
        if memory_size is None:
            self.memory = None
        elif kind == "learned":
            self.memory = nn.Parameter(torch.rand((memory_size,) + self.memory_shape))
        else:
            self.register_buffer("memory", torch.zeros((memory_size,) + self.memory_shape))

    def set_memory(self, memory):
        """Replace the model's own memory (a fixed buffer) by ``memory`` ``(N,) + memory_shape``."""
        check_memory(memory, self.memory_shape)
        like = next(self.parameters())
        self.memory = memory.to(device=like.device, dtype=like.dtype)

    def resolve_memory(self, memory=None):
        """The memory to read: ``memory`` if given, else the model's own; checked.

        :raises ValueError: if neither is there, or the memory has the wrong shape or values.
        :raises TypeError: if its dtype is not the model's.
        """
        if memory is None:
            if self.memory is None:
                raise ValueError(
                    f"memory: this {type(self).__name__} has no memory of its own; pass memory="
                )
            memory = self.memory
        check_memory(memory, self.memory_shape, parameter_dtype(self))
        return memory

    def _inputs(self, x, memory):
        """Check images ``x`` against ``input_shape`` and the support of ``likelihood`` (the
        values only while Pyro's validation is on) and return :meth:`resolve_memory`'s
        memory, for subclasses with those attributes."""
        check_images(
            x,
            self.input_shape,
            self.likelihood.support,
            check_values=is_validation_enabled(),
            dtype=parameter_dtype(self),
        )
        return self.resolve_memory(memory)

    def slot_weights(self, x, memory=None):
        """How much each of the N slots serves each of the B images ``x``, shape ``(B, N)``,
        rows summing to one."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it reads its slots")
