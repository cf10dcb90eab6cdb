r"""The memory prior of Annabi et al. (2022): a Gaussian mixture centred on stored patterns.

A memory of :math:`N` patterns :math:`M_1, \dots, M_N \in \mathbb{R}^d` defines

.. math::

    p(z; M) = \sum_{k=1}^N \pi_k \, \mathcal{N}(z; M_k, \Sigma)                    \qquad (9)

with one covariance :math:`\Sigma = P^{-1}` shared by all components, and either

* balanced weights :math:`\pi_k = 1/N` (eq. 9), or
* Hopfield weights :math:`\pi_k \propto \exp(\tfrac{\beta}{2} \|M_k\|^2)` (eq. 5-6), which for
  :math:`\Sigma = \beta^{-1} I` make the energy the modern continuous Hopfield energy (eq. 7).

Every method below works in *whitened* coordinates :math:`\tilde x = L^\top x`, where
:math:`P = L L^\top`, so that :math:`(z - M_k)^\top P (z - M_k) = \|\tilde z - \tilde M_k\|^2`,
and expands the squared distance as

.. math::

    \|\tilde z - \tilde M_k\|^2 = \|\tilde z\|^2 - 2\, \tilde z \cdot \tilde M_k + \|\tilde M_k\|^2,

so a batch of :math:`B` queries against :math:`N` patterns costs one :math:`B \times N` matmul
and :math:`O(B N)` memory, never a :math:`B \times N \times d` tensor of differences.
"""

import math
import numbers

import torch
from pyro.distributions import Categorical, TorchDistribution, constraints

from pyromem.checks import as_int, as_real, broadcasts_to, check_device, check_dtype

_WEIGHTS = ("balanced", "hopfield")
#: How far below the best component, in nats, a component's logit is floored (see _logits).
LOGIT_FLOOR = 60.0


