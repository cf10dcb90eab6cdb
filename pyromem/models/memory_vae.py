r"""The memory-conditioned generative model of Annabi et al. (2022, §3-4) as a Pyro program.

A memory of N stored latent patterns :math:`M_1, \dots, M_N` (the encodings of N images) is the
prior of the code; a trained VAE's decoder generates the image:

    z_n ~ p(z; M) = Σ_k π_k N(z; M_k, Σ)          (eq. 9 balanced, eq. 5-6 Hopfield)
    x_n | z_n ~ p_θ(x | z_n)                      (the VAE's decoder and likelihood, eq. 3)

Retrieval is inference of z given a query x: the amortised guide is the VAE's encoder, and the
guides of :mod:`pyromem.infer` refine its answer (VAE-GMM, VAE-BP-GMM, VAE-PC-GMM, VAE-GMM*).
"""

import itertools
import math
import numbers

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from torch import nn

from pyromem.checks import (
    as_float_tensor,
    as_positive_int,
    check_device,
    check_dtype,
    parameter_device,
    parameter_dtype,
)
from pyromem.data.validation import check_images
from pyromem.memory import GaussianMixtureMemory
from pyromem.models.methods import pyro_program
from pyromem.models.plates import data_plate
from pyromem.models.slot_memory import (
    SlotMemoryModel,
    check_memory,
)
from pyromem.models.vae import VAE
from pyromem.nets import typical_image

_instances = itertools.count()


