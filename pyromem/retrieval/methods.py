r"""The retrieval methods of Tables 2-4, by the paper's names.

A method takes query images and the images to store, and answers with retrieved vectors in the
space where it works, beside the memory it stored there::

    method = build_method("GMM", image_shape, sigma=2.0)
    retrieved, memory = method.retrieve(queries, stored_images)      # (B, D), (N, D)

* pixel level (``space = "pixel"``, ``D = C H W``): ``GMM`` (eq. 11), ``Hopfield`` (MCHN,
  eq. 8), ``NTM`` and ``MemN2N`` (§5.2), each a reader of :mod:`pyromem.retrieval.readers` on
  flattened images;
* latent level (``space = "latent"``, ``D = d``): the memory holds the VAE encoder's means of
  the stored images (the write of :class:`~pyromem.models.MemoryVAE`), and
  ``VAE-GMM`` (eq. 11/45), ``VAE-Hopfield`` (eq. 8), ``VAE-BP-GMM`` (eq. 10),
  ``VAE-BP-Hopfield`` (eq. 46), ``VAE-PC-GMM`` (Alg. 1) and ``VAE-GMM*`` (eq. 12) refine the
  encoder's :math:`\hat z` as the guides of :mod:`pyromem.infer` do on a
  :class:`~pyromem.models.MemoryVAE` (the fixed-point and BP methods with the guides' steps
  computed without Pyro traces, on all memories of a table cell at once:
  :class:`~pyromem.retrieval.readers.FixedPointReader`,
  :func:`~pyromem.retrieval.gradient_map.gradient_map`), while ``VAE-NTM`` and
  ``VAE-MemN2N`` run the baseline readers on codes.

``method.retrieve_many(queries, stored)`` reads ``S`` memories at once (queries
``(S, B, C, H, W)``, stored ``(S, N, C, H, W)``); :func:`~pyromem.retrieval.protocol.evaluate`
uses it for all the seeds of a cell.

``fit(train_images, corruption, ...)`` trains what a method learns, on a training split only:
the NTM and MemN2N readers on clean queries (§5.2); VAE-GMM*'s precision and the readers of
VAE-NTM* and VAE-MemN2N* (Table 4's asterisk rows) on queries corrupted as in the evaluation
(§5.4), once per corruption (:data:`PER_CORRUPTION_METHODS`).
"""

import copy
import math
import numbers

import torch

from pyromem.checks import as_float_tensor, as_int, check_device, check_dtype, check_net_input
from pyromem.data.validation import check_images
from pyromem.infer import (
    LearnedPrecisionRetrieval,
    MAPRefinement,
    MemoryFixedPoint,
    PredictiveCoding,
)
from pyromem.models import MemoryVAE
from pyromem.nets import typical_image
from pyromem.retrieval.corruptions import corrupt
from pyromem.retrieval.gradient_map import gradient_map
from pyromem.retrieval.readers import (
    ContentReader,
    FixedPointReader,
    MemN2NReader,
    train_reader,
)

PIXEL_METHODS = ("GMM", "Hopfield", "NTM", "MemN2N")
LATENT_METHODS = (
    "VAE-GMM",
    "VAE-BP-GMM",
    "VAE-PC-GMM",
    "VAE-Hopfield",
    "VAE-BP-Hopfield",
    "VAE-NTM",
    "VAE-MemN2N",
    "VAE-GMM*",
    "VAE-NTM*",
    "VAE-MemN2N*",
)
#: Every method name :func:`build_method` accepts.
METHODS = PIXEL_METHODS + LATENT_METHODS
#: Methods trained on queries with the evaluated corruption, once per corruption (§5.4).
PER_CORRUPTION_METHODS = ("VAE-GMM*", "VAE-NTM*", "VAE-MemN2N*")
#: Methods that score the query images under the VAE's likelihood (eq. 10, Alg. 1).
LIKELIHOOD_METHODS = ("VAE-BP-GMM", "VAE-BP-Hopfield", "VAE-PC-GMM")