class GaussianMixtureMemory(TorchDistribution):
    r"""The distribution :math:`p(z; M)` of eq. 9 (balanced) or eq. 5-6 (Hopfield) over
    :math:`\mathbb{R}^d`.

    The log density is computed as

    .. math::

        \log p(z; M) = -E(z) - \log \textstyle\sum_k e^{\ell_k}
                       - \tfrac{d}{2} \log 2\pi + \tfrac12 \log\det P,

        E(z) = \tfrac12 \|\tilde z\|^2
               - \log \textstyle\sum_k \exp(\tilde z \cdot \tilde M_k
                                            - \tfrac12 \|\tilde M_k\|^2 + \ell_k),

    where :math:`\ell_k` are the unnormalised log weights (:math:`0` when balanced,
    :math:`\tfrac{\beta}{2}\|M_k\|^2` for Hopfield). :math:`E` is :meth:`energy`; with Hopfield
    weights and :math:`\Sigma = \beta^{-1} I` it is exactly eq. 7,
    :math:`\tfrac{\beta}{2} z^\top z - \log \sum_k \exp(\beta z^\top M_k)`.

    The covariance is given by exactly one of ``scale``, ``precision`` and
    ``precision_matrix``.

    :param torch.Tensor memory: the stored patterns, shape ``batch_shape + (N, d)`` with
        ``N >= 1``; leading dims give one memory per batch element. Any batch dim, of the
        memory or of the points given to the methods below, may be empty (size 0): the
        results are then empty, of the shapes documented.
    :param scale: isotropic standard deviation :math:`\sigma > 0` (a float or a 0-dim tensor):
        :math:`\Sigma = \sigma^2 I`.
    :param torch.Tensor precision: a diagonal precision :math:`P`, shape ``(d,)``, positive
        (the learned precision of VAE-GMM*, eq. 12, restricted to a diagonal as in App. E.2),
        of the memory's dtype and on its device.
    :param torch.Tensor precision_matrix: a full precision :math:`P`, shape ``(d, d)``,
        symmetric positive definite, of the memory's dtype and on its device; only its
        Cholesky factor is used.
    :param str weights: ``"balanced"`` (eq. 9) or ``"hopfield"`` (eq. 6).
    :param beta: the inverse temperature :math:`\beta > 0` of the Hopfield weights. With
        ``scale`` it defaults to :math:`1/\sigma^2`, the pairing of eq. 5 under which the
        energy is the Hopfield energy of eq. 7; with a precision it must be given. Only
        allowed with ``weights="hopfield"``.
    :param bool validate_args: check values (a finite memory, NaN-free queries, positivity,
        positive definiteness); shapes, types and a ``scale`` or ``beta`` given as a Python
        number are always checked. ``None``: Pyro's setting
        (:func:`pyro.enable_validation`).
    :raises ValueError: a memory of fewer than 2 dims, of no pattern (``N = 0``) or of
        patterns of width 0, or a covariance or weight argument out of range.
    :raises TypeError: a memory or argument that is not a (floating-point) tensor or number.
    """

    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        memory,
        scale=None,
        precision=None,
        precision_matrix=None,
        weights="balanced",
        beta=None,
        validate_args=None,
    ):
        if not isinstance(memory, torch.Tensor):
            raise TypeError(f"memory must be a torch.Tensor, got {type(memory).__name__}")
        if not memory.is_floating_point():
            raise TypeError(f"memory must be a floating-point tensor, got dtype {memory.dtype}")
        if memory.dim() < 2:
            raise ValueError(
                f"memory must have shape batch_shape + (N, d), got {tuple(memory.shape)}"
            )
        num_patterns, dim = memory.shape[-2:]
        if num_patterns == 0:
            raise ValueError(
                f"memory must hold at least one pattern, got shape {tuple(memory.shape)}"
            )
        if dim == 0:
            raise ValueError(f"memory patterns must have width d >= 1, got {tuple(memory.shape)}")
        if sum(x is not None for x in (scale, precision, precision_matrix)) != 1:
            raise ValueError(
                "give exactly one of scale, precision and precision_matrix, got "
                f"scale={scale!r}, precision={precision!r}, precision_matrix={precision_matrix!r}"
            )
        if weights not in _WEIGHTS:
            raise ValueError(f"weights must be one of {_WEIGHTS}, got {weights!r}")
        if beta is not None and weights != "hopfield":
            raise ValueError(f"beta is only used with weights='hopfield', got weights={weights!r}")
        if weights == "hopfield" and beta is None and scale is None:
            raise ValueError("beta is required with weights='hopfield' and a precision")

        self.memory = memory
        self.weights = weights
        self.scale = _as_scalar(scale, "scale", memory)
        self.precision = _as_width_tensor(precision, "precision", (dim,), memory)
        self.precision_matrix = _as_width_tensor(
            precision_matrix, "precision_matrix", (dim, dim), memory
        )
        if weights == "hopfield":
            self.beta = self.scale.pow(-2) if beta is None else _as_scalar(beta, "beta", memory)
        else:
            self.beta = None
        super().__init__(memory.shape[:-2], memory.shape[-1:], validate_args=validate_args)
        # the constraint positive admits inf, which makes every log density NaN
        for name in ("scale", "beta"):
            value = getattr(self, name)
            if self._validate_args and value is not None and not torch.isfinite(value):
                raise ValueError(f"{name} must be a positive finite float, got {value.item()!r}")
        if (
            self._validate_args
            and self.precision is not None
            and not self.precision.isfinite().all()
        ):
            raise ValueError(
                f"precision must be finite, got {int((~self.precision.isfinite()).sum())} "
                f"infinite values of {self.precision.numel()}"
            )
        # the constraint above refuses NaN, not inf, which makes every log density NaN; one
        # sum is finite only if every value is, and where it is not the values decide
        if self._validate_args and not (
            torch.isfinite(memory.detach().sum()) or torch.isfinite(memory).all()
        ):
            raise ValueError(
                f"memory must be finite, got {int((~torch.isfinite(memory)).sum())} NaN or "
                f"infinite values in a tensor of shape {tuple(memory.shape)}"
            )

        if self.precision_matrix is not None:
            self._tril = torch.linalg.cholesky_ex(self.precision_matrix).L
        self._white_memory = self._whiten(memory)
        if weights == "hopfield":
            self._log_weights = 0.5 * self.beta * memory.pow(2).sum(-1)
        else:
            self._log_weights = memory.new_zeros(memory.shape[:-1])
        if weights == "hopfield" and self.precision_matrix is None:
            # The z-free part of each logit, l_k - 1/2 ||L^T M_k||^2, as one sum
            # 1/2 sum_i (beta - P_ii) M_ki^2: two terms of ~beta ||M_k||^2 / 2 each would
            # cancel in rounding (by tenths of a nat in float32 at sigma = 0.01 on pixels),
            # where at the default beta = 1/sigma^2 (eq. 7, 28) it is exactly 0.
            diagonal = self.scale.pow(-2) if self.precision is None else self.precision
            self._biases = 0.5 * (memory.pow(2) * (self.beta - diagonal)).sum(-1)
        else:
            self._biases = self._log_weights - 0.5 * self._white_memory.pow(2).sum(-1)
        # E(z) drops this z-free term of -log p(z): the log normaliser of the weights
        # and the Gaussian's, 1/2 log det(2 pi Sigma).
        self._energy_offset = (
            self._log_weights.logsumexp(-1)
            + 0.5 * dim * math.log(2 * math.pi)
            - 0.5 * self._log_det_precision()
        )

    @property
    def arg_constraints(self):
        # Only the arguments in use: torch validates each entry, and reports the failing
        # one by name, when validate_args is on. An empty batch of memories holds no value to
        # check, and torch's independent constraint cannot reshape it (the finiteness check of
        # __init__ covers the memory all the same).
        candidates = {
            "memory": constraints.independent(constraints.real, 2),
            "scale": constraints.positive,
            "precision": constraints.independent(constraints.positive, 1),
            "precision_matrix": constraints.positive_definite,
            "beta": constraints.positive,
        }
        if self.memory.numel() == 0:
            del candidates["memory"]
        return {k: c for k, c in candidates.items() if getattr(self, k, None) is not None}

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(GaussianMixtureMemory, _instance)
        batch_shape = torch.Size(batch_shape)
        if not broadcasts_to(self.batch_shape, batch_shape):
            raise ValueError(
                f"batch_shape must be one that {tuple(self.batch_shape)} broadcasts to, "
                f"got {tuple(batch_shape)}"
            )
        pattern_shape = self.memory.shape[-2:]
        # Expanded memories are stride-0 views; _matmul_batched reads them without a copy.
        new.memory = self.memory.expand(batch_shape + pattern_shape)
        new._white_memory = self._white_memory.expand(batch_shape + pattern_shape)
        new._biases = self._biases.expand(batch_shape + pattern_shape[:1])
        new._log_weights = self._log_weights.expand(batch_shape + pattern_shape[:1])
        new._energy_offset = self._energy_offset.expand(batch_shape)
        for name in ("weights", "scale", "precision", "precision_matrix", "beta"):
            setattr(new, name, getattr(self, name))
        if self.precision_matrix is not None:
            new._tril = self._tril
        super(GaussianMixtureMemory, new).__init__(batch_shape, self.event_shape, False)
        new._validate_args = self._validate_args
        return new

    @property
    def num_patterns(self):
        """The number of stored patterns N."""
        return self.memory.shape[-2]

    @property
    def log_weights(self):
        r"""The normalised log mixture weights :math:`\log \pi_k`, shape ``batch_shape + (N,)``."""
        return self._log_weights - self._log_weights.logsumexp(-1, keepdim=True)

    @property
    def mean(self):
        r""":math:`\mu = \sum_k \pi_k M_k`, shape ``batch_shape + (d,)``."""
        return self._moments()[0].expand(self.batch_shape + self.event_shape)

    @property
    def variance(self):
        r"""The diagonal of :math:`\Sigma + \sum_k \pi_k (M_k - \mu)(M_k - \mu)^\top`."""
        variance = self._moments()[1] + self._covariance_diagonal()
        return variance.expand(self.batch_shape + self.event_shape)

    def log_prob(self, value):
        r""":math:`\log p(z; M)` (eq. 9 or eq. 5).

        :param torch.Tensor value: points ``z`` of shape ``sample_shape + batch_shape + (d,)``
            (any shape that broadcasts with ``batch_shape + (d,)``).
        :returns: shape ``sample_shape + batch_shape``.
        """
        return -(self.energy(value) + self._energy_offset)

    def energy(self, z):
        r"""The energy :math:`E(z) = -\log p(z; M) - C`, the prior term of the VFE (eq. 4).

        The constant :math:`C = \log \sum_k e^{\ell_k} + \tfrac12 \log\det(2\pi\Sigma)` does not
        depend on ``z``. With Hopfield weights and :math:`\Sigma = \beta^{-1} I` (the default
        :math:`\beta = 1/\sigma^2`) this is eq. 7,
        :math:`\tfrac{\beta}{2} z^\top z - \log \sum_k \exp(\beta z^\top M_k)`, and
        :math:`C = \log \sum_k e^{\beta \|M_k\|^2 / 2} + \tfrac{d}{2} \log(2\pi/\beta)`
        (eq. 21-24). Balanced and isotropic, it is the prior term of eq. 29,
        :math:`-\log \sum_k \exp(-\|z - M_k\|^2 / 2\sigma^2)`.

        :param torch.Tensor z: shape ``(..., d)``, broadcasting with ``batch_shape``.
        :returns: shape ``broadcast(z.shape[:-1], batch_shape)``.
        """
        z = self._check_query(z, "z")
        white = self._whiten(z)
        # The ||z||^2 term is common to all components: it stays out of the log-sum-exp,
        # which therefore sees only the spread between components, even for far-away z.
        return 0.5 * white.pow(2).sum(-1) - self._logits(white).logsumexp(-1)

    def responsibilities(self, z):
        r"""The posterior over components :math:`r_k(z) = \pi_k \mathcal{N}(z; M_k, \Sigma) /
        p(z; M)`, the softmax of eq. 11-12 (and of eq. 28 in the Hopfield case).

        :param torch.Tensor z: shape ``(..., d)``, broadcasting with ``batch_shape``.
        :returns: shape ``broadcast(z.shape[:-1], batch_shape) + (N,)``, summing to one.
        """
        z = self._check_query(z, "z")
        return self._logits(self._whiten(z)).softmax(-1)

    def fixed_point_step(self, z, alpha=None):
        r"""One step of iterative retrieval: gradient descent on :meth:`energy` (eq. 44).

        Since :math:`\nabla E(z) = P\,(z - \bar m(z))` with
        :math:`\bar m(z) = \sum_k r_k(z) M_k`, a step of rate :math:`\alpha` is

        .. math::

            z \leftarrow z + \alpha P \, (\bar m(z) - z),

        i.e. :math:`z + \tfrac{\alpha}{\sigma^2}(\bar m - z)` for isotropic :math:`\sigma`
        (eq. 44, and eq. 27 with Hopfield weights), :math:`z + \alpha\, P \odot (\bar m - z)`
        for a diagonal precision, and :math:`z + \alpha P (\bar m - z)` for a full one.

        ``alpha=None`` takes the full step :math:`z \leftarrow \bar m(z)`: eq. 45 = eq. 11
        (which is ``alpha=sigma**2``), eq. 12 for a precision, eq. 28 (the MCHN update
        :math:`M^\top \mathrm{softmax}(\beta M z)`) with Hopfield weights and
        :math:`\beta = 1/\sigma^2`. This is an EM (majorise-minimise) step, so the energy never
        increases along it; nor along gradient steps with
        :math:`0 < \alpha \le 2 / \lambda_{\max}(P)`.

        :param torch.Tensor z: shape ``(..., d)``, broadcasting with ``batch_shape``.
        :param alpha: the rate :math:`\alpha > 0`, or ``None`` for the full step.
        :returns: the new ``z``, shape ``broadcast(z.shape[:-1], batch_shape) + (d,)``.
        """
        z = self._check_query(z, "z")
        if alpha is not None and (
            isinstance(alpha, bool)
            or not isinstance(alpha, numbers.Real)
            or not 0 < alpha < math.inf
        ):
            raise ValueError(f"alpha must be a positive finite float or None, got {alpha!r}")
        pull = _matmul_batched(self.responsibilities(z), self.memory, transpose=False)
        if alpha is None:
            return pull
        step = pull - z
        if self.scale is not None:
            step = step * (alpha / self.scale**2)
        elif self.precision is not None:
            step = step * (alpha * self.precision)
        else:
            step = alpha * (step @ self.precision_matrix)
        return z + step

    def fixed_point(self, z, num_steps, alpha=None, trajectory=False):
        r"""Iterative retrieval: ``num_steps`` :meth:`fixed_point_step`\ s from ``z``, the one
        loop of the library's fixed-point readers (:class:`~pyromem.infer.MemoryFixedPoint`,
        :class:`~pyromem.retrieval.FixedPointReader`).

        With a memory per batch element (``batch_shape = (S, 1)`` for memories
        ``(S, 1, N, d)``) it retrieves from ``S`` memories at once, queries ``(S, B, d)``.
        Each iterate stays in the autograd graph of ``z`` and the memory (for a precision
        trained through the steps).

        :param torch.Tensor z: the start, shape ``(..., d)``, broadcasting with ``batch_shape``.
        :param int num_steps: :math:`T \ge 0`.
        :param alpha: the rate of each step, or ``None`` for full steps (see
            :meth:`fixed_point_step`).
        :param bool trajectory: also return the list of the ``T + 1`` iterates, ``z`` first.
        :returns: the last iterate, shape that of a step's [and the list].
        """
        if as_int(num_steps, "num_steps", 0) == 0:  # else the first step checks z
            z = self._check_query(z, "z")
        path = [z]
        for _ in range(num_steps):
            z = self.fixed_point_step(z, alpha)
            if trajectory:  # else each iterate is freed once the next is computed
                path.append(z)
        return (z, path) if trajectory else z

    def sample(self, sample_shape=()):
        """Draws ``k ~ Categorical(pi)``, then ``z ~ N(M_k, Sigma)``.

        :returns: shape ``sample_shape + batch_shape + (d,)``; empty, without a draw, where
            ``sample_shape`` or ``batch_shape`` holds a 0.
        """
        sample_shape = torch.Size(sample_shape)
        shape = self._extended_shape(sample_shape)
        if shape.numel() == 0:  # an empty sample_shape or batch: no draw (Categorical refuses)
            return self.memory.new_empty(shape)
        with torch.no_grad():
            k = Categorical(logits=self._log_weights).sample(sample_shape)
            pattern_shape = self.memory.shape[-2:]
            memory = self.memory.expand(shape[:-1] + pattern_shape)
            index = k[..., None, None].expand(shape[:-1] + (1, pattern_shape[-1]))
            centres = memory.gather(-2, index).squeeze(-2)
            noise = torch.randn(shape, dtype=self.memory.dtype, device=self.memory.device)
            return centres + self._colour(noise)

    def _check_query(self, z, name):
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
        check_dtype(z, name, self.memory.dtype, "the memory is")
        check_device(z, name, self.memory.device, "the memory is")
        dim = self.event_shape[0]
        if z.dim() == 0 or z.shape[-1] != dim:
            raise ValueError(
                f"{name} must have shape (..., {dim}) to match the memory width d={dim}, "
                f"got {tuple(z.shape)}"
            )
        try:
            torch.broadcast_shapes(z.shape[:-1], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"{name} must have batch dims that broadcast with batch_shape "
                f"{tuple(self.batch_shape)}, got shape {tuple(z.shape)}"
            ) from None
        if self._validate_args and torch.isnan(z).any():
            raise ValueError(
                f"{name} must not contain NaN, got {int(torch.isnan(z).sum())} NaN entries "
                f"in a tensor of shape {tuple(z.shape)}"
            )
        return z

    def _whiten(self, x):
        """Maps x to L^T x with P = L L^T, row-wise."""
        if self.scale is not None:
            return x / self.scale
        if self.precision is not None:
            return x * self.precision.sqrt()
        return x @ self._tril

    def _colour(self, noise):
        """Maps standard normal rows to N(0, Sigma) rows: the inverse of _whiten."""
        if self.scale is not None:
            return noise * self.scale
        if self.precision is not None:
            return noise * self.precision.rsqrt()
        rows = noise.reshape(-1, noise.shape[-1])
        # x = L^{-T} eps has covariance L^{-T} L^{-1} = P^{-1}; as rows, x^T = eps^T L^{-1}.
        rows = torch.linalg.solve_triangular(self._tril, rows, upper=False, left=False)
        return rows.reshape(noise.shape)

    def _logits(self, white):
        """log pi_k N(z; M_k, Sigma) up to terms free of k: shape (..., N)."""
        cross = _matmul_batched(white, self._white_memory, transpose=True)
        # The per-component terms carry batch_shape, so the result broadcasts to it.
        logits = cross + self._biases
        # Components more than LOGIT_FLOOR nats below the best one are raised to that floor:
        # their weight e^-60 ~ 1e-26 relative to the best one's is below the precision of
        # float32 and float64 alike, so no log-sum-exp or softmax changes, but it stays far
        # above float32's smallest normal number (1e-38), so that neither exp() nor the
        # products of these weights with the patterns meet denormals, which make CPUs 10-50x
        # slower (far-apart patterns at small sigma, e.g. pixels). No gradient flows to them.
        # (in place: the new tensor's allocation would cost 5x the clamp)
        floor = logits.detach().amax(-1, keepdim=True) - LOGIT_FLOOR
        return logits.clamp_(min=floor)

    def _moments(self):
        """Mean and between-pattern variance, on the memory before any expand()."""
        memory = _compact(self.memory, 2)
        weights = _compact(self._log_weights, 1).softmax(-1).unsqueeze(-2)
        mean = weights @ memory
        return mean.squeeze(-2), (weights @ (memory - mean).pow(2)).squeeze(-2)

    def _log_det_precision(self):
        dim = self.event_shape[0]
        if self.scale is not None:
            return -2 * dim * self.scale.log()
        if self.precision is not None:
            return self.precision.log().sum()
        return 2 * self._tril.diagonal().log().sum()

    def _covariance_diagonal(self):
        if self.scale is not None:
            return self.scale.pow(2).expand(self.event_shape)
        if self.precision is not None:
            return self.precision.reciprocal()
        return torch.cholesky_inverse(self._tril).diagonal()