class MemoryVAE(SlotMemoryModel):
    """z ~ GaussianMixtureMemory(M) (eq. 9, or eq. 5-6), x ~ p(x | z) with a trained VAE's
    decoder.

    :param VAE vae: a trained :class:`~pyromem.models.VAE`; its decoder is the likelihood and
        its guide the amortised guide.
    :param torch.Tensor memory: the stored latent patterns, shape ``(N, d)`` with d the VAE's
        latent width, finite, of the dtype and on the device of the VAE's parameters, or
        ``None`` to :meth:`write` them later.
    :param float scale: the isotropic σ of the mixture components (Σ = σ² I); ``None``: 1.0
        when no ``precision`` is given. Not with ``precision``.
    :param str weights: ``"balanced"`` (eq. 9) or ``"hopfield"`` (eq. 6).
    :param float beta: the Hopfield inverse temperature (default 1/σ², eq. 5).
    :param torch.Tensor precision: a diagonal precision P of shape ``(d,)``, or a full one
        ``(d, d)``, instead of σ (VAE-GMM*, eq. 12), e.g. the one
        :class:`~pyromem.infer.LearnedPrecisionRetrieval` learned; of the dtype and on the
        device of the VAE's parameters.

    ``model(x)`` and ``guide(x)`` take images of shape ``(B,) + vae.input_shape``.

    :raises TypeError: if ``memory`` or ``precision`` is not a floating-point tensor of the
        dtype of the VAE's parameters.
    :raises ValueError: if ``memory`` or ``precision`` has the wrong shape, is on another
        device than the VAE's parameters, ``memory`` holds NaN or infinite values, or both
        ``scale`` and ``precision`` are given.
    """

    memory_filled_by = "write(images)"

    def __init__(self, vae, memory=None, scale=None, weights="balanced", beta=None, precision=None):
        super().__init__(name=f"memory_vae{next(_instances)}")
        if not isinstance(vae, VAE):
            raise TypeError(f"vae must be a pyromem.models.VAE, got {type(vae).__name__}")
        # A plain child keeps the VAE's own Pyro name and context: PyroModule.add_module would
        # rename a trained VAE's parameters in the param store, and refuses one that has run.
        nn.Module.add_module(self, "vae", vae)
        self._init_memory(
            vae.input_shape,
            vae.latent_dim,
            vae.likelihood.support,
            memory,
            scale,
            weights,
            beta,
            precision,
            like=next(vae.parameters()),
        )

    def _init_memory(
        self, input_shape, latent_dim, support, memory, scale, weights, beta, precision, like
    ):
        self.input_shape = tuple(input_shape)
        self.latent_dim = latent_dim
        # the slots are codes: N stored patterns of the latent width
        self.memory_shape = torch.Size((latent_dim,))
        self.support = support
        if scale is not None and precision is not None:
            # one covariance: a σ next to a precision would be ignored
            got = (
                f"of shape {tuple(precision.shape)}"
                if isinstance(precision, torch.Tensor)
                else f"of type {type(precision).__name__}"
            )
            raise ValueError(
                f"give one of scale and precision, not both, got scale={scale!r} and a "
                f"precision {got}"
            )
        if scale is None and precision is None:
            scale = 1.0
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
                raise TypeError(f"scale must be a float, got {scale!r}")
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be a positive finite float, got {scale!r}")
            scale = float(scale)
        self.scale = scale  # None with a precision
        self.weights = weights
        self.beta = beta
        self.register_buffer("precision", None)
        self.register_buffer("memory", None)
        if precision is not None:
            full = isinstance(precision, torch.Tensor) and precision.dim() == 2
            shape = (latent_dim, latent_dim) if full else (latent_dim,)
            self.precision = self._check_width(precision, "precision", shape)
        if memory is not None:
            self.memory = self._check_width(memory, "memory", (None, latent_dim))
        # Checked now, not at the first loss (in words about its internal z): dtype and device
        # those of the model's parameters (a VAE's; a PixelMemory has none), finite values.
        dtype, device = parameter_dtype(self), parameter_device(self)
        if self.precision is not None:
            check_dtype(self.precision, "precision", dtype)
            check_device(self.precision, "precision", device)
        if self.memory is not None:
            check_memory(self.memory, self.memory_shape, dtype, device)
            like = self.memory  # the distribution then checks a precision against it
        elif self.precision is not None:
            like = self.precision
        # The distribution checks weights and beta, and fails now rather than at first use.
        GaussianMixtureMemory(
            like.new_zeros(1, latent_dim), weights=weights, beta=beta, **self._covariance()
        )

    def _check_width(self, value, name, shape):
        as_float_tensor(value, name)
        if (
            value.dim() != len(shape)
            or any(n is not None and n != m for n, m in zip(shape, value.shape, strict=True))
            or value.shape[0] == 0
        ):
            expected = {(None, shape[-1]): "(N, d)", (shape[-1],): "(d,)"}.get(shape, "(d, d)")
            # N is the memory's own count; a precision has none
            slots = "N >= 1 and " if None in shape else ""
            raise ValueError(
                f"{name} must have shape {expected} with {slots}d = {shape[-1]}, the "
                f"latent width, got {tuple(value.shape)}"
            )
        return value.detach()

    def _covariance(self):
        if self.precision is not None:
            key = "precision" if self.precision.dim() == 1 else "precision_matrix"
            return {key: self.precision}
        return {"scale": self.scale}

    def _check_images(self, images, name, batch_dims=None):
        """The image check of every method that reads images: type, dtype and device (those
        of the model's parameters), shape (``batch_dims`` batch dimensions where given), and
        the values (while Pyro's validation is on)."""
        check_images(
            images,
            self.input_shape,
            self.support,
            name=name,
            check_values=is_validation_enabled(),
            dtype=parameter_dtype(self),
            device=parameter_device(self),
            batch_dims=batch_dims,
        )

    @torch.no_grad()
    def write(self, images):
        """Stores the codes of ``images`` (shape ``(N,) + input_shape``) as the memory M,
        replacing what was there, and returns M, shape ``(N, d)``."""
        self._check_images(images, "images")
        if images.dim() != len(self.input_shape) + 1:
            raise ValueError(
                f"images must have shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(images.shape)}"
            )
        self.memory = self._encode(images)
        return self.memory

    def slot_weights(self, x, memory=None):
        """The responsibilities r_k of the stored patterns at each image's code (the
        encoder's mean), shape ``(B, N)``; ``memory``: codes ``(N, d)`` instead of M.

        ``x`` is checked as in :meth:`model` (its values while Pyro's validation is on)."""
        self._check_images(x, "x")
        return self.prior(memory).responsibilities(self._encode(x))

    def encode(self, images):
        """The code a pattern is stored as: the VAE encoder's mean, shape ``(N, d)``.

        ``images`` is checked as in :meth:`write` (its values while Pyro's validation is on).
        """
        self._check_images(images, "images")
        return self._encode(images)

    def _encode(self, images):
        """:meth:`encode` without the check, for images already checked."""
        return self.vae.encoder(images)[0]

    def likelihood(self, z):
        """p(x | z) for codes of shape ``batch_shape + (d,)``: the VAE's decoder."""
        return self.vae.decode(z)

    def prior(self, memory=None):
        """p(z; M) with the configured covariance and weights, a
        :class:`~pyromem.memory.GaussianMixtureMemory` with event shape ``(d,)``;
        ``memory``: codes ``(N, d)`` instead of M.

        :raises ValueError: if M is empty (nothing written) and no ``memory`` is given.
        """
        if memory is None:
            memory = self._check_width(self.own_memory(), "memory", (None, self.latent_dim))
        else:
            memory = self.resolve_memory(memory)
        return GaussianMixtureMemory(
            memory, weights=self.weights, beta=self.beta, **self._covariance()
        )

    @torch.no_grad()
    def generate(self, num_samples, memory=None):
        """Images from the model: z ~ p(z; M), then the mean of p(x | z) (a draw where it has
        no closed-form mean, as :meth:`VAE.generate <pyromem.models.VAE.generate>`).

        :param int num_samples: the number of images, positive.
        :param torch.Tensor memory: codes ``(N, d)`` instead of M.
        :returns: ``(num_samples,) + input_shape``.
        :raises ValueError: if M is empty (nothing written) and no ``memory`` is given.
        """
        num_samples = as_positive_int(num_samples, "num_samples")
        z = self.prior(memory).sample((num_samples,))
        return typical_image(self.likelihood(z))

    @pyro_program
    def model(self, x, num_data=None):
        """p(x, z; M) = p(z; M) p_θ(x | z) over a batch of B images out of ``num_data``."""
        self._check_images(x, "x", batch_dims=1)
        prior = self.prior()
        with data_plate(x, num_data):
            z = pyro.sample("z", prior)
            pyro.sample("x", self.likelihood(z), obs=x)

    @pyro_program
    def guide(self, x, num_data=None):
        """The VAE's amortised guide q(z | x) = N(μ_φ(x), diag σ_φ(x)²)."""
        self.vae.guide(x, num_data)


