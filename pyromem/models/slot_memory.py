"""The base of models that read a memory of slots: their own, or one passed with each call.

A memory is a tensor ``(N,) + memory_shape`` of N slots. A model either owns one
(a learned parameter, or a fixed buffer set with :meth:`SlotMemoryModel.set_memory`)
or receives one per call (few-shot episodes), and :meth:`~SlotMemoryModel.resolve_memory`
turns the argument into the memory to read, checked once here for every model. A memory the
model fills itself (a fixed buffer, :class:`~pyromem.models.MemoryVAE`'s written codes) is
empty (``None``) until it is filled, and :meth:`~SlotMemoryModel.own_memory` refuses to read
it before then.
:meth:`~SlotMemoryModel.slot_weights` says how much each slot serves each image,
so recipes ask the model instead of switching on its kind.
"""

import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from torch import nn

from pyromem.checks import as_int, check_device, parameter_device, parameter_dtype
from pyromem.data.validation import check_images

#: How a model holds a memory of its own.
MEMORY_KINDS = ("learned", "fixed")


def check_memory(memory, memory_shape, dtype=None, device=None):
    """Raise unless ``memory`` is a non-empty, finite float tensor ``(N,) + memory_shape``
    (of ``dtype`` and on ``device``, the model's, when given)."""
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
    check_device(memory, "memory", device)
    # one sum is finite only if every value is (it costs no mask per slot); where it is
    # not, the values decide (a sum of finite values may overflow)
    if not torch.isfinite(memory.detach().sum()) and not torch.isfinite(memory).all():
        raise ValueError("memory: expected finite values, got NaN or infinite ones")


def check_memory_options(kind, memory_size):
    """Raise unless ``kind`` is one of :data:`MEMORY_KINDS` and ``memory_size`` a positive int
    or ``None`` (``None`` only for a learned memory, where it means no memory of its own): a
    model's memory arguments, checked before it builds anything."""
    if kind not in MEMORY_KINDS:
        raise ValueError(f"memory: expected 'learned' or 'fixed', got {kind!r}")
    as_int(memory_size, "memory_size", 1, form="expected", allow_none=True)
    if kind == "fixed" and memory_size is None:
        raise ValueError("memory='fixed' needs memory_size=N, the number of slots set_memory fills")