class Method:
    """A named retrieval method; see the module docstring.

    :ivar name: the paper's name, a str.
    :ivar space: ``"pixel"`` or ``"latent"``, a str: where it stores, reads and is scored.
    :ivar image_shape: the ``(C, H, W)`` of the images it reads, a tuple.
    :ivar hyperparameters: the values it runs with, a dict.
    """

    space = "pixel"

    def __init__(self, name, image_shape, hyperparameters):
        self.name = name
        self.image_shape = tuple(image_shape)
        self.hyperparameters = dict(hyperparameters)

    def embed(self, images):
        """Images ``(..., C, H, W)`` to vectors ``(..., D)`` of the method's space."""
        return images.flatten(-len(self.image_shape))

    def render(self, vectors):
        """Vectors ``(B, D)`` of the method's space to images ``(B, C, H, W)`` for figures."""
        return vectors.reshape((-1,) + self.image_shape).clamp(0, 1)

    def fit(self, train_images, corruption="clean", memory_size=100, generator=None):
        """Train what the method learns on training images; returns a dict of what it did."""
        return {}

    def retrieve(self, queries, stored, trajectory=False):
        """Retrieve from a memory of ``stored`` images.

        :param torch.Tensor queries: query images ``(B, C, H, W)``, of the method's
            ``image_shape``; ``B = 0`` reads nothing and gives ``(0, D)``.
        :param torch.Tensor stored: the images to store ``(N, C, H, W)``, ``N >= 1``.
        :param bool trajectory: also return the iterates (methods that iterate).
        :returns: ``(retrieved (B, D), memory (N, D))``, and a list of iterates ``(B, D)`` when
            ``trajectory``.
        :raises TypeError: ``queries`` or ``stored`` is not a floating-point tensor, is not of
            the other's dtype, or (a ``VAE-*`` method) not of its VAE's.
        :raises ValueError: ``queries`` or ``stored`` is not of the shape above (a batch dim
            missing, images of another shape than ``image_shape``), ``stored`` is empty, or
            they are not on one device (that of the VAE for a ``VAE-*`` method).
        """
        self._check_reads(queries, stored)
        return self._retrieve(queries, stored, trajectory)

    def retrieve_many(self, queries, stored, trajectory=False):
        """:meth:`retrieve` on ``S`` memories at once, one per leading index: queries
        ``(S, B, C, H, W)`` and stored images ``(S, N, C, H, W)``, ``S, N >= 1``, give
        ``(S, B, D)`` and ``(S, N, D)`` (and iterates ``(S, B, D)``).

        :raises TypeError: as :meth:`retrieve`.
        :raises ValueError: as :meth:`retrieve`, and for ``S = 0`` or another ``S`` in
            ``stored`` than in ``queries``.
        """
        self._check_reads(queries, stored, many=True)
        return self._retrieve_many(queries, stored, trajectory)

    def _check_reads(self, queries, stored, many=False):
        """Raise a one-line error naming the argument, the shape expected and the shape given,
        unless :meth:`retrieve` (:meth:`retrieve_many` with ``many``) can read ``queries`` and
        ``stored``: checked here, before any work, rather than by a reader or net several
        calls deep (or, for images of another size whose codes fit, not at all)."""
        lead = ("S",) if many else ()
        for name, x, batch in (("queries", queries, "B"), ("stored", stored, "N")):
            as_float_tensor(x, name, f" of images {_shape_text(lead + (batch, 'C', 'H', 'W'))}")
            expected = lead + (batch,) + self.image_shape
            if x.dim() != len(expected) or tuple(x.shape[len(lead) + 1 :]) != self.image_shape:
                raise ValueError(
                    f"{name} must have shape {_shape_text(expected)} ({self.name} reads images "
                    f"of shape {self.image_shape}), got {tuple(x.shape)}"
                )
        if many and len(queries) == 0:
            expected = ("S >= 1", "B") + self.image_shape
            raise ValueError(
                f"queries must have shape {_shape_text(expected)}: at least one memory to read, "
                f"got {tuple(queries.shape)}"
            )
        if many and len(stored) != len(queries):
            expected = (len(queries), "N") + self.image_shape
            raise ValueError(
                f"stored must have shape {_shape_text(expected)}, one memory per leading index "
                f"of queries {tuple(queries.shape)}, got {tuple(stored.shape)}"
            )
        if stored.shape[-4] == 0:
            expected = lead + ("N >= 1",) + self.image_shape
            raise ValueError(
                f"stored must have shape {_shape_text(expected)}: a memory holds at least one "
                f"image, got {tuple(stored.shape)}"
            )
        vae = getattr(self, "vae", None)  # the VAE-* methods' encoder reads the images
        if vae is not None:
            for name, x in (("queries", queries), ("stored", stored)):
                check_net_input(vae, x, name, "the vae's parameters are")
        check_dtype(queries, "queries", stored.dtype, "stored is")
        check_device(queries, "queries", stored.device, "stored is")

    def _retrieve(self, queries, stored, trajectory):
        # retrieve on checked images: by default retrieve_many's read of one memory
        out = self._retrieve_many(queries[None], stored[None], trajectory)
        if trajectory:
            return out[0][0], out[1][0], [z[0] for z in out[2]]
        return out[0][0], out[1][0]

    def _retrieve_many(self, queries, stored, trajectory):
        # retrieve_many on checked images. A method implements this or _retrieve; by default
        # each calls the other (here a loop over the memories).
        outs = [self._retrieve(q, m, trajectory) for q, m in zip(queries, stored, strict=True)]
        stacked = [torch.stack([o[i] for o in outs]) for i in range(2)]
        if trajectory:
            stacked.append([torch.stack(z) for z in zip(*(o[2] for o in outs), strict=True)])
        return tuple(stacked)