class PixelMemory(MemoryVAE):
    """The memory prior on the pixels themselves: no representation component (L = 0, §3.2).

    The code of an image is the image, flattened (d = C·H·W), and the observation is the code
    seen through a Gaussian of small scale ``obs_scale``:

        z_n ~ p(z; M)                                 (eq. 9, or eq. 5-6)
        x_n | z_n ~ N(x; z_n, obs_scale² I)

    The guide starts retrieval at ẑ = x (a point mass), as MCHN and the GMM of the paper's
    tables do; :class:`~pyromem.infer.MemoryFixedPoint` on this model is the pixel-level GMM
    (balanced weights, eq. 11) or MCHN (Hopfield weights, eq. 8).

    :param tuple input_shape: the shape of one image ``(C, H, W)``.
    :param float obs_scale: the scale of the observation noise.

    The other arguments are those of :class:`MemoryVAE`.
    """

    def __init__(
        self,
        input_shape,
        memory=None,
        scale=None,
        weights="balanced",
        beta=None,
        precision=None,
        obs_scale=1e-3,
    ):
        # MemoryVAE.__init__ takes a trained VAE, registers it and reads the widths, support and
        # dtype from it; a pixel memory has no VAE, so it runs the initialisers above MemoryVAE
        # in the MRO (PyroModule's) and then the memory set-up MemoryVAE.__init__ delegates to.
        super(MemoryVAE, self).__init__(name=f"pixel_memory{next(_instances)}")
        input_shape = tuple(input_shape)
        if not (math.isfinite(obs_scale) and obs_scale > 0):
            raise ValueError(f"obs_scale must be a positive finite float, got {obs_scale!r}")
        self.obs_scale = float(obs_scale)
        like = memory if memory is not None else torch.zeros(())
        self._init_memory(
            input_shape,
            math.prod(input_shape),
            "real",
            memory,
            scale,
            weights,
            beta,
            precision,
            like=like if precision is None else precision,
        )

    def encode(self, images):
        """The image itself, flattened: shape ``(N, C·H·W)``.

        ``images`` is checked as in :meth:`write` (its values while Pyro's validation is on).
        """
        self._check_images(images, "images")
        return self._encode(images)

    def _encode(self, images):
        return images.flatten(-len(self.input_shape))

    def likelihood(self, z):
        """N(x; z, obs_scale² I), with z reshaped to the image's shape."""
        loc = z.reshape(z.shape[:-1] + self.input_shape)
        return dist.Normal(loc, self.obs_scale).to_event(len(self.input_shape))

    @pyro_program
    def guide(self, x, num_data=None):
        """A point mass at the query itself, ẑ = x."""
        self._check_images(x, "x", batch_dims=1)
        with data_plate(x, num_data):
            pyro.sample("z", dist.Delta(self._encode(x)).to_event(1))
