"""Variational Memory Addressing (Bornschein, Mnih, Zoran & Rezende 2017) as a Pyro program.

Generative model of an image x given a memory M of |M| slots m_1 .. m_|M| (eq. 1):

    a ~ p(a | M) ∝ exp S(m_a, e^p)       (a learned prior query point e^p, or flat)
    z | a ~ p(z | m_a) = N(μ(m_a), diag σ(m_a)²)
    x | z, a ~ p(x | z, m_a)             (a decoder of [z, m_a] plus a skip path from m_a)

so p(x | M) = Σ_a p(a | M) ∫ p(z | m_a) p(x | z, m_a) dz. Guide (eq. 3-6):

    q(a | x) ∝ exp S(m_a, x),  S = <h(m_a), h^q(x)> / ‖h(m_a)‖
    q(z | x, m_a) = N(μ(x, m_a), diag σ(x, m_a)²).

The address is enumerated exactly in the guide (``address="enum"``, train
with ``TraceEnum_ELBO(max_plate_nesting=1)``; |M| decoder passes per image),
sampled (``"vimco"``, ``"rws"``, ``"nvil"``: K or one decoder passes, trained
with :class:`pyromem.infer.VIMCO`, reweighted wake-sleep or ``TraceGraph_ELBO``
with the guide's learned baseline; :mod:`pyromem.infer.address_estimators`), or
relaxed in training (``"gumbel"``: a Concrete address, the read a mixture of
slots, ``TraceMeanField_ELBO``, which scores the address by its categorical KL) and
discrete when evaluated. The memory is an argument of ``model`` and ``guide`` (few-shot:
it changes per batch) or, when it is not given, the model's own memory: a learned
parameter or a fixed buffer.

Two architectures (``net=``): MLPs of the flattened x and m_a (``"mlp"``,
the default), or §4.2's Omniglot nets (``"conv"``, see
:mod:`pyromem.nets.conv_memory`): one tied downscaling conv stack D embeds
m_a and x for every net, and p(x | z, m_a) upscales z with U-Net skips from
D(m_a). Both keep the skip path from m_a to the likelihood's parameters.

§4.2's soft-attention baseline, :class:`SoftAttentionVAE`, is at the end.
"""

import itertools
import math
import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyromem.checks import (
    as_int,
    as_positive_int,
    as_shape,
    as_sizes,
    parameter_device,
    parameter_dtype,
)
from pyromem.memory.addressing import (
    SIMILARITIES,
    Addressing,
    ConcreteAddress,
    InverseCDFCategorical,
    similarity,
)
from pyromem.models.methods import pyro_program
from pyromem.models.plates import data_plate
from pyromem.models.slot_memory import (
    SlotMemoryModel,
    check_memory,  # noqa: F401 (deprecated alias, CHANGELOG)
    check_memory_options,
)
from pyromem.nets import (
    MLP,
    ConvMemoryDecoder,
    ConvMemoryEncoder,
    DownscalingStack,
    MLPDecoder,
    MLPEncoder,
    TopFeatures,
    make_likelihood,
    typical_image,
)

#: How the address is inferred: enumerated, sampled for VIMCO, reweighted wake-sleep or NVIL,
#: or relaxed (Gumbel-softmax) in training.
ADDRESSING = ("enum", "vimco", "rws", "nvil", "gumbel")
NETS = ("mlp", "conv")
_instances = itertools.count()


def _concat(*tensors):
    """Concatenate vectors ``batch_shape + (n_i,)`` whose batch shapes broadcast."""
    batch = torch.broadcast_shapes(*(t.shape[:-1] for t in tensors))
    return torch.cat([t.expand(batch + t.shape[-1:]) for t in tensors], dim=-1)


