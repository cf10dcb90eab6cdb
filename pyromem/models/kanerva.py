"""Kanerva++ (Ramapuram et al. 2021): a deterministic block memory read through stochastic keys.

For each episode X = {x_t}, t = 1..T, of exchangeable images (§3.1):

    E   = f_enc(X)                                   an embedding per image
    M   = f_mem(pool_T E)                            a deterministic C×H×W memory (§3.3, eq. 5)
    y_tk ~ p(y) = N(0, I_3),  k = 1..K               K keys per image (§3.4)
    M̂_t = {f_ST(M, y_tk)}_k                          K blocks read by a spatial transformer
                                                     (eq. 5, App. A)
    z_t ~ p_θ(z | M̂_t, y_t)                          the learned readout prior (eq. 4)
    x_t ~ p_θ(x | z_t)                               a decoder and a likelihood head

Guide (§3.3, §3.5): q_φ(y_t | X) = N(μ_key(E_t), σ_key(E_t)) (eq. 6) and the
amortised q_φ(z_t | X) = N(μ(E_t), σ(E_t)) from the embedding. The ELBO that
any Pyro objective computes on this pair is the conditional bound L_T of eq. 4:
the expected log-likelihood of the decoder, minus E_q(y) KL[q(z|X) ‖ p(z|M̂, y)],
minus KL[q(y|X) ‖ p(y)], each a sum over the T images of the episode.

Plates: an episode is one datapoint of the data plate, which scales a batch of
B episodes to ``num_data`` episodes; inside it the plate ``"episode"`` runs over
its T images. Per-episode diagnostics are sums over T images, so the bound per
image is the per-episode bound divided by T, once.

The dense-write ablation of §4.2 (``write="dense"``) keeps everything but the
memory: the writer is a dense net to a vector of the same size, and the
readout prior a dense net on that vector and the keys. The plain VAE of the
same encoder and decoder (``write="none"``) has neither memory nor keys: each
image of the episode is a VAE with prior p(z) = N(0, I) and guide q(z | X).
"""

import functools
import itertools
import math
import warnings

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn

from pyromem.checks import (
    as_float_tensor,
    as_positive_int,
    as_shape,
    as_sizes,
    check_device,
    flatten_batch,
    parameter_dtype,
)
from pyromem.data.validation import check_images
from pyromem.memory import spatial_read
from pyromem.memory.spatial_read import KEY_SCALE, KEY_SIZE, check_key_scale
from pyromem.models.methods import pyro_program
from pyromem.models.plates import data_plate
from pyromem.nets import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    ConvTrunk,
    MLPEncoder,
    ResNet18TSM,
    make_likelihood,
    typical_image,
)

WRITES = ("block", "dense", "none")
ENCODERS = ("conv", "resnet18-tsm")
_instances = itertools.count()


def _old_generate_call_form(generate):
    """Keep the old call ``generate(memory, num_samples=1, keys=None)`` for one release: it
    warns and returns ``(images, keys)`` as before. The new form is
    ``generate(num_samples, memory, keys=None)``, which returns the images only."""

    @functools.wraps(generate)
    def dispatch(self, *args, **kwargs):
        if not (args and isinstance(args[0], torch.Tensor)):
            return generate(self, *args, **kwargs)
        warnings.warn(
            "KanervaPlusPlus.generate(memory, ...) is deprecated: call "
            "generate(num_samples, memory, keys=...), and sample_keys(memory, num_samples) "
            "for the keys",
            DeprecationWarning,
            stacklevel=2,
        )
        if len(args) > 3:
            raise TypeError(f"generate(memory, num_samples, keys) got {len(args)} arguments")
        old = dict(zip(("memory", "num_samples", "keys"), args, strict=False))
        old.update(kwargs)
        memory, keys = old["memory"], old.get("keys")
        self._require_memory("generate")
        if keys is None:
            keys = self.sample_keys(memory, old.get("num_samples", 1))
        return generate(self, keys.shape[1] if keys.dim() > 1 else 1, memory, keys=keys), keys

    return dispatch