class ReaderMethod(Method):
    """A reader of :mod:`~pyromem.retrieval.readers` on pixels (or, below, on VAE codes)."""

    def __init__(self, name, image_shape, reader, hyperparameters):
        super().__init__(name, image_shape, hyperparameters)
        self.reader = reader
        if isinstance(reader, torch.nn.Module):
            self._initial_state = copy.deepcopy(reader.state_dict())

    def fit(self, train_images, corruption="clean", memory_size=100, generator=None):
        if not isinstance(self.reader, torch.nn.Module):
            return {}
        # every fit starts from the same initial reader: the asterisk rows train one reader
        # per corruption, not one reader through the corruptions in turn
        self.reader.load_state_dict(self._initial_state)
        steps, lr = self.hyperparameters["train_steps"], self.hyperparameters["train_lr"]
        queries = None
        if self.name in PER_CORRUPTION_METHODS:
            queries = self.embed(corrupt(train_images, corruption, generator=generator)).detach()
        patterns = self.embed(train_images).detach()
        # the reader is built in float32 on the CPU: it learns, and then reads, the vectors of
        # the method's space (codes of the VAE, or the images) in their dtype and on their device
        self.reader.to(device=patterns.device, dtype=patterns.dtype)
        if isinstance(self.reader, MemN2NReader):
            self.reader.initialise(patterns)
        with torch.enable_grad():
            losses = train_reader(
                self.reader,
                patterns,
                memory_size,
                steps,
                lr,
                generator,
                queries=queries,
            )
        return {"train_loss_first": losses[0], "train_loss_last": losses[-1]}

    @torch.no_grad()
    def _retrieve(self, queries, stored, trajectory):
        if isinstance(self.reader, FixedPointReader):
            return super()._retrieve(queries, stored, trajectory)
        memory, asked = self.embed(stored), self.embed(queries)
        retrieved = self.reader(asked, memory)
        return (retrieved, memory, [asked, retrieved]) if trajectory else (retrieved, memory)

    @torch.no_grad()
    def _retrieve_many(self, queries, stored, trajectory):
        if not isinstance(self.reader, FixedPointReader):
            return super()._retrieve_many(queries, stored, trajectory)
        memory = self.embed(stored)
        out = self.reader(self.embed(queries), memory, trajectory=trajectory)
        return (out[0], memory, out[1]) if trajectory else (out, memory)


class _LatentSpace:
    """The latent space of a trained VAE ``self.vae``, for the ``VAE-*`` methods: vectors are
    the encoder's means, and they are shown through the decoder."""

    space = "latent"

    @torch.no_grad()
    def embed(self, images):
        return self.vae.encoder(images)[0]

    @torch.no_grad()
    def render(self, vectors):
        return typical_image(self.vae.decode(vectors)).clamp(0, 1)


class LatentReaderMethod(_LatentSpace, ReaderMethod):
    """A reader on VAE codes (VAE-NTM, VAE-MemN2N): the encoder's means of queries and memory."""

    def __init__(self, name, vae, reader, hyperparameters):
        super().__init__(name, vae.input_shape, reader, hyperparameters)
        self.vae = vae