class SkipPath(nn.Module):
    """The skip path from a slot m_a to the decoder's parameters (§4.2's high-bandwidth path).

        skip(m_a) = exp(s) ⊙ (w ⊙ m_a + b)     when m_a has the shape of the parameters,
        skip(m_a) = exp(s) ⊙ (W vec(m_a) + b)  otherwise,

    with a learned log-gain s per parameter. The elementwise form (w = 1, b = 0 at
    initialisation) ties each pixel's parameter to the same pixel of m_a, as the
    paper's skip connections between spatially aligned layers do, so it carries
    over to slots not seen in training. The log-gain lets Adam, whose steps are
    about the learning rate whatever the gradient's size, grow the parameters
    geometrically: recall (x = m_a) needs logits of magnitude ~10, out of reach
    of a few thousand steps of 1e-2 on a plain linear weight.

    :param tuple memory_shape: the shape of one slot.
    :param tuple param_shape: the likelihood's parameter shape per image.
    """

    def __init__(self, memory_shape, param_shape):
        super().__init__()
        self.memory_shape, self.param_shape = torch.Size(memory_shape), torch.Size(param_shape)
        self.log_gain = nn.Parameter(torch.zeros(self.param_shape))
        if self.memory_shape == self.param_shape:
            self.weight = nn.Parameter(torch.ones(self.param_shape))
            self.bias = nn.Parameter(torch.zeros(self.param_shape))
            self.linear = None
        else:
            self.linear = nn.Linear(math.prod(self.memory_shape), math.prod(self.param_shape))

    def forward(self, m):
        """
        :param torch.Tensor m: slots ``batch_shape + memory_shape``.
        :returns: parameters ``batch_shape + param_shape``.
        """
        if self.linear is None:
            return self.log_gain.exp() * (self.weight * m + self.bias)
        batch_shape = m.shape[: m.dim() - len(self.memory_shape)]
        params = self.linear(m.flatten(-len(self.memory_shape)))
        return self.log_gain.exp() * params.reshape(batch_shape + self.param_shape)


def _embedding_net(shape, embedding_dim, hidden):
    """An MLP from items of ``shape`` (flattened) to ``(embedding_dim,)``."""
    return nn.Sequential(nn.Flatten(-len(shape)), MLP(math.prod(shape), (embedding_dim,), hidden))


def _check_widths(latent_dim, embedding_dim, hidden, channels):
    """The nets' widths, checked before anything is built: positive ints (``hidden`` a tuple
    of them, or one int for one layer), else a one-line error naming the argument."""
    return (
        as_positive_int(latent_dim, "latent_dim"),
        as_positive_int(embedding_dim, "embedding_dim"),
        as_sizes(hidden, "hidden"),
        as_positive_int(channels, "channels"),
    )