class KanervaPlusPlus(PyroModule):
    """Kanerva++ over episodes ``x`` of shape ``(B, T) + image_shape``, ``T >= 2``.

    :param tuple image_shape: the shape ``(C, H, W)`` of one image.
    :param int latent_dim: L, the width of z.
    :param tuple memory_shape: the memory's shape ``(C_m, H_m, W_m)``.
    :param tuple block_shape: ``(h, w)`` of each read, at most ``(H_m, W_m)``.
    :param int reads: K, the number of keys and blocks read per image (2 in the paper).
    :param str likelihood: ``"bernoulli"`` (binarised data) or
        ``"discretized_logistic_mixture"`` (8-bit data), or any name of
        :func:`~pyromem.nets.make_likelihood`.
    :param str write: ``"block"`` (K++), ``"dense"`` (the dense-write ablation of §4.2)
        or ``"none"`` (the plain VAE of the same encoder and decoder: no memory, no keys).
    :param int embed_dim: the width of the embedding E and of the hidden dense layers.
    :param str encoder: f_enc, ``"conv"`` (a convolutional stack) or ``"resnet18-tsm"``
        (the paper's ResNet-18 with a temporal shift along the episode, §3.3, App. E;
        :class:`~pyromem.nets.ResNet18TSM`, whose stages are ``channels[0]`` × (1, 2, 4, 8)
        wide).
    :param tuple channels: the convolutions of the ``"conv"`` encoder (default
        ``(32, 64)``); for ``"resnet18-tsm"`` a one-element tuple, the width of its first
        stage (default ``(64,)``, the paper's ResNet-18).
    :param dict likelihood_kwargs: options of the likelihood head.
    :param float key_scale: the key that moves a block read by tanh(1) ≈ 76 % of its
        range (:func:`~pyromem.memory.spatial_read`); 3 prior standard deviations by
        default. Block writes only: the dense prior takes the keys as they are.

    The encoder f_enc is a :class:`~pyromem.nets.ConvTrunk` (or the ResNet-18 with
    temporal shift) followed by a LayerNorm of the embedding,
    q(z | X) a linear Gaussian head on it, and the decoder a
    :class:`~pyromem.nets.ConvDecoder`. The paper normalises its encoder with
    BatchNorm (App. E); a LayerNorm normalises each image on its own, so the bound
    of an episode never depends on the other episodes of a batch, in training or in
    evaluation. Without it the embedding varies across images by about 0.01 at
    initialisation, the writer's biases dominate the memory, and short trainings
    stay at the mean image. ``write="none"`` keeps these nets and drops memory and
    keys: the plain VAE that the baselines compare K++ with.
    ``config`` holds the constructor's arguments, so ``KanervaPlusPlus(**config)``
    rebuilds the architecture.
    """

    def __init__(
        self,
        image_shape,
        latent_dim=16,
        memory_shape=(3, 16, 16),
        block_shape=(8, 8),
        reads=2,
        likelihood="bernoulli",
        write="block",
        embed_dim=256,
        channels=None,
        likelihood_kwargs=None,
        encoder="conv",
        key_scale=KEY_SCALE,
    ):
        # a name of its own keeps two models from sharing parameters in Pyro's param store
        super().__init__(name=f"kpp{next(_instances)}")
        if write not in WRITES:
            raise ValueError(f"write must be one of {WRITES}, got {write!r}")
        self.image_shape = as_shape(image_shape, "image_shape", ndim=3)
        self.latent_dim = as_positive_int(latent_dim, "latent_dim")
        self.memory_shape = as_shape(memory_shape, "memory_shape", ndim=3)
        self.block_shape = tuple(as_shape(block_shape, "block_shape", ndim=2))
        if any(b > m for b, m in zip(self.block_shape, self.memory_shape[1:], strict=True)):
            raise ValueError(
                f"memory_shape {tuple(self.memory_shape)} cannot hold blocks of block_shape "
                f"{self.block_shape}: the memory's height and width must be at least the block's"
            )
        self.reads = as_positive_int(reads, "reads")
        self.key_scale = check_key_scale(key_scale)
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
        if channels is None:
            channels = (32, 64) if encoder == "conv" else (64,)
        channels = as_sizes(channels, "channels")
        if not channels:
            raise ValueError("channels must hold at least one width, got ()")
        if encoder == "resnet18-tsm" and len(channels) != 1:
            raise ValueError(
                "the resnet18-tsm encoder takes channels=(width,), the width of its first "
                f"stage, got {tuple(channels)}"
            )
        self.write_kind = write
        self.encoder_kind = encoder
        embed_dim = as_positive_int(embed_dim, "embed_dim")
        self.config = {
            "image_shape": list(self.image_shape),
            "latent_dim": self.latent_dim,
            "memory_shape": list(self.memory_shape),
            "block_shape": list(self.block_shape),
            "reads": self.reads,
            "likelihood": likelihood,
            "write": write,
            "embed_dim": embed_dim,
            "channels": list(channels),
            "likelihood_kwargs": dict(likelihood_kwargs or {}),
            "encoder": encoder,
            "key_scale": self.key_scale,
        }
        self.likelihood = make_likelihood(likelihood, self.image_shape, **(likelihood_kwargs or {}))

        # f_enc to features of width embed_dim, normalised per image (App. E normalises
        # the encoder; see the class docstring)
        if encoder == "conv":
            self.encoder = ConvTrunk(self.image_shape, channels, features=embed_dim)
            # Before issue 16 the trunk was taken from a ConvEncoder whose Gaussian head was
            # built and dropped; drawing that head's initial weights again keeps seeded models,
            # and the figures in docs/models/kanerva.md, as they were.
            nn.Linear(embed_dim, 2)
        else:
            self.encoder = ResNet18TSM(self.image_shape, embed_dim, base_width=channels[0])
        self.embedding_norm = nn.LayerNorm(embed_dim)
        # q(z | X) and, with a memory, q(y | X) of eq. 6: Gaussian heads on the embedding
        self.posterior = MLPEncoder((embed_dim,), self.latent_dim, hidden=())
        if write != "none":
            self.key_net = MLPEncoder((embed_dim,), self.reads * KEY_SIZE, hidden=(embed_dim,))
        memory_size = math.prod(self.memory_shape)
        if write == "block":
            # f_mem: a conv-transpose net from the pooled embedding to the memory
            self.writer = ConvDecoder(embed_dim, self.memory_shape, hidden=embed_dim)
            # p(z | M̂, y): a conv net over the K reads stacked on channels (App. E)
            h, w = self.block_shape
            prior_channels = tuple(c for i, c in enumerate((32, 64)) if min(h, w) >= 2 ** (i + 1))
            self.prior = ConvEncoder(
                (self.reads * self.memory_shape[0], h, w),
                self.latent_dim,
                prior_channels,
                hidden=embed_dim,
            )
        elif write == "dense":
            # §4.2: a dense writer of the same size, and a dense readout prior
            self.writer = MLP(embed_dim, (memory_size,), hidden=(embed_dim,))
            self.prior = MLPEncoder(
                (memory_size + self.reads * KEY_SIZE,), self.latent_dim, hidden=(embed_dim,)
            )
        self.decoder = ConvDecoder(self.latent_dim, self.likelihood.param_shape)
        to_pyro_module_(self)

    # ---- the parts of the generative story ------------------------------------------

    def embed(self, x):
        """E = f_enc(X): episodes ``batch_shape + (T,) + image_shape`` to
        ``batch_shape + (T, embed_dim)``; the ResNet-18-TSM encoder mixes the T images."""
        if self.encoder_kind == "resnet18-tsm":
            return self.embedding_norm(self.encoder(x))
        flat, batch_shape = flatten_batch(x, self.image_shape, "x")
        features = self.embedding_norm(self.encoder(flat))
        return features.reshape(batch_shape + features.shape[1:])

    def write(self, x):
        """The memory M = f_mem(pool_T f_enc(X)) of episodes ``x`` ``(B, T, C, H, W)`` (eq. 5).

        :returns: ``(B,) + memory_shape``, or ``(B, prod(memory_shape))`` for ``write="dense"``.
        """
        self._require_memory("write")
        return self._write(self.embed(self._check(x)))

    def _write(self, embedding):
        return self.writer(embedding.mean(-2))

    def readout_prior(self, memory, keys):
        """p(z | M̂, y): the learned prior of the readout (eq. 4, App. E).

        :param torch.Tensor memory: ``(B,) + memory_shape`` (``(B, D)`` for dense writes).
        :param torch.Tensor keys: ``batch_shape + (B, K, 3)``; ``batch_shape`` may
            hold particles and the episode's images.
        :returns: a Normal with batch shape ``batch_shape + (B,)`` and event shape ``(L,)``.
        :raises ValueError: if ``memory`` or ``keys`` has the wrong shape, or holds NaN
            (the block read would turn a NaN key into a plausible prior), or, for dense
            writes, infinite values.
        """
        self._require_memory("readout_prior")
        batch = self._check_memory(memory)
        if self._check_tensor(keys, "keys").dim() < 3 or keys.shape[-3:] != (
            batch,
            self.reads,
            KEY_SIZE,
        ):
            raise ValueError(
                f"keys must have shape (..., {batch}, {self.reads}, {KEY_SIZE}) for a memory of "
                f"{batch} episodes, got {tuple(keys.shape)}"
            )
        return self._readout_prior(memory, self._check_key_values(keys))

    def _readout_prior(self, memory, keys):
        if self.write_kind == "block":
            # ... × B × K × C × h × w; the public methods have checked the keys a user
            # passes, and reading the model's own keys for NaN would sync every step
            reads = spatial_read(memory, keys, self.block_shape, self.key_scale, check_values=False)
            loc, scale = self.prior(reads.flatten(-4, -3))
        else:
            memory = memory.expand(keys.shape[:-2] + memory.shape[-1:])
            loc, scale = self.prior(torch.cat([memory, keys.flatten(-2)], -1))
        return dist.Normal(loc, scale).to_event(1)

    def key_posterior(self, embedding):
        """q(y | X) = N(μ_key(E), σ_key(E)), eq. 6; batch ``embedding.shape[:-1]``, event (K, 3)."""
        self._require_memory("key_posterior")
        loc, scale = self.key_net(embedding)
        shape = loc.shape[:-1] + (self.reads, KEY_SIZE)
        return dist.Normal(loc.reshape(shape), scale.reshape(shape)).to_event(2)

    def latent_posterior(self, embedding):
        """q(z | X) = N(μ(E), σ(E)), batch ``embedding.shape[:-1]``, event (L,)."""
        loc, scale = self.posterior(embedding)
        return dist.Normal(loc, scale).to_event(1)

    def decode(self, z):
        """p(x | z) for latents ``batch_shape + (L,)``."""
        return self.likelihood(self.decoder(z))

    # ---- model and guide -------------------------------------------------------------

    @pyro_program
    def model(self, x, num_data=None):
        """p(X, Y, Z | M) of eq. 4 for B episodes ``(B, T, C, H, W)`` out of ``num_data``.

        Sites ``"y"``, ``"z"`` and ``"x"`` are time-major, ``(T, B, ...)``: the data
        plate is dim -1 and the plate ``"episode"`` over T images dim -2.
        """
        x = self._check(x)
        if self.write_kind == "none":
            return self._plain_model(x, num_data)
        embedding = self.embed(x)
        with data_plate(x, num_data):
            # eq. 5: M = f_mem(pool_T f_enc(X)), deterministic
            memory = pyro.deterministic(
                "memory", self._write(embedding), event_dim=len(self._memory_event_shape)
            )
            with pyro.plate("episode", x.shape[1], dim=-2):
                # §3.4: K keys y_tk ~ p(y) = N(0, I) in R³
                y = pyro.sample(
                    "y", dist.Normal(x.new_zeros(self.reads, KEY_SIZE), 1.0).to_event(2)
                )
                # eq. 5 and 4: read M̂ = {f_ST(M, y_tk)}, then z_t ~ p(z | M̂, y)
                z = pyro.sample("z", self._readout_prior(memory, y))
                # eq. 4: the decoder p(x_t | z_t)
                pyro.sample("x", self.decode(z), obs=x.transpose(0, 1))

    def _plain_model(self, x, num_data):
        # write="none": the plain VAE p(z) p(x | z) per image, with the same plates
        with data_plate(x, num_data), pyro.plate("episode", x.shape[1], dim=-2):
            prior = dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", self.decode(z), obs=x.transpose(0, 1))

    @pyro_program
    def guide(self, x, num_data=None):
        """q(Y | X) q(Z | X), both amortised from the embedding of each image (eq. 6, §3.5)."""
        x = self._check(x)
        embedding = self.embed(x).transpose(0, 1)  # (T, B, embed_dim)
        with data_plate(x, num_data), pyro.plate("episode", x.shape[1], dim=-2):
            if self.write_kind != "none":
                pyro.sample("y", self.key_posterior(embedding))
            pyro.sample("z", self.latent_posterior(embedding))

    # ---- reading, generating, cleaning up ----------------------------------------------

    def reconstruct(self, x):
        """The decoder's mean at the mean of q(z | X) (a draw for the logistic mixture)."""
        return typical_image(self.decode(self.latent_posterior(self.embed(self._check(x))).mean))

    def sample_keys(self, memory, num_samples=1):
        """Keys y ~ p(y) = N(0, I_3), K per image, for ``num_samples`` images per memory (§3.4).

        :param torch.Tensor memory: ``(B,) + memory_shape``; the keys follow its device and dtype.
        :param int num_samples: S, images per memory.
        :returns: ``(B, S, K, 3)``.
        """
        num_samples = as_positive_int(num_samples, "num_samples")
        batch = self._check_memory(memory)
        return memory.new_empty(batch, num_samples, self.reads, KEY_SIZE).normal_()

    @_old_generate_call_form
    def generate(self, num_samples=1, memory=None, *, keys=None):
        """Images read from a memory through random keys y ~ p(y) or given keys (§3.4, §4.1.1).

        Key-perturbed generation passes ``keys = y + ε`` with ``ε ~ N(0, 0.1²)``, where ``y``
        comes from :meth:`sample_keys` or the guide.

        :param int num_samples: S, images per memory.
        :param torch.Tensor memory: ``(B,) + memory_shape``, e.g. from :meth:`write`; required.
        :param torch.Tensor keys: ``(B, S, K, 3)``, or None to draw them from p(y).
        :returns: ``(B, S, C, H, W)``, decoder means at a draw z ~ p(z | M̂, y) (a draw
            for the logistic mixture).
        :raises ValueError: if ``memory`` or ``keys`` has the wrong shape, or ``keys``
            holds NaN (or, for dense writes, infinite values).
        """
        self._require_memory("generate")
        if memory is None:
            raise ValueError("generate needs a memory: pass memory=kpp.write(x)")
        num_samples = as_positive_int(num_samples, "num_samples")
        batch = self._check_memory(memory)
        if keys is None:
            keys = self.sample_keys(memory, num_samples)
        elif (
            self._check_tensor(keys, "keys").dim() != 4
            or keys.shape[0] != batch
            or keys.shape[2:] != (self.reads, KEY_SIZE)
        ):
            raise ValueError(
                f"keys must have shape ({batch}, S, {self.reads}, {KEY_SIZE}), "
                f"got {tuple(keys.shape)}"
            )
        elif keys.shape[1] != num_samples:
            raise ValueError(
                f"keys hold {keys.shape[1]} samples per memory but num_samples is {num_samples}"
            )
        else:
            self._check_key_values(keys)
        z = self._readout_prior(memory, keys.transpose(0, 1)).sample()
        return typical_image(self.decode(z)).transpose(0, 1)

    def iterative_read(self, x, memory, steps=10):
        """Clean up images with the memory fixed (§3.5, eq. 7).

        Each step draws y* ~ q(y | x̂), z ~ p(z | M̂, y*) and sets x̂ to the decoder's
        mean at z (a draw for the logistic mixture).

        :param torch.Tensor x: ``(B, N, C, H, W)``, N noisy or partial images per memory.
        :param torch.Tensor memory: ``(B,) + memory_shape``.
        :param int steps: the number of read steps.
        :returns: ``(steps + 1, B, N, C, H, W)``, the input first.
        """
        self._require_memory("iterative_read")
        batch = self._check_memory(memory)
        if self._check_tensor(x, "x").dim() != 5 or x.shape[0] != batch:
            raise ValueError(
                f"x must have shape ({batch}, N, {', '.join(map(str, self.image_shape))})"
                f" for a memory of {batch} episodes, got {tuple(x.shape)}"
            )
        # noisy or partial images: any values of the likelihood's range, not only its support
        check_images(
            x,
            self.image_shape,
            "real" if self.likelihood.support == "real" else "unit_interval",
            check_values=is_validation_enabled(),
            dtype=parameter_dtype(self),
        )
        sequence = [x]
        x_hat = x.transpose(0, 1)  # (N, B, ...) broadcasts against the memory's (B, ...)
        for _ in range(as_positive_int(steps, "steps")):
            # the N images of a memory are embedded as one episode
            embedding = self.embed(x_hat.transpose(0, 1)).transpose(0, 1)
            keys = self.key_posterior(embedding).sample()
            x_hat = typical_image(self.decode(self._readout_prior(memory, keys).sample()))
            sequence.append(x_hat.transpose(0, 1))
        return torch.stack(sequence)

    # ---- checks ------------------------------------------------------------------------

    def _require_memory(self, method):
        if self.write_kind == "none":
            raise ValueError(
                f"{method} needs a memory; this model is the plain VAE of K++'s nets "
                "(write='none'), which has none"
            )

    def _check_tensor(self, value, name):
        """``value`` if it is a floating-point tensor of the model's dtype and device."""
        as_float_tensor(value, name)
        like = next(self.parameters())
        if value.dtype != like.dtype:
            raise TypeError(
                f"{name} is {value.dtype} but the model's parameters are {like.dtype}: convert "
                f"one to the other, e.g. {name}.to({like.dtype})"
            )
        check_device(value, name, like.device)
        return value

    def _check_key_values(self, keys):
        """``keys`` a user passed, unless they hold NaN, which a block read would turn into a
        plausible read, or infinite values, which the dense prior cannot take (a block read
        squashes them to the memory's border). Not for the keys the model draws itself:
        reading them would sync every step."""
        if self.write_kind == "block":
            bad, expected, got = keys.isnan(), "must not hold NaN", "NaN"
        else:
            bad, expected, got = ~keys.isfinite(), "must be finite", "NaN or infinity"
        if bad.any():
            raise ValueError(
                f"keys {expected}, got {got} in {int(bad.sum())} of {keys.numel()} values"
            )
        return keys

    def _check_memory(self, memory):
        """Raise unless ``memory`` is a finite batch ``(B,) + memory shape`` of the model's
        dtype and device, as :meth:`write` returns; return B."""
        shape = self._memory_event_shape
        self._check_tensor(memory, "memory")
        if memory.dim() != len(shape) + 1 or tuple(memory.shape[1:]) != shape:
            raise ValueError(
                f"memory must have shape (B,) + {shape}, one memory per episode as write(x) "
                f"returns, got {tuple(memory.shape)}"
            )
        if memory.shape[0] == 0:
            raise ValueError(f"memory is an empty batch (shape {tuple(memory.shape)})")
        if not torch.isfinite(memory.detach().sum()) and not torch.isfinite(memory).all():
            raise ValueError("memory contains NaN or infinite values")
        return memory.shape[0]

    @property
    def _memory_event_shape(self):
        if self.write_kind == "block":
            return tuple(self.memory_shape)
        return (math.prod(self.memory_shape),)

    def _check(self, x):
        if isinstance(x, torch.Tensor) and x.dim() != 5:
            raise ValueError(
                f"x must be episodes of shape (B, T, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(x.shape)}"
            )
        check_images(
            x,
            self.image_shape,
            self.likelihood.support,
            check_values=is_validation_enabled(),
            dtype=parameter_dtype(self),
        )
        if x.shape[1] < 2:
            raise ValueError(
                f"episodes must hold at least 2 images (T >= 2), got T = {x.shape[1]}: a memory "
                "written from one image only copies it"
            )
        return x