class GuideMethod(_LatentSpace, Method):
    """A :class:`~pyromem.models.MemoryVAE` and one of the refinement guides of
    :mod:`pyromem.infer`, started from the amortised encoder's :math:`\\hat z`."""

    def __init__(self, name, vae, hyperparameters):
        super().__init__(name, vae.input_shape, hyperparameters)
        self.vae = vae
        self.precision_module = None

    def memory_vae_of(self, stored):
        """A MemoryVAE with the method's prior and ``stored`` written; returns it and M."""
        weights, scale = self._prior()
        precision = None
        if self.name == "VAE-GMM*":
            # the learned P replaces σ (MemoryVAE refuses both)
            scale, precision = None, self._precision_module().precision.detach()
        memory_vae = MemoryVAE(self.vae, scale=scale, weights=weights, precision=precision)
        memory = memory_vae.write(stored)
        return memory_vae, memory

    def guide(self, memory_vae):
        """The Pyro guide whose refinement this method computes, on ``memory_vae`` (from
        :meth:`memory_vae_of`): :class:`~pyromem.infer.MemoryFixedPoint` (VAE-GMM* with its
        learned precision), :class:`~pyromem.infer.MAPRefinement` or
        :class:`~pyromem.infer.PredictiveCoding`."""
        h = self.hyperparameters
        steps = h["num_steps"]
        if self.name in ("VAE-GMM", "VAE-Hopfield", "VAE-GMM*"):
            return MemoryFixedPoint(memory_vae.model, memory_vae.guide, num_steps=steps)
        if self.name in ("VAE-BP-GMM", "VAE-BP-Hopfield"):
            return MAPRefinement(
                memory_vae.model,
                memory_vae.guide,
                num_steps=steps,
                lr=h["lr"],
                prior_weight=h["gamma"],
            )
        return PredictiveCoding(
            memory_vae.model,
            memory_vae.guide,
            _decoder_layers(self.vae),
            num_steps=steps,
            rate=h["rate"],
        )

    def fit(self, train_images, corruption="clean", memory_size=100, generator=None):
        """VAE-GMM*: trains a full precision (eq. 12) on :data:`PRECISION_MEMORIES` memories of
        training images with queries corrupted by ``corruption`` (§5.4), by the loss
        :data:`PRECISION_LOSS`, from σ⁻² I for each σ of ``sigma`` ×
        :data:`INITIAL_SIGMA_FACTORS`, keeping the one of the highest training
        nearest-pattern rate (App. D: σ by the training success)."""
        if self.name != "VAE-GMM*":
            return {}
        h = self.hyperparameters
        size = min(memory_size, len(train_images))
        stored = torch.stack(
            [
                train_images[torch.randperm(len(train_images), generator=generator)[:size]]
                for _ in range(PRECISION_MEMORIES)
            ]
        )
        memory = self.embed(stored)
        queries = self.embed(corrupt(stored, corruption, generator=generator))
        patterns = memory.unsqueeze(-3)  # one memory per leading index

        def retrieval(sigma):
            return LearnedPrecisionRetrieval(
                self.vae.latent_dim, num_steps=h["num_steps"], scale=sigma, full=True
            ).to(device=memory.device, dtype=memory.dtype)

        fits = {}
        for factor in INITIAL_SIGMA_FACTORS:
            module = retrieval(factor * h["sigma"])
            with torch.enable_grad():
                losses = module.fit(
                    queries,
                    patterns,
                    memory,
                    epochs=h["train_steps"],
                    lr=h["train_lr"],
                    loss=PRECISION_LOSS,
                )
            with torch.no_grad():
                nearest = torch.cdist(module(queries, patterns), memory).argmin(-1)
            hits = (nearest == torch.arange(size, device=nearest.device)).float().mean().item()
            fits[factor * h["sigma"]] = module, losses, hits
        # σ is a retrieval hyper-parameter: the start of the highest training nearest-pattern
        # rate after training (App. D), the lower final loss among equals
        initial = max(fits, key=lambda sigma: (fits[sigma][2], -fits[sigma][1][-1]))
        self.precision_module, losses, _ = fits[initial]
        return {
            "initial_sigma": initial,
            "train_nearest_by_initial_sigma": {sigma: fit[2] for sigma, fit in fits.items()},
            "train_loss_last_by_initial_sigma": {sigma: fit[1][-1] for sigma, fit in fits.items()},
            "train_loss_first": float(losses[0]),
            "train_loss_last": float(losses[-1]),
        }

    @torch.no_grad()
    def _retrieve_many(self, queries, stored, trajectory):
        # The guides' computations without their Pyro traces, for S memories in one batch:
        # VAE-GMM, VAE-Hopfield and VAE-GMM* iterate the memory's fixed-point step from the
        # encoder's code (MemoryFixedPoint on memory_vae_of(stored)), the BP methods ascend the
        # log joint (MAPRefinement on it, see gradient_map); VAE-PC-GMM runs its guide.
        if self.name == "VAE-PC-GMM":
            return super()._retrieve_many(queries, stored, trajectory)
        h, memory = self.hyperparameters, self.embed(stored)
        if queries.shape[1] == 0 and self.name in ("VAE-BP-GMM", "VAE-BP-Hopfield"):
            out = self._no_query(queries, trajectory)  # gradient_map cannot reshape none
        elif self.name in ("VAE-BP-GMM", "VAE-BP-Hopfield"):
            weights, scale = self._prior()
            out = gradient_map(
                self.vae,
                queries,
                memory,
                scale=scale,
                weights=weights,
                prior_weight=h["gamma"],
                lr=h["lr"],
                num_steps=h["num_steps"],
                trajectory=trajectory,
            )
        elif self.name == "VAE-GMM*":
            z0 = self.embed(queries)
            z = self._precision_module()(z0, memory.unsqueeze(-3))
            out = (z, [z0, z]) if trajectory else z
        else:
            weights, scale = self._prior()
            reader = FixedPointReader(weights, scale, h["num_steps"])
            out = reader(self.embed(queries), memory, trajectory=trajectory)
        return (out[0], memory, out[1]) if trajectory else (out, memory)

    def _retrieve(self, queries, stored, trajectory):
        if self.name != "VAE-PC-GMM":
            return super()._retrieve(queries, stored, trajectory)
        memory_vae, memory = self.memory_vae_of(stored)
        if len(queries) == 0:  # the guide refuses an empty batch; there is nothing to refine
            out = self._no_query(queries, trajectory)
            return (out[0], memory, out[1]) if trajectory else (out, memory)
        with torch.enable_grad():
            out = self.guide(memory_vae).refine(queries, trajectory=trajectory)
        if trajectory:
            return out[0].detach(), memory, [z.detach() for z in out[1]]
        return out.detach(), memory

    def _no_query(self, queries, trajectory):
        """The read of an empty batch of queries: their (empty) codes, and the ``T + 1``
        iterates of the refinement when ``trajectory``."""
        z = self.embed(queries)
        return (z, [z] * (self.hyperparameters["num_steps"] + 1)) if trajectory else z

    def _precision_module(self):
        if self.precision_module is None:
            raise ValueError("VAE-GMM* must be fit() on a training split before retrieval")
        return self.precision_module

    def _prior(self):
        """The mixture's weights and σ (Hopfield: β^{-1/2}, eq. 5)."""
        h = self.hyperparameters
        if self.name.endswith("Hopfield"):
            return "hopfield", h["beta"] ** -0.5
        return "balanced", h["sigma"]