def _as_scalar(value, name, like):
    if value is None:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        # a Python number is checked whatever the validation flag: it costs no tensor read
        value = as_real(value, name, positive=True)
        return torch.tensor(value, dtype=like.dtype, device=like.device)
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        # an integer or bool tensor would divide as 1 or fail deep in pow(-2) (Hopfield beta)
        if not value.is_floating_point():
            raise TypeError(
                f"{name} must be a float or a 0-dim floating-point tensor, got dtype {value.dtype}"
            )
        check_device(value, name, like.device, "the memory is")
        return value
    raise TypeError(f"{name} must be a float or a 0-dim floating-point tensor, got {value!r}")


def _as_width_tensor(value, name, shape, memory):
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.shape != shape:
        raise ValueError(
            f"{name} must have shape {tuple(shape)} to match the memory width "
            f"d={memory.shape[-1]}, got {tuple(value.shape)}"
        )
    # a float64 precision would silently promote every energy, draw and fixed-point step of a
    # float32 memory to float64
    check_dtype(value, name, memory.dtype, "the memory is")
    check_device(value, name, memory.device, "the memory is")
    return value


def _matmul_batched(x, memory, transpose):
    """``x @ memory.mT`` (``transpose``) or ``x @ memory``, broadcasting batch dims.

    ``x`` has shape ``(..., a)`` and ``memory`` ``mb + (N, d)``. torch.matmul would expand
    ``memory`` to the full broadcast batch shape and copy it, an ``O(B N d)`` tensor when ``x``
    carries sample or plate dims that ``memory`` lacks. Here every batch dim where ``memory``
    has size 1 (or a stride-0 expanded view) is folded into the rows of ``x`` instead, so
    ``memory`` is never copied and the only large tensor is the ``O(B N)`` output.
    """
    memory = _compact(memory, 2)
    matrix_shape = memory.shape[-2:]
    if all(s == 1 for s in memory.shape[:-2]):
        matrix = memory.reshape(matrix_shape)
        return x @ (matrix.mT if transpose else matrix)
    batch = torch.broadcast_shapes(x.shape[:-1], memory.shape[:-2])
    memory = memory.reshape((1,) * (len(batch) + 2 - memory.dim()) + memory.shape)
    x = x.expand(batch + x.shape[-1:])
    # an empty batch dim of memory (size 0) is one of its own, as a dim of size > 1
    shared = [i for i, s in enumerate(memory.shape[:-2]) if s != 1]
    folded = [i for i, s in enumerate(memory.shape[:-2]) if s == 1]
    order = shared + folded
    rows = x.permute(order + [len(batch)]).reshape(
        math.prod(batch[i] for i in shared), math.prod(batch[i] for i in folded), x.shape[-1]
    )
    matrices = memory.reshape((-1,) + matrix_shape)
    out = torch.bmm(rows, matrices.mT if transpose else matrices)
    out = out.reshape([batch[i] for i in order] + [out.shape[-1]])
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return out.permute(inverse + [len(batch)])


def _compact(tensor, trailing):
    """Undoes expand() on the batch dims, all but the ``trailing`` last: narrows each stride-0
    one to size 1, a view of the same storage."""
    for i in range(tensor.dim() - trailing):
        if tensor.stride(i) == 0 and tensor.shape[i] > 1:
            tensor = tensor.narrow(i, 0, 1)
    return tensor