def _check_temperature(value):
    """τ of the Gumbel-softmax relaxation: a positive, finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"temperature: expected a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"temperature: expected a positive, finite number, got {value!r}")
    return float(value)


def _check_slot(slot, size):
    """``slot`` as an int in [0, ``size``), else a one-line error naming it."""
    as_int(slot, "slot", error=TypeError, form="split")
    if not 0 <= slot < size:
        raise ValueError(f"slot must be in [0, {size}), the memory's slots, got {slot}")
    return int(slot)


def _check_net(net, input_shape, memory_shape):
    """Raise unless ``net`` is one of :data:`NETS` and fits the shapes."""
    if net not in NETS:
        raise ValueError(f"net: expected one of {NETS}, got {net!r}")
    if net == "conv" and (len(input_shape) != 3 or memory_shape != input_shape):
        raise ValueError(
            f"net='conv': expected memory_shape == input_shape == (C, H, W), got memory_shape "
            f"{tuple(memory_shape)} and input_shape {tuple(input_shape)}"
        )


def _mlp_nets(input_shape, memory_shape, latent_dim, embedding_dim, hidden, param_shape):
    """VMA's MLPs: h(m_a), h^q(x), p(z | m_a), q(z | x, m_a) of [x, m_a] and the
    decoder of [z, m_a] to the parameters ``param_shape``."""
    memory_dim, input_dim = math.prod(memory_shape), math.prod(input_shape)
    return (
        _embedding_net(memory_shape, embedding_dim, hidden),
        _embedding_net(input_shape, embedding_dim, hidden),
        MLPEncoder(memory_shape, latent_dim, hidden),
        MLPEncoder((input_dim + memory_dim,), latent_dim, hidden),
        MLPDecoder(latent_dim + memory_dim, param_shape, tuple(reversed(hidden))),
    )


def _on_top(down, head):
    """``head`` applied to the flattened top features of the tied stack D (§4.2)."""
    return nn.Sequential(TopFeatures(down), head)


def _conv_nets(down, latent_dim, embedding_dim, hidden, param_shape):
    """VMA's §4.2 conv nets around the tied stack D: h(m_a) = h^q(x) (one MLP on D's
    top features), p(z | m_a), q(z | x, m_a) and the U-Net decoder of z and m_a.

    h^q is h: §4.2 saw no difference between tied and untied embeddings, and with
    the normalised S (eq. 5) a tied h scores x = m_b highest at a = b from the
    start (Cauchy-Schwarz), where untied heads let q(a | x) collapse onto one slot
    for every x in train-to-recall."""
    top = down.top_features
    embedding = _on_top(down, MLP(top, (embedding_dim,), hidden))
    return (
        embedding,
        embedding,
        _on_top(down, MLPEncoder((top,), latent_dim, hidden)),
        ConvMemoryEncoder(down, latent_dim, hidden),
        ConvMemoryDecoder(down, latent_dim, param_shape),
    )


class _DecoderOfSlot(SlotMemoryModel):
    """What VMA and its soft-attention baseline share: p(x | z, m), a decoder of z and a
    memory read m (VMA's slot m_a, the baseline's attention read r) plus the
    :class:`SkipPath` from m. Subclasses set ``net``, ``decoder``, ``skip`` and
    ``likelihood``."""

    def _decode(self, z, m):
        if self.net == "conv":
            params = self.decoder(z, m)
        else:
            params = self.decoder(_concat(z, m.flatten(-len(self.memory_shape))))
        return params + self.skip(m)

    def _typical_image(self, z, m):
        """The decoder's mean at (z, m), or a draw where it has no closed-form mean (the
        discretized logistic mixture): see :func:`~pyromem.nets.typical_image`."""
        return typical_image(self.likelihood(self._decode(z, m)))


class VMA(_DecoderOfSlot):
    """A VAE conditioned on a memory slot chosen by a discrete address ``"a"``.

    :param tuple input_shape: the shape of one image ``(C, H, W)``.
    :param int memory_size: |M| of the model's own memory; ``None`` when the
        memory is always passed as an argument (few-shot).
    :param str memory: ``"learned"`` (a parameter, initialised uniformly in
        [0, 1), trained with the model) or ``"fixed"`` (a buffer of ``memory_size`` slots,
        empty until :meth:`set_memory` fills it; ``memory_size`` is then required).
    :param tuple memory_shape: the shape of one slot (default ``input_shape``).
    :param int latent_dim: the width of z.
    :param int embedding_dim: the width of the matching space of S.
    :param tuple hidden: hidden widths of every MLP (for ``net="conv"``, of the
        MLPs on D's top features).
    :param str address: ``"enum"`` (enumerated in the guide), ``"vimco"``, ``"rws"``
        (sampled), ``"nvil"`` (sampled, with a learned baseline b(x) of the score
        function's learning signal on the guide's site) or ``"gumbel"`` (relaxed in
        training mode, discrete in eval mode).
    :param str similarity: ``"normalized"`` (eq. 5), ``"dot"`` or ``"cosine"``.
    :param str prior: ``"learned"`` (a query point e^p) or ``"flat"``.
    :param str likelihood: the likelihood head of x, e.g. ``"bernoulli"``.
    :param str net: ``"mlp"`` (MLPs of the flattened x and m_a) or ``"conv"``
        (§4.2's conv nets around one tied downscaling stack D, shared by
        h = h^q, q(z | x, m_a), p(z | m_a) and p(x | z, m_a); needs
        ``memory_shape == input_shape``).
    :param int channels: the feature maps of every conv layer (``net="conv"``;
        §4.2: 48 or 64).

    With ``net="conv"`` D runs on m_a in each of the three nets that read it;
    under enumeration that is |M| slots, not |M| × B pairs.

    With ``address="gumbel"`` and the module in training mode (``vma.train()``,
    as the engine sets it) a ~ ExpConcrete(τ, ·) in model and guide (Maddison et
    al. 2017; Jang et al. 2017) and every net reads the relaxed slot
    Σ_j softmax(a)_j m_j; ``vma.temperature`` is τ (the recipe anneals it). The
    address is a :class:`~pyromem.memory.addressing.ConcreteAddress`, whose KL is the
    categorical one: train with ``TraceMeanField_ELBO``. In eval mode the model is the
    discrete one, so its bounds are those of the other addresses.

    The slot embeddings h(M) are the only per-slot work of a sampled address. The
    guide's serve the model run next on the same memory tensor (every ELBO runs the
    guide, then the model replayed on it), so h runs once per step, not twice.

    ``model(x, memory=None, num_data=None)`` and ``guide(...)`` take images
    ``(B,) + input_shape`` and a memory ``(N,) + memory_shape`` (or ``None`` for
    the model's own). ``vma.config`` rebuilds the architecture: ``VMA(**vma.config)``.
    """

    def __init__(
        self,
        input_shape,
        memory_size=None,
        memory="learned",
        memory_shape=None,
        latent_dim=16,
        embedding_dim=64,
        hidden=(256, 128),
        address="enum",
        similarity="normalized",
        prior="learned",
        likelihood="bernoulli",
        net="mlp",
        channels=64,
    ):
        super().__init__(name=f"vma{next(_instances)}")
        if address not in ADDRESSING:
            raise ValueError(f"address: expected one of {ADDRESSING}, got {address!r}")
        check_memory_options(memory, memory_size)
        self.input_shape = as_shape(input_shape, "input_shape")
        self.memory_shape = (
            self.input_shape if memory_shape is None else as_shape(memory_shape, "memory_shape")
        )
        latent_dim, embedding_dim, hidden, channels = _check_widths(
            latent_dim, embedding_dim, hidden, channels
        )
        _check_net(net, self.input_shape, self.memory_shape)
        self.latent_dim, self.address, self.net = latent_dim, address, net
        self.config = {
            "input_shape": list(self.input_shape),
            "memory_size": memory_size,
            "memory": memory,
            "memory_shape": list(self.memory_shape),
            "latent_dim": latent_dim,
            "embedding_dim": embedding_dim,
            "hidden": list(hidden),
            "address": address,
            "similarity": similarity,
            "prior": prior,
            "likelihood": likelihood,
            "net": net,
            "channels": channels,
        }
        hidden = tuple(hidden)
        self.likelihood = make_likelihood(likelihood, self.input_shape)
        param_shape = self.likelihood.param_shape
        if net == "conv":
            # §4.2: one downscaling stack D, tied across all nets
            self.down = DownscalingStack(self.input_shape, channels)
            nets = _conv_nets(self.down, latent_dim, embedding_dim, hidden, param_shape)
        else:
            nets = _mlp_nets(
                self.input_shape, self.memory_shape, latent_dim, embedding_dim, hidden, param_shape
            )
        key_net, query_net, prior_net, encoder, decoder = nets
        # eq. 4-6: S(m_a, x) from the embeddings h(m_a) and h^q(x); p(a) shares h
        self.addressing = Addressing(key_net, query_net, embedding_dim, similarity, prior)
        # p(z | m_a) and q(z | x, m_a)
        self.prior_net, self.encoder = prior_net, encoder
        # p(x | z, m_a): a decoder of z and m_a plus a skip path from m_a
        self.decoder = decoder
        self.skip = SkipPath(self.memory_shape, param_shape)
        # NVIL: the learned baseline b(x) of the address's learning signal
        self.baseline = (
            nn.Sequential(_embedding_net(self.input_shape, 1, hidden), nn.Flatten(-2))
            if address == "nvil"
            else None
        )
        self.temperature = 1.0
        self._guide_keys = None
        self.init_memory(memory_size, memory)
        to_pyro_module_(self)

    def __getstate__(self):
        # the keys the guide hands to the model belong to one step's graph, not to the
        # model: copies and pickles leave them out
        state = dict(super().__getstate__())
        state["_guide_keys"] = None
        return state

    @property
    def temperature(self):
        """τ of the Gumbel-softmax relaxation (``address="gumbel"``): a positive float."""
        return self._temperature

    @temperature.setter
    def temperature(self, value):
        self._temperature = _check_temperature(value)

    @property
    def relaxed(self):
        """Whether the address is the Gumbel-softmax relaxation (``"gumbel"``, training mode)."""
        return self.address == "gumbel" and self.training

    def _inputs(self, x, memory, role=None):
        memory = super()._inputs(x, memory)
        cached, self._guide_keys = self._guide_keys, None
        state = (torch.is_grad_enabled(), self._key_versions(memory))
        if (
            role == "model"
            and cached is not None
            and cached[0] is memory
            and cached[1] == state
            and state[1] is not None
        ):
            return memory, cached[2]
        keys = self.addressing.keys(memory)
        if role == "guide":
            self._guide_keys = (memory, state, keys)
        return memory, keys

    def _key_versions(self, memory):
        """The version counters of the memory and of h's parameters: an in-place change to
        either (an optimiser's step between a guide and a model run apart) makes the guide's
        keys stale. ``None`` for tensors without one (made in inference mode)."""
        try:
            return (memory._version,) + tuple(
                p._version for p in self.addressing.key_net.parameters()
            )
        except RuntimeError:
            return None

    def _address(self, logits):
        """p(a | M) or q(a | x) from its logits: a categorical, or its relaxation."""
        if self.relaxed:
            return ConcreteAddress(logits.new_tensor(self.temperature), logits=logits)
        return InverseCDFCategorical(logits=logits)

    @staticmethod
    def _slot(memory, a):
        """m_a of a discrete address, or the relaxed slot Σ_j exp(a)_j m_j of a log-simplex a."""
        if not a.is_floating_point():
            return memory[a]
        read = a.exp() @ memory.flatten(1)
        return read.reshape(a.shape[:-1] + memory.shape[1:])

    def _encode(self, x, m_a):
        """(loc, scale) of q(z | x, m_a)."""
        if self.net == "conv":
            return self.encoder(x, m_a)
        m_flat = m_a.flatten(-len(self.memory_shape))
        return self.encoder(_concat(x.flatten(-len(self.input_shape)), m_flat))

    @pyro_program
    def model(self, x, memory=None, num_data=None):
        """p(x, z, a | M) over a batch of B images out of ``num_data`` (eq. 1)."""
        memory, keys = self._inputs(x, memory, role="model")
        prior_logits = self.addressing.prior_logits(keys)
        with data_plate(x, num_data):
            # a ~ p(a | M)
            # normalised once over the slots, then broadcast to the batch without copies
            a = pyro.sample("a", self._address(prior_logits).expand((len(x),)))
            m_a = self._slot(memory, a)
            # z ~ p(z | m_a)
            z = pyro.sample("z", dist.Normal(*self.prior_net(m_a)).to_event(1))
            # x ~ p(x | z, m_a)
            pyro.sample("x", self.likelihood(self._decode(z, m_a)), obs=x)

    @pyro_program
    def guide(self, x, memory=None, num_data=None):
        """q(a | x) q(z | x, m_a) (eq. 3-6); the address enumerated, sampled or relaxed."""
        memory, keys = self._inputs(x, memory, role="guide")
        infer = {}
        if self.address == "enum":
            infer = {"enumerate": "parallel"}
        elif self.address == "nvil":
            infer = {"baseline": {"nn_baseline": self.baseline, "nn_baseline_input": x}}
        with data_plate(x, num_data):
            # a ~ q(a | x) ∝ exp S(m_a, x)
            logits = self.addressing.posterior_logits(keys, x)
            a = pyro.sample("a", self._address(logits), infer=infer)
            m_a = self._slot(memory, a)
            # z ~ q(z | x, m_a)
            pyro.sample("z", dist.Normal(*self._encode(x, m_a)).to_event(1))

    def address_posterior(self, x, memory=None):
        """q(a | x), shape ``(B, N)``."""
        memory, keys = self._inputs(x, memory)
        return self.addressing.posterior_logits(keys, x).softmax(-1)

    def slot_weights(self, x, memory=None):
        """q(a | x), shape ``(B, N)``: how much each slot serves each image."""
        return self.address_posterior(x, memory)

    def address_prior(self, memory=None):
        """p(a | M), shape ``(N,)``."""
        memory = self.resolve_memory(memory)
        return self.addressing.prior_logits(self.addressing.keys(memory)).softmax(-1)

    def reconstruct(self, x, memory=None):
        """The decoder's mean at the most probable slot and the encoder's mean (a draw for
        the logistic mixture), shape of ``x``."""
        memory, keys = self._inputs(x, memory)
        m_a = memory[self.addressing.posterior_logits(keys, x).argmax(-1)]
        loc, _ = self._encode(x, m_a)
        return self._typical_image(loc, m_a)

    def generate(self, num_samples, memory=None, *, slot=None):
        """Decoder means at draws a ~ p(a | M) (or the given ``slot``), z ~ p(z | m_a)
        (a draw from the decoder for the logistic mixture).

        :param int num_samples: the number of images.
        :param torch.Tensor memory: ``(|M|,) + memory_shape``, or ``None`` for the model's own.
        :param int slot: read this slot, in [0, |M|), for every image instead of drawing
            a ~ p(a | M).
        :returns: ``(num_samples,) + input_shape``.
        """
        num_samples = as_positive_int(num_samples, "num_samples")
        memory = self.resolve_memory(memory)
        if slot is not None:
            slot = _check_slot(slot, len(memory))
        if slot is None:
            a = dist.Categorical(self.address_prior(memory)).sample((num_samples,))
        else:
            a = torch.full((num_samples,), slot, dtype=torch.long, device=memory.device)
        m_a = memory[a]
        loc, scale = self.prior_net(m_a)
        return self._typical_image(loc + scale * torch.randn_like(loc), m_a)


class SoftAttentionVAE(_DecoderOfSlot):
    """§4.2's soft-attention baseline: the memory is read by attention from z.

    The attention weights may depend only on the generative model's variables,
    so z is the top-level latent:

        z ~ N(0, I),  r(z) = Σ_a w_a(z) m_a,  w(z) = softmax_a S(m_a, g(z)),
        x | z ~ p(x | z, r(z)),

    with q(z | x) = N(μ(x), diag σ(x)²). The nets are those of :class:`VMA`:
    the key net h of S, an MLP g from z to the matching space, and the decoder
    of [z, r] with the same :class:`SkipPath` from r, so that the only
    difference is the read: a differentiable Σ_a w_a m_a in place of a slot
    m_a chosen by a discrete address. The read is O(|M|) per image and needs
    no estimator for a discrete latent (train with ``Trace_ELBO``).

    :param tuple input_shape: the shape of one image ``(C, H, W)``.
    :param int memory_size: |M| of the model's own memory; ``None`` when the
        memory is always passed as an argument (few-shot).
    :param str memory: ``"learned"`` (a parameter) or ``"fixed"`` (a buffer, empty until
        :meth:`set_memory` fills it).
    :param int latent_dim: the width of z.
    :param int embedding_dim: the width of the matching space of S.
    :param tuple hidden: hidden widths of every MLP.
    :param str similarity: ``"normalized"`` (eq. 5), ``"dot"`` or ``"cosine"``.
    :param str likelihood: the likelihood head of x, e.g. ``"bernoulli"``.
    :param str net: ``"mlp"`` or ``"conv"``, as for :class:`VMA`: with ``"conv"``
        the tied stack D embeds the slots for h, x for q(z | x) and the read r
        for the decoder's skip connections.
    :param int channels: the feature maps of every conv layer (``net="conv"``).

    ``model(x, memory=None, num_data=None)`` and ``guide(...)`` as for :class:`VMA`;
    ``SoftAttentionVAE(**model.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        input_shape,
        memory_size=None,
        memory="learned",
        latent_dim=16,
        embedding_dim=64,
        hidden=(256, 128),
        similarity="normalized",
        likelihood="bernoulli",
        net="mlp",
        channels=64,
    ):
        super().__init__(name=f"soft_attention{next(_instances)}")
        check_memory_options(memory, memory_size)
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {similarity!r}")
        self.input_shape = self.memory_shape = as_shape(input_shape, "input_shape")
        latent_dim, embedding_dim, hidden, channels = _check_widths(
            latent_dim, embedding_dim, hidden, channels
        )
        _check_net(net, self.input_shape, self.memory_shape)
        self.latent_dim, self.similarity, self.net = latent_dim, similarity, net
        self.config = {
            "input_shape": list(self.input_shape),
            "memory_size": memory_size,
            "memory": memory,
            "latent_dim": latent_dim,
            "embedding_dim": embedding_dim,
            "hidden": list(hidden),
            "similarity": similarity,
            "likelihood": likelihood,
            "net": net,
            "channels": channels,
        }
        hidden = tuple(hidden)
        self.likelihood = make_likelihood(likelihood, self.input_shape)
        param_shape = self.likelihood.param_shape
        if net == "conv":
            # §4.2: VMA's tied stack D embeds the slots, x and the read r
            self.down = DownscalingStack(self.input_shape, channels)
            top = self.down.top_features
            self.key_net = _on_top(self.down, MLP(top, (embedding_dim,), hidden))
            self.query_net = MLP(latent_dim, (embedding_dim,), hidden)
            self.encoder = _on_top(self.down, MLPEncoder((top,), latent_dim, hidden))
            self.decoder = ConvMemoryDecoder(self.down, latent_dim, param_shape)
        else:
            # w(z) = softmax_a S(m_a, g(z)) with VMA's key net h
            self.key_net = _embedding_net(self.memory_shape, embedding_dim, hidden)
            self.query_net = MLP(latent_dim, (embedding_dim,), hidden)
            # q(z | x)
            self.encoder = MLPEncoder(self.input_shape, latent_dim, hidden)
            # p(x | z, r): VMA's decoder of [z, r]
            dim = math.prod(self.input_shape)
            self.decoder = MLPDecoder(latent_dim + dim, param_shape, tuple(reversed(hidden)))
        # the skip path from r, as VMA's from m_a
        self.skip = SkipPath(self.memory_shape, param_shape)
        self.init_memory(memory_size, memory)
        to_pyro_module_(self)

    def _weights(self, z, memory):
        query = self.query_net(z)
        return similarity(self.key_net(memory), query, self.similarity).softmax(-1)

    def _read(self, z, memory):
        read = self._weights(z, memory) @ memory.flatten(1)
        return read.reshape(read.shape[:-1] + self.memory_shape)

    @pyro_program
    def model(self, x, memory=None, num_data=None):
        """p(x, z | M) with the attention read r(z)."""
        memory = self._inputs(x, memory)
        with data_plate(x, num_data):
            # z ~ N(0, I)
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            # x ~ p(x | z, r(z))
            pyro.sample("x", self.likelihood(self._decode(z, self._read(z, memory))), obs=x)

    @pyro_program
    def guide(self, x, memory=None, num_data=None):
        """q(z | x)."""
        self._inputs(x, memory)
        with data_plate(x, num_data):
            pyro.sample("z", dist.Normal(*self.encoder(x)).to_event(1))

    def read_weights(self, x, memory=None):
        """The attention weights w(z) at the mean of q(z | x), shape ``(B, N)``."""
        memory = self._inputs(x, memory)
        loc, _ = self.encoder(x)
        return self._weights(loc, memory)

    def slot_weights(self, x, memory=None):
        """The read weights at the mean of q(z | x), shape ``(B, N)``: this model has no
        address, and these stand for q(a | x) in slot counts and classification."""
        return self.read_weights(x, memory)

    def generate(self, num_samples, memory=None):
        """Decoder means at draws z ~ N(0, I), each reading the whole memory (a draw from
        the decoder for the logistic mixture).

        :param int num_samples: the number of images.
        :param torch.Tensor memory: ``(|M|,) + memory_shape``, or ``None`` for the model's own.
        :returns: ``(num_samples,) + input_shape``.
        """
        num_samples = as_positive_int(num_samples, "num_samples")
        memory = self.resolve_memory(memory)
        z = torch.randn(
            num_samples,
            self.latent_dim,
            dtype=parameter_dtype(self),
            device=parameter_device(self),
        )
        return self._typical_image(z, self._read(z, memory))