#: Training memories of VAE-GMM*'s precision, and the multiples of its ``sigma`` it may start
#: from (``sigma`` = a quarter of the unit of the codes: the unit / 32 or the unit / 16); the
#: start of the highest training nearest-pattern rate after training is kept (App. D).
PRECISION_MEMORIES = 5
#: Its training loss (:meth:`~pyromem.infer.LearnedPrecisionRetrieval.fit`): the MSE of §4.5
#: barely moves from any σ here, while -log r_k* trains (docs/retrieval.md).
PRECISION_LOSS = "nll"
INITIAL_SIGMA_FACTORS = (1 / 8, 1 / 4)

#: Defaults of every hyper-parameter; those in :data:`~pyromem.retrieval.selection.GRIDS` are
#: chosen on a training split by :func:`~pyromem.retrieval.selection.select_hyperparameters`.
DEFAULTS = {
    "GMM": {"sigma": 1.0, "num_steps": 10},
    "Hopfield": {"beta": 1.0, "num_steps": 10},
    "NTM": {"key_dim": None, "train_steps": 300, "train_lr": 0.05},
    "MemN2N": {"embed_dim": 256, "ridge": 1.0, "train_steps": 1000, "train_lr": 3e-4},
    "VAE-GMM": {"sigma": 1.0, "num_steps": 10},
    "VAE-Hopfield": {"beta": 1.0, "num_steps": 10},
    "VAE-BP-GMM": {"sigma": 1.0, "gamma": 1.0, "lr": 0.01, "num_steps": 20},
    "VAE-BP-Hopfield": {"beta": 1.0, "gamma": 1.0, "lr": 0.01, "num_steps": 20},
    "VAE-PC-GMM": {"sigma": 1.0, "rate": 0.01, "num_steps": 50},
    "VAE-NTM": {"key_dim": 16, "train_steps": 300, "train_lr": 0.01},
    "VAE-MemN2N": {"embed_dim": 64, "ridge": 1.0, "train_steps": 1000, "train_lr": 0.003},
    "VAE-GMM*": {"sigma": 1.0, "num_steps": 10, "train_steps": 100, "train_lr": 0.02},
    "VAE-NTM*": {"key_dim": 16, "train_steps": 300, "train_lr": 0.01},
    "VAE-MemN2N*": {"embed_dim": 64, "ridge": 1.0, "train_steps": 1000, "train_lr": 0.003},
}


