"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014) as a Pyro program.

Generative model, for each image x_n of a dataset of N:

    z_n ~ N(0, I_d)                      (the standard-normal prior)
    x_n | z_n ~ p_θ(x | z_n)             (a decoder and a likelihood head)

Amortised guide: q_φ(z_n | x_n) = N(μ_φ(x_n), diag σ_φ(x_n)²).

The data plate scales a batch to ``num_data`` images, so the ELBO that any
Pyro objective computes is an unbiased estimate of the whole dataset's.
"""

import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from pyromem.checks import (
    as_int,
    as_positive_int,
    as_shape,
    as_sizes,
    parameter_device,
    parameter_dtype,
)
from pyromem.data.validation import check_images
from pyromem.models.methods import pyro_program
from pyromem.models.plates import data_plate
from pyromem.nets import (
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    make_likelihood,
    typical_image,
)

NETS = ("mlp", "conv")
_instances = itertools.count()


class VAE(PyroModule):
    """A VAE with a standard-normal prior and an amortised Gaussian guide.

    :param tuple input_shape: the shape of one image ``(C, H, W)``.
    :param int latent_dim: d, the width of z.
    :param str likelihood: ``"bernoulli"``, ``"gaussian"`` or
        ``"discretized_logistic_mixture"``.
    :param str net: ``"mlp"`` or ``"conv"`` encoder and decoder.
    :param tuple hidden: hidden widths of the MLP nets (an int: one layer).
    :param dict likelihood_kwargs: options of the likelihood head, e.g.
        ``{"scale": 0.1}`` for a fixed Gaussian scale.

    ``model(x)`` and ``guide(x)`` take images of shape ``(B,) + input_shape``.
    ``vae.config`` holds the constructor's arguments, so ``VAE(**vae.config)``
    rebuilds the same architecture.
    """

    def __init__(
        self,
        input_shape,
        latent_dim=16,
        likelihood="bernoulli",
        net="mlp",
        hidden=(400,),
        likelihood_kwargs=None,
    ):
        # a name of its own keeps two VAEs from sharing parameters in Pyro's param store
        super().__init__(name=f"vae{next(_instances)}")
        if net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {net!r}")
        as_int(latent_dim, "latent_dim", 1)
        hidden = as_sizes(hidden, "hidden")  # an int is one layer, as the other models take it
        self.input_shape = tuple(as_shape(input_shape, "input_shape"))
        self.latent_dim = latent_dim
        self.config = {
            "input_shape": list(self.input_shape),
            "latent_dim": latent_dim,
            "likelihood": likelihood,
            "net": net,
            "hidden": list(hidden),
            "likelihood_kwargs": dict(likelihood_kwargs or {}),
        }
        self.likelihood = make_likelihood(likelihood, self.input_shape, **(likelihood_kwargs or {}))
        param_shape = self.likelihood.param_shape
        if net == "mlp":
            self.encoder = MLPEncoder(self.input_shape, latent_dim, hidden=tuple(hidden))
            self.decoder = MLPDecoder(latent_dim, param_shape, hidden=tuple(reversed(hidden)))
        else:
            self.encoder = ConvEncoder(self.input_shape, latent_dim)
            self.decoder = ConvDecoder(latent_dim, param_shape)
        # every parameter then goes through pyro.param, where SVI with pyro.optim
        # and JitTrace_ELBO look for them
        to_pyro_module_(self)

    def _check(self, x):
        check_images(
            x,
            self.input_shape,
            self.likelihood.support,
            check_values=is_validation_enabled(),
            dtype=parameter_dtype(self),
            device=parameter_device(self),
            batch_dims=1,
        )

    @pyro_program
    def model(self, x, num_data=None):
        """p(x, z) = N(z; 0, I) p_θ(x | z) over a batch of B images out of ``num_data``."""
        self._check(x)
        with data_plate(x, num_data):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    @pyro_program
    def guide(self, x, num_data=None):
        """q(z | x) = N(μ_φ(x), diag σ_φ(x)²)."""
        self._check(x)
        with data_plate(x, num_data):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def decode(self, z):
        """p_θ(x | z) for latents of shape ``batch_shape + (d,)``."""
        return self.likelihood(self.decoder(z))

    def reconstruct(self, x):
        """The decoder's mean at the encoder's mean, shape of ``x``.

        For the discretized logistic mixture, which has no closed-form mean, a
        draw from the decoder instead.
        """
        self._check(x)
        loc, _ = self.encoder(x)
        return typical_image(self.decode(loc))

    def generate(self, num_samples, memory=None):
        """The decoder's mean (a draw, as in :meth:`reconstruct`) at ``num_samples`` prior draws.

        :param int num_samples: the number of images, positive.
        :param memory: must be ``None``: a VAE has no memory (the argument is there so that
            every model's ``generate`` takes the same arguments).
        :returns: ``(num_samples,) + input_shape``.
        """
        if memory is not None:
            raise ValueError("a VAE has no memory: call generate(num_samples) without memory")
        num_samples = as_positive_int(num_samples, "num_samples")
        z = torch.randn(
            num_samples,
            self.latent_dim,
            dtype=parameter_dtype(self),
            device=parameter_device(self),
        )
        return typical_image(self.decode(z))