class SlotMemoryModel(PyroModule):
    """A Pyro model reading a memory of slots ``(N,) + memory_shape``.

    Subclasses set ``memory_shape`` (a ``torch.Size``), call :meth:`init_memory` in
    their constructor and implement :meth:`slot_weights`.
    """

    memory_shape: torch.Size

    #: How the model fills a memory of its own that starts empty (``None``), for the message
    #: of :meth:`own_memory`; ``None`` where the model has no such memory.
    memory_filled_by = None
    #: ``"learned"``, ``"fixed"``, or ``None`` where the model has no memory set by
    #: :meth:`init_memory`; and that memory's number of slots.
    memory_kind = memory_size = None

    def init_memory(self, memory_size, kind="learned"):
        """Give the model its own memory of ``memory_size`` slots: a learned parameter
        (uniform in [0, 1) at first), a fixed buffer, empty until :meth:`set_memory` fills it,
        or none (``memory_size=None``, a learned kind) when memories come with each call.

        :raises ValueError: on a kind not in :data:`MEMORY_KINDS`, a size that is not a
            positive int, or a fixed memory without a size.
        """
        check_memory_options(kind, memory_size)
        self.memory_size = memory_size
        self.memory_kind = None if memory_size is None else kind
        if memory_size is None:
            self.memory = None
        elif kind == "learned":
            self.memory = nn.Parameter(torch.rand((memory_size,) + self.memory_shape))
        else:
            # empty: reading it before set_memory raises (own_memory), where zeros would
            # silently serve as |M| identical slots
            self.register_buffer("memory", None)
            self.memory_filled_by = "set_memory(memory)"

    def set_memory(self, memory):
        """Fill the model's own fixed memory with ``memory`` ``(memory_size,) + memory_shape``,
        replacing what was there.

        The size is the one the model was built with: ``config`` rebuilds the model with it
        and ``load_state_dict`` expects it. A learned memory is trained with the model, not
        set; a model without a memory of its own reads the one passed to each call.

        :raises ValueError: if the model has no fixed memory, or ``memory`` is not
            ``memory_size`` finite slots of ``memory_shape``.
        :raises TypeError: if ``memory`` is not a floating-point tensor.

        The slots are stored on the device and in the dtype of the model's parameters.
        """
        name = type(self).__name__
        if self.memory_kind == "learned":
            raise ValueError(
                f"memory: this {name}'s memory is learned (trained with the model), not set: "
                "build it with memory='fixed' to set_memory"
            )
        if self.memory_kind != "fixed" and self.memory_filled_by is not None:
            raise ValueError(f"memory: this {name} fills its memory with {self.memory_filled_by}")
        if self.memory_kind != "fixed":
            raise ValueError(
                f"memory: this {name} has no memory of its own (memory_size=None): pass "
                "memory= to each call, or build it with memory='fixed', memory_size=N"
            )
        check_memory(memory, self.memory_shape)
        self._check_image_slots(memory)
        if memory.shape[0] != self.memory_size:
            raise ValueError(
                f"memory: expected {self.memory_size} slots (memory_size), got {memory.shape[0]}"
            )
        like = next(self.parameters())
        self.memory = memory.detach().to(device=like.device, dtype=like.dtype)

    def own_memory(self):
        """The model's own memory, unchecked.

        :raises ValueError: if the model has none, or it is empty (not filled yet).
        """
        if self.memory is None:
            if self.memory_filled_by is not None:
                raise ValueError(
                    f"memory is empty: call {self.memory_filled_by} or pass memory=M first"
                )
            raise ValueError(
                f"memory: this {type(self).__name__} has no memory of its own; pass memory="
            )
        return self.memory

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # an empty memory is a buffer of None, which torch would not load into: give it the
        # saved memory's shape first, so that a filled model's state loads into a fresh one
        key = prefix + "memory"
        if "memory" in self._buffers and self._buffers["memory"] is None and key in state_dict:
            like = next(self.parameters(), state_dict[key])
            self._buffers["memory"] = torch.empty_like(state_dict[key], device=like.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def resolve_memory(self, memory=None):
        """The memory to read: ``memory`` if given, else the model's own; checked.

        :raises ValueError: if neither is there (or the model's is empty), or the memory has
            the wrong shape or values, or is on another device than the model's parameters.
        :raises TypeError: if its dtype is not the model's.
        """
        if memory is None:
            memory = self.own_memory()
        check_memory(memory, self.memory_shape, parameter_dtype(self), parameter_device(self))
        return memory

    def _check_image_slots(self, memory):
        """Raise unless slots that are images (``memory_shape == input_shape``) take the
        values of the images they are read beside, [0, 1] for a likelihood that is not
        real-valued: a memory in [0, 255] would otherwise be read as saturated images."""
        likelihood = getattr(self, "likelihood", None)
        if (
            likelihood is None
            or likelihood.support == "real"
            or self.memory_shape != getattr(self, "input_shape", None)
        ):
            return
        lo, hi = (value.item() for value in torch.aminmax(memory.detach()))
        if lo < 0 or hi > 1:
            raise ValueError(
                f"memory: expected images with values in [0, 1], as x's, got [{lo:g}, {hi:g}]"
            )

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
            device=parameter_device(self),
            batch_dims=1,
        )
        given = memory is not None
        memory = self.resolve_memory(memory)
        if given and is_validation_enabled():
            # the model's own memory is a parameter or was checked by set_memory
            self._check_image_slots(memory)
        return memory

    def slot_weights(self, x, memory=None):
        """How much each of the N slots serves each of the B images ``x``, shape ``(B, N)``,
        rows summing to one."""
        raise NotImplementedError(f"{type(self).__name__} does not say how it reads its slots")