def check_method(name, image_shape, vae=None):
    """Raise a one-line error unless :func:`build_method` can build ``name`` for images of
    ``image_shape`` with ``vae``, without building it (the entry points check every method
    before the first one runs).

    :raises ValueError: an unknown name, a ``VAE-*`` method without a VAE, or a VAE that takes
        images of another shape.
    :raises TypeError: an ``image_shape`` that is not three positive ints, a ``vae`` that is
        not a VAE.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods are {list(METHODS)}")
    if (
        isinstance(image_shape, (str, bytes))
        or not hasattr(image_shape, "__len__")
        or len(image_shape) != 3
        or not all(isinstance(n, numbers.Integral) and n >= 1 for n in image_shape)
    ):
        raise TypeError(f"image_shape must be three positive ints (C, H, W), got {image_shape!r}")
    if name in LATENT_METHODS:
        if vae is None:
            raise ValueError(f"{name} works on VAE codes: pass a trained vae")
        if not all(hasattr(vae, key) for key in ("input_shape", "latent_dim", "encoder")):
            raise TypeError(f"vae must be a trained pyromem VAE, got {type(vae).__name__}")
        if tuple(vae.input_shape) != tuple(image_shape):
            raise ValueError(
                f"the vae takes images of shape {tuple(vae.input_shape)}, got image_shape "
                f"{tuple(image_shape)}"
            )
    if name == "VAE-PC-GMM":
        # Alg. 1 runs the decoder as layers whose bottom one predicts the image itself: checked
        # here, since the guide is first built at the first read (after a table's other rows)
        net = getattr(vae, "config", {}).get("net")
        param_shape = tuple(getattr(getattr(vae, "likelihood", None), "param_shape", ()))
        if net != "mlp" or param_shape != tuple(image_shape):
            raise ValueError(
                f"VAE-PC-GMM needs a VAE with net='mlp' whose decoder outputs the image itself "
                f"(a Bernoulli or Gaussian likelihood), got net={net!r} with decoder output "
                f"{param_shape}"
            )


def check_vae_images(names, vae, images, name):
    """Raise a one-line error naming ``name`` unless the ``vae`` of the methods ``names`` can
    read ``images`` ``(M, C, H, W)``: of the dtype and on the device of its parameters, and, for
    the methods that score the images under its likelihood (:data:`LIKELIHOOD_METHODS`), in that
    likelihood's support. Without this check, a float64 or CPU batch fails inside the encoder
    after a table's earlier rows, and a Bernoulli VAE scores grey levels without a word (its
    value checks are off during the reads) and gives rates of no meaning.

    :param list names: method names, checked by :func:`check_method`; nothing is checked unless
        one is a ``VAE-*`` method.
    :param vae: their VAE.
    :param torch.Tensor images: a floating-point batch of the VAE's ``input_shape``.
    :param str name: the images' argument name.
    """
    if not any(method in LATENT_METHODS for method in names):
        return
    check_net_input(vae, images, name, "the vae's parameters are")
    scored = [method for method in names if method in LIKELIHOOD_METHODS]
    support = getattr(getattr(vae, "likelihood", None), "support", None)
    if scored and support is not None:
        # BP and PC score the queries under the VAE's likelihood: a Bernoulli VAE cannot
        # score grey levels (the CLI refuses such a checkpoint too)
        try:
            check_images(images, vae.input_shape, support, name=name)
        except ValueError as error:
            raise ValueError(
                f"{', '.join(scored)} score the images under the vae's likelihood "
                f"(support {support!r}): {str(error).split(';')[0]}"
            ) from None


#: Hyper-parameters that must be positive finite numbers, and those that may also be 0
#: (γ = 0: MAP on the likelihood alone); the step counts and widths are positive ints.
_POSITIVE = ("sigma", "beta", "lr", "rate", "train_lr", "ridge")
_NON_NEGATIVE = ("gamma",)
_COUNTS = ("num_steps", "train_steps", "embed_dim")


def _check_hyperparameters(name, h):
    for key, value in h.items():
        if key in _COUNTS:
            as_int(value, f"{name}: {key}", 1)
        elif key == "key_dim":
            as_int(value, f"{name}: {key}", 1, allow_none=True)
        elif key in _POSITIVE or key in _NON_NEGATIVE:
            low = 0 if key in _NON_NEGATIVE else None
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or (value < 0 if low == 0 else value <= 0)
            ):
                bound = ">= 0" if low == 0 else "> 0"
                raise ValueError(f"{name}: {key} must be a finite number {bound}, got {value!r}")


def build_method(name, image_shape, vae=None, **hyperparameters):
    """Build a method by its name in the paper.

    :param str name: one of :data:`METHODS`.
    :param tuple image_shape: ``(C, H, W)`` of the images.
    :param vae: a trained :class:`~pyromem.models.VAE`; required by the ``VAE-*`` methods.
    :param hyperparameters: overrides of :data:`DEFAULTS` (e.g. ``sigma=0.5``).
    :rtype: Method
    :raises ValueError: see :func:`check_method`; a hyper-parameter out of range.
    :raises TypeError: a hyper-parameter ``name`` does not take.
    """
    check_method(name, image_shape, vae)
    unknown = sorted(set(hyperparameters) - set(DEFAULTS[name]))
    if unknown:
        raise TypeError(f"{name} takes hyper-parameters {sorted(DEFAULTS[name])}, got {unknown}")
    _check_hyperparameters(name, hyperparameters)
    h = {**DEFAULTS[name], **hyperparameters}
    if name in LATENT_METHODS:
        if name in ("VAE-NTM", "VAE-NTM*"):
            reader = ContentReader(vae.latent_dim, key_dim=h["key_dim"])
            return LatentReaderMethod(name, vae, reader, h)
        if name in ("VAE-MemN2N", "VAE-MemN2N*"):
            reader = MemN2NReader(vae.latent_dim, h["embed_dim"], h["ridge"])
            return LatentReaderMethod(name, vae, reader, h)
        return GuideMethod(name, vae, h)
    dim = int(torch.Size(image_shape).numel())
    if name == "GMM":
        reader = FixedPointReader("balanced", h["sigma"], h["num_steps"])
    elif name == "Hopfield":
        reader = FixedPointReader("hopfield", h["beta"] ** -0.5, h["num_steps"])
    elif name == "NTM":
        reader = ContentReader(dim, key_dim=h["key_dim"])
    else:
        reader = MemN2NReader(dim, h["embed_dim"], h["ridge"])
    return ReaderMethod(name, image_shape, reader, h)


def _shape_text(dims):
    """``("B", 1, 4, 4)`` as ``"(B, 1, 4, 4)"``, for the messages of Method._check_reads."""
    return f"({', '.join(map(str, dims))})"


def _decoder_layers(vae):
    """The maps f^{L-1}, ..., f^0 of an MLP decoder (each Linear with its ReLU), for Alg. 1."""
    body = getattr(vae.decoder, "body", None)
    if vae.config["net"] != "mlp" or body is None:
        raise ValueError("VAE-PC-GMM needs a VAE with net='mlp' (a decoder given as layers)")
    layers, current = [], []
    for module in body:
        current.append(module)
        if not isinstance(module, torch.nn.Linear):
            layers.append(torch.nn.Sequential(*current))
            current = []
    return layers + ([torch.nn.Sequential(*current)] if current else [])
