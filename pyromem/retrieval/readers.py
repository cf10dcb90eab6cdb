r"""Memory readers that work on vectors: the baselines of §5.2 and the pixel-level GMM/MCHN.

Every reader maps queries and a memory to retrieved vectors::

    retrieved = reader(queries, memory)          # (B, D), (N, D) -> (B, D)

The memory holds the stored patterns themselves (§5.2: no write mechanism is learned); the
readers work on flattened pixels or on VAE codes alike.

* :class:`FixedPointReader`: :math:`T` steps :math:`\hat z \leftarrow \sum_k r_k(\hat z) M_k` of
  :class:`~pyromem.memory.GaussianMixtureMemory` from :math:`\hat z = x`, i.e.
  :class:`~pyromem.infer.MemoryFixedPoint` on a :class:`~pyromem.models.PixelMemory` of the
  stored vectors (or, from the encoder's :math:`\hat z`, on a
  :class:`~pyromem.models.MemoryVAE`); balanced weights give the "GMM" of §5.2 (eq. 11),
  Hopfield weights the MCHN (eq. 8). It reads many memories at once: queries
  ``(S, B, D)`` against memories ``(S, N, D)``.
* :class:`ContentReader`: the NTM's content addressing (Graves et al. 2014),
  :math:`w = \mathrm{softmax}(\beta_s \cos(K x, K M_k))`, read :math:`\sum_k w_k M_k`, with a
  learned key strength :math:`\beta_s` and optionally a learned linear key map :math:`K`.
* :class:`MemN2NReader`: one hop of end-to-end memory networks (Sukhbaatar et al. 2015),
  :math:`p = \mathrm{softmax}((B x) \cdot (A M_k))`, read :math:`\sum_k p_k M_k`.

The two learned readers are trained by :func:`train_reader` with the MSE between the read and
the correct pattern, on clean queries :math:`x = M_{k^*}` (§5.2).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from pyromem.checks import (
    as_float_tensor,
    as_int,
    as_real,
    check_device,
    check_dtype,
    check_net_input,
)
from pyromem.data.validation import check_generator
from pyromem.memory import GaussianMixtureMemory


class FixedPointReader:
    r"""Iterates the memory's fixed-point step from :math:`\hat z = x` (eq. 11 / eq. 8).

    :param str weights: ``"balanced"`` (GMM, eq. 11) or ``"hopfield"`` (MCHN, eq. 8).
    :param float scale: the components' :math:`\sigma`; for ``"hopfield"`` the inverse
        temperature is :math:`\beta = 1/\sigma^2` (eq. 5), so eq. 8 is exact.
    :param int num_steps: :math:`T \ge 1`.
    :param float alpha: the step rate of eq. 44, or ``None`` for the full step (eq. 45).
    """

    def __init__(self, weights="balanced", scale=1.0, num_steps=10, alpha=None):
        as_int(num_steps, "num_steps", 1)
        self.weights = weights
        # a NumPy float32 (build_method takes any real number) is a scale like a float; an
        # infinite one would weigh every pattern equally and read their mean without a word
        self.scale = as_real(scale, "scale", positive=True)
        self.num_steps = num_steps
        self.alpha = alpha

    def __call__(self, queries, memory, trajectory=False):
        """
        :param torch.Tensor queries: ``(B, D)``, or ``(S, B, D)`` for ``S`` memories.
        :param torch.Tensor memory: ``(N, D)``, or ``(S, N, D)``.
        :param bool trajectory: also return the ``T + 1`` iterates.
        :returns: ``(B, D)`` (``(S, B, D)``) [and a list of ``T + 1`` such tensors].
        :raises TypeError: a tensor that is not floating-point, or of the other's dtype.
        :raises ValueError: a shape other than the above, an empty memory (``N = 0``), or
            tensors on two devices.
        """
        _check_read(queries, memory, batched=True)
        # MemoryFixedPoint's iteration on the prior that a PixelMemory of the vectors puts at
        # its site, without the Pyro traces around it (that prior does not depend on the
        # query); one distribution with a memory per leading index serves all S memories.
        prior = GaussianMixtureMemory(memory.unsqueeze(-3), scale=self.scale, weights=self.weights)
        return prior.fixed_point(queries, self.num_steps, self.alpha, trajectory=trajectory)


class ContentReader(nn.Module):
    r"""NTM content addressing with a learned key strength (and optionally a key map).

    :param int dim: the width ``D`` of patterns and queries.
    :param int key_dim: width of a learned linear key map :math:`K: \mathbb{R}^D \to
        \mathbb{R}^{k}` shared by queries and patterns, or ``None`` for :math:`K = I`.
    :param float key_strength: the initial :math:`\beta_s > 0`.
    """

    def __init__(self, dim, key_dim=None, key_strength=1.0):
        super().__init__()
        self.dim = as_int(dim, "dim", 1)
        self.key = None
        if key_dim is not None:
            self.key = nn.Linear(dim, as_int(key_dim, "key_dim", 1), bias=False)
            if key_dim == dim:
                nn.init.eye_(self.key.weight)
        # beta_s = exp(log_strength): positive, and Adam moves it by orders of magnitude, as
        # the near-parallel pixel patterns need (their cosines all lie near 1).
        self.log_strength = nn.Parameter(
            torch.tensor(math.log(as_real(key_strength, "key_strength", positive=True)))
        )

    @property
    def key_strength(self):
        return self.log_strength.exp()

    def forward(self, queries, memory):
        """``(B, D), (N, D) -> (B, D)``.

        :raises TypeError: a tensor that is not floating-point, or of the other's dtype (or,
            with a key map, of another than its parameters').
        :raises ValueError: a shape other than the above (``D = dim`` with a key map), an
            empty memory (``N = 0``), or tensors on two devices.
        """
        keyed = self.key is not None  # else only a 0-dim strength, which any dtype takes
        _check_read(
            queries, memory, dim=self.dim if keyed else None, reader=self if keyed else None
        )
        keys = (queries, memory) if self.key is None else (self.key(queries), self.key(memory))
        similarity = F.normalize(keys[0], dim=-1) @ F.normalize(keys[1], dim=-1).mT
        return (self.key_strength * similarity).softmax(-1) @ memory


class MemN2NReader(nn.Module):
    r"""One MemN2N hop with learned query and memory embeddings :math:`B, A: \mathbb{R}^D \to
    \mathbb{R}^e` and a learned inverse temperature :math:`\beta`, reading the stored patterns:
    :math:`p = \mathrm{softmax}(\beta\, (B x + b) \cdot (A M_k + a))`.

    As in the authors' code (Annabi et al. 2022), the scores start as a dot product of the
    patterns, which training then adapts. The authors start from the identity; a plain dot
    product prefers large-norm patterns (the norm bias of the MCHN, eq. 8), and on natural
    images few patterns win their own read that way (5 % of a ``patches`` memory; 3 % for
    Hopfield on CIFAR10 in Table 2), which 512 training images do not teach the maps to undo.
    :meth:`initialise` therefore starts both maps (:math:`A = B`) at the *ridge-whitening* of
    the training patterns along their top :math:`e` principal axes,

    .. math:: A = \mathrm{diag}\big((\lambda_i + \rho \bar\lambda)^{-1/2}\big) V_e^\top,
              \qquad a = -A \mu,

    with :math:`\lambda_i, V_e` the variances and axes of the centred training patterns,
    :math:`\mu` their mean and :math:`\bar\lambda = \mathrm{tr}\,\Sigma / D` the mean variance
    of a coordinate. Whitened patterns have about equal norms, so their dot product ranks
    patterns nearly as their distance does; the ridge :math:`\rho` keeps axes of small
    variance (mostly noise) from being blown up: :math:`\rho \to 0` is full whitening,
    :math:`\rho \to \infty` the plain dot product of the centred patterns on their top axes.
    It sets :math:`\beta` so that a pattern's score with itself is 10 on average: sharp enough
    that the correct pattern's weight carries a gradient, far from saturated. Rows beyond the
    number of principal axes start (and stay) at zero. Before :meth:`initialise` the maps are
    one random orthonormal projection, scaled by :math:`\sqrt{D/e}` when :math:`e < D`.

    :param int dim: the width ``D`` of patterns and queries.
    :param int embed_dim: the embedding width ``e``.
    :param float ridge: :math:`\rho > 0`, in units of the mean variance :math:`\bar\lambda`.
    """

    def __init__(self, dim, embed_dim=64, ridge=1.0):
        super().__init__()
        self.dim = as_int(dim, "dim", 1)
        as_int(embed_dim, "embed_dim", 1)
        self.ridge = as_real(ridge, "ridge", positive=True)
        self.query_embedding = nn.Linear(dim, embed_dim)
        self.memory_embedding = nn.Linear(dim, embed_dim)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        projection = torch.empty(embed_dim, dim)
        nn.init.orthogonal_(projection)
        with torch.no_grad():
            for embedding in (self.query_embedding, self.memory_embedding):
                embedding.weight.copy_(projection * max(dim / embed_dim, 1.0) ** 0.5)
                embedding.bias.zero_()

    @torch.no_grad()
    def initialise(self, patterns):
        """Starts both embeddings at the ridge-whitening of training ``patterns`` ``(M, D)``
        and sets :math:`\beta` from them (see the class docstring); returns ``self``."""
        if not isinstance(patterns, torch.Tensor) or patterns.dim() != 2 or len(patterns) < 2:
            shape = getattr(patterns, "shape", patterns)
            raise ValueError(f"patterns must be a (M, D) tensor with M >= 2, got {shape}")
        mean = patterns.mean(0)
        variances, axes = _principal_axes((patterns - mean).double())
        count = min(self.query_embedding.out_features, len(variances))
        floor = self.ridge * variances.sum() / patterns.shape[1]
        whitening = (axes[:count] / (variances[:count] + floor).sqrt()[:, None]).to(patterns)
        for embedding in (self.query_embedding, self.memory_embedding):
            embedding.weight.zero_()
            embedding.weight[:count] = whitening
            embedding.bias.copy_(-embedding.weight @ mean)
        self_scores = self.query_embedding(patterns).pow(2).sum(-1).mean()
        self.log_temperature.copy_((10.0 / self_scores.clamp_min(1e-12)).log())
        return self

    def forward(self, queries, memory):
        """``(B, D), (N, D) -> (B, D)``.

        :raises TypeError: a tensor that is not floating-point, or of another dtype than the
            other or the embeddings' parameters.
        :raises ValueError: a shape other than the above with ``D = dim``, an empty memory
            (``N = 0``), or tensors on another device than the other or the embeddings.
        """
        _check_read(queries, memory, dim=self.dim, reader=self)
        scores = self.query_embedding(queries) @ self.memory_embedding(memory).mT
        return (self.log_temperature.exp() * scores).softmax(-1) @ memory


def _principal_axes(centred):
    """The variances (descending) and unit axes ``(K, D)`` of centred rows ``(M, D)``, axes of
    numerically zero variance left out. One eigen-decomposition of the smaller of the Gram and
    the scatter matrix: exact like an SVD, and for ``M, D`` in the thousands (``shapes``' 2000
    scenes of 12 288 pixels: 3 s for the whole start, against 20 s for the SVD alone) faster."""
    count, dim = centred.shape
    if count < dim:
        gram, vectors = torch.linalg.eigh(centred @ centred.mT)
        axes = vectors.mT @ centred / gram.clamp_min(0).sqrt()[:, None]
    else:
        gram, vectors = torch.linalg.eigh(centred.mT @ centred)
        axes = vectors.mT
    kept = gram > gram.max() * max(count, dim) * torch.finfo(gram.dtype).eps
    return gram[kept].flip(0) / count, axes[kept].flip(0)


def train_reader(
    reader, patterns, memory_size=100, steps=200, lr=1e-2, generator=None, queries=None
):
    r"""Train a reader by MSE on clean queries, over memories drawn from training patterns (§5.2).

    Each step draws a memory of ``memory_size`` patterns, queries it with every stored pattern
    (:math:`x = M_{k^*}`) and takes an Adam step on :math:`\| \mathrm{read}(x) - M_{k^*} \|^2`.
    With ``queries`` the query of pattern :math:`k` is ``queries[k]`` instead, e.g. the code of
    its transformed image (the readers trained under a transformation of Table 4).

    :param nn.Module reader: a :class:`ContentReader` or :class:`MemN2NReader`.
    :param torch.Tensor patterns: training patterns ``(M, D)`` (a training split).
    :param int memory_size: patterns per memory, clipped to ``M``.
    :param int steps: Adam steps.
    :param float lr: Adam's learning rate.
    :param torch.Generator generator: draws the memories (CPU).
    :param torch.Tensor queries: optional queries ``(M, D)``, one per training pattern.
    :returns: the list of per-step losses.
    """
    if not isinstance(reader, nn.Module):
        raise TypeError(f"reader must be an nn.Module, got {type(reader).__name__}")
    if not isinstance(patterns, torch.Tensor) or patterns.dim() != 2:
        shape = getattr(patterns, "shape", patterns)
        raise ValueError(f"patterns must be a (M, D) tensor, got {shape}")
    as_int(steps, "steps", 1)
    check_generator(generator)
    if queries is not None and (
        not isinstance(queries, torch.Tensor) or queries.shape != patterns.shape
    ):
        shape = getattr(queries, "shape", queries)
        raise ValueError(
            f"queries must have the shape of patterns {tuple(patterns.shape)}, got {shape}"
        )
    size = min(as_int(memory_size, "memory_size", 1), len(patterns))
    # before any step: the reader's maps take patterns of its width only
    dim = getattr(reader, "dim", None)
    if dim is not None and patterns.shape[-1] != dim:
        raise ValueError(
            f"patterns must have width {dim}, that of the reader, got {tuple(patterns.shape)}"
        )
    optimizer = torch.optim.Adam(reader.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        index = torch.randperm(len(patterns), generator=generator)[:size].to(patterns.device)
        memory = patterns[index]
        asked = memory if queries is None else queries[index]
        loss = (reader(asked, memory) - memory).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _check_read(queries, memory, batched=False, dim=None, reader=None):
    """Raise a one-line error naming the argument, the shape expected and the shape given,
    unless ``queries`` and ``memory`` are floating-point ``(B, D)`` and ``(N, D)`` (or
    ``(S, B, D)`` and ``(S, N, D)`` when ``batched``) with ``N >= 1``, of one dtype and on one
    device, with ``D = dim`` for a reader whose maps take that width (torch would stop in a
    Linear with "mat1 and mat2 shapes cannot be multiplied"), and of the dtype and on the
    device of the parameters of ``reader`` where its maps read them.

    :raises TypeError: a tensor that is not floating-point, or of another dtype.
    :raises ValueError: a shape, width or device other than the above, or an empty memory.
    """
    dims = (2, 3) if batched else (2,)
    for name, x, rows in (("queries", queries, "B"), ("memory", memory, "N")):
        expected = f"({rows}, D)" + (f" or (S, {rows}, D)" if batched else "")
        as_float_tensor(x, name, f" of shape {expected}")
        if x.dim() not in dims:
            raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    if queries.shape[:-2] != memory.shape[:-2]:
        raise ValueError(
            f"queries {tuple(queries.shape)} and memory {tuple(memory.shape)} must have the "
            "same leading dims (one memory per leading index)"
        )
    if queries.shape[-1] != memory.shape[-1]:
        raise ValueError(
            f"queries and memory must have the same width D, got queries "
            f"{tuple(queries.shape)} and memory {tuple(memory.shape)}"
        )
    if dim is not None and memory.shape[-1] != dim:
        raise ValueError(
            f"queries and memory must have width {dim}, that of the reader: expected (..., {dim}),"
            f" got queries {tuple(queries.shape)} and memory {tuple(memory.shape)}"
        )
    if memory.shape[-2] == 0:
        raise ValueError(f"memory must hold at least one pattern, got shape {tuple(memory.shape)}")
    check_dtype(queries, "queries", memory.dtype, "memory is")
    check_device(queries, "queries", memory.device, "memory is")
    if reader is not None:
        check_net_input(reader, memory, "memory", "the reader's parameters are")
