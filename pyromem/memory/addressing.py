"""Content-based addressing: the similarity S(m_a, x) of Variational Memory Addressing (eq. 4-6).

Each memory slot m_a is embedded by h(m_a) = e_a and a query by h^q(x) = e^q
(eq. 6); the address distribution over the |M| slots is a softmax over

    S(m_a, x) = <e_a, e^q> / ‖e_a‖      ("normalized", eq. 5)
    S(m_a, x) = <e_a, e^q>               ("dot")
    S(m_a, x) = <e_a, e^q> / (‖e_a‖ ‖e^q‖)   ("cosine")

(Bornschein et al. 2017, §2). One matrix product scores a batch of queries
against all slots, O(|M| |B| |e|), and the norms divide its columns: the slots'
norms are taken once per memory (:class:`SlotKeys`) and shared by q(a | x) and
p(a | M), so that the work per slot is the key net h and one column of the product.

Distributions over the slots serve the address's estimators:
:class:`InverseCDFCategorical` draws a discrete address with one cumulative sum
per query and one uniform per draw, :class:`ExpRelaxedCategorical` is the log
of a Concrete (Gumbel-softmax) relaxation of it, and :class:`ConcreteAddress`
is that relaxation scored as the categorical it relaxes.
"""

from typing import NamedTuple

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch import nn
from torch.distributions import kl_divergence, register_kl, relaxed_categorical

from pyromem.checks import as_float_tensor, as_int, check_device

SIMILARITIES = ("normalized", "dot", "cosine")
PRIORS = ("learned", "flat")
# keeps the norms of all-zero embeddings from dividing by zero
EPS = 1e-6


def similarity(keys, query, kind="normalized"):
    """S(m_a, x) of every slot a for every query.

    :param torch.Tensor keys: the slot embeddings e_a, shape ``(N, E)``.
    :param torch.Tensor query: query embeddings e^q, shape ``batch_shape + (E,)``.
    :param str kind: ``"normalized"`` (eq. 5), ``"dot"`` or ``"cosine"``.
    :returns: the similarities, shape ``batch_shape + (N,)``.
    :raises TypeError: if ``keys`` or ``query`` is not a floating-point tensor, or their
        dtypes differ.
    :raises ValueError: if ``kind`` is unknown or the shapes do not match.
    """
    if kind not in SIMILARITIES:
        raise ValueError(f"kind: expected one of {SIMILARITIES}, got {kind!r}")
    as_float_tensor(keys, "keys")
    as_float_tensor(query, "query")
    if query.dtype != keys.dtype:
        raise TypeError(
            f"keys and query: expected one dtype, got keys {keys.dtype} and query {query.dtype}"
        )
    check_device(query, "query", keys.device, "the keys are")
    if keys.dim() != 2 or query.dim() == 0 or query.shape[-1:] != keys.shape[-1:]:
        raise ValueError(
            f"keys and query: expected keys (N, E) and query (..., E), got keys "
            f"{tuple(keys.shape)} and query {tuple(query.shape)}"
        )
    if len(keys) == 0:
        raise ValueError("keys: expected at least one slot (N >= 1), got an empty memory (0, E)")
    return _scores(SlotKeys.of(keys, kind), query, kind)


class SlotKeys(NamedTuple):
    """The slot embeddings e_a = h(m_a) and the factor 1 / ‖e_a‖ of S, taken once per memory.

    :ivar torch.Tensor embeddings: e_a, shape ``(N, E)``.
    :ivar torch.Tensor scale: 1 / ‖e_a‖, shape ``(N,)`` (``"normalized"``, ``"cosine"``),
        or ``None`` (``"dot"``).
    """

    embeddings: torch.Tensor
    scale: torch.Tensor | None

    @classmethod
    def of(cls, embeddings, kind="normalized"):
        """The keys of embeddings ``(N, E)`` for the similarity ``kind``."""
        if kind == "dot":
            return cls(embeddings, None)
        return cls(embeddings, 1 / (embeddings.norm(dim=-1) + EPS))


def _scores(keys, query, kind):
    # <e_q, e_a> / ‖e_a‖ as one product whose columns are scaled: B·N multiplications
    # rather than a normalised copy of the N·E keys for each query set
    scores = query @ keys.embeddings.T
    if keys.scale is not None:
        scores = scores * keys.scale
    if kind == "cosine":
        scores = scores / (query.norm(dim=-1, keepdim=True) + EPS)
    return scores


class Addressing(nn.Module):
    """The logits of q(a | x) ∝ exp S(m_a, x) (eq. 4) and of the prior p(a | M).

    The prior uses a learned query point e^p in place of e^q (the embedding net
    h is shared between p and q), or is flat, p(a) = 1/|M|.

    :param nn.Module key_net: h, maps slots ``(N,) + memory_shape`` to ``(N, E)``.
    :param nn.Module query_net: h^q, maps queries ``batch_shape + input_shape`` to
        ``batch_shape + (E,)``.
    :param int embedding_dim: E.
    :param str kind: the similarity, one of :data:`SIMILARITIES`.
    :param str prior: ``"learned"`` (a query point e^p) or ``"flat"``.
    """

    def __init__(self, key_net, query_net, embedding_dim, kind="normalized", prior="learned"):
        super().__init__()
        if kind not in SIMILARITIES:
            raise ValueError(f"similarity: expected one of {SIMILARITIES}, got {kind!r}")
        if prior not in PRIORS:
            raise ValueError(f"prior: expected one of {PRIORS}, got {prior!r}")
        for name, net in (("key_net", key_net), ("query_net", query_net)):
            if not isinstance(net, nn.Module):
                raise TypeError(f"{name}: expected an nn.Module, got {type(net).__name__}")
        as_int(embedding_dim, "embedding_dim", 1, form="expected")
        self.key_net, self.query_net, self.kind = key_net, query_net, kind
        self.prior_query = nn.Parameter(torch.zeros(embedding_dim)) if prior == "learned" else None

    def keys(self, memory):
        """The :class:`SlotKeys` of a memory ``(N,) + memory_shape``: e_a = h(m_a), ``(N, E)``,
        and the factor of S, for :meth:`posterior_logits` and :meth:`prior_logits`."""
        return SlotKeys.of(self.key_net(memory), self.kind)

    def _keys(self, keys, query=None, query_name=None):
        """``keys`` as :class:`SlotKeys`, checked against the query embeddings (shapes, dtype
        and device only: no value is read), so that a key or query net of another width than
        ``embedding_dim`` is named rather than left to torch's matmul."""
        embeddings = keys.embeddings if isinstance(keys, SlotKeys) else keys
        as_float_tensor(embeddings, "keys", " of slot embeddings (N, E)")
        if embeddings.dim() != 2:
            raise ValueError(
                f"keys: expected slot embeddings (N, E), got {tuple(embeddings.shape)}"
            )
        if query is None:
            return keys if isinstance(keys, SlotKeys) else SlotKeys.of(keys, self.kind)
        as_float_tensor(query, query_name)
        if query.dim() == 0 or query.shape[-1] != embeddings.shape[-1]:
            raise ValueError(
                f"keys and {query_name}: expected keys (N, E) and {query_name} (..., E) of one "
                f"width E, got keys {tuple(embeddings.shape)} and {query_name} "
                f"{tuple(query.shape)}"
            )
        if query.dtype != embeddings.dtype:
            raise TypeError(
                f"keys and {query_name}: expected one dtype, got keys {embeddings.dtype} and "
                f"{query_name} {query.dtype}"
            )
        check_device(query, query_name, embeddings.device, "the keys are")
        return keys if isinstance(keys, SlotKeys) else SlotKeys.of(keys, self.kind)

    def posterior_logits(self, keys, x):
        """S(m_a, x), the logits of q(a | x), shape ``batch_shape + (N,)``.

        :param keys: :meth:`keys` of the memory, or the embeddings e_a ``(N, E)``.
        :param torch.Tensor x: queries ``batch_shape + input_shape``.
        """
        query = self.query_net(x)
        return _scores(self._keys(keys, query, "query_net(x)"), query, self.kind)

    def prior_logits(self, keys):
        """S(m_a, e^p), the logits of p(a | M), shape ``(N,)`` (zeros when flat).

        :param keys: :meth:`keys` of the memory, or the embeddings e_a ``(N, E)``.
        """
        if self.prior_query is None:
            keys = self._keys(keys)
            return keys.embeddings.new_zeros(keys.embeddings.shape[0])
        keys = self._keys(keys, self.prior_query, "prior_query")
        return _scores(keys, self.prior_query, self.kind)


class InverseCDFCategorical(dist.Categorical):
    """:class:`~pyro.distributions.Categorical`, drawn by inverting its cumulative sum.

    ``torch.multinomial`` draws one exponential per category and draw; here K
    draws of a ``(B, N)`` batch cost one cumulative sum over the N slots and K·B
    uniforms located by binary search, so that sampling an address is no more
    work per slot than scoring it. The first slot whose cumulative probability
    exceeds u·total is drawn (``right=True``), so a slot of probability zero
    never is.
    """

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))
        # the logits before any broadcast (a plate of particles expands them without copying):
        # one cumulative sum per query, not per draw
        logits = self._built_logits()
        base = (1,) * (len(shape) - logits.dim() + 1) + logits.shape[:-1]
        lead = next(
            (j for j in range(len(shape) + 1) if set(base[:j]) <= {1} and base[j:] == shape[j:]),
            None,
        )
        if lead is None:  # broadcast between the query dims: one cumulative sum per draw
            cdf = logits.softmax(-1).cumsum(-1).expand(shape + logits.shape[-1:]).contiguous()
            return self._invert(cdf, shape)
        # the draws of each query side by side, last: shape[lead:] + (draws,)
        cdf = logits.softmax(-1).cumsum(-1).reshape(shape[lead:] + logits.shape[-1:])
        draws = torch.Size(shape[:lead]).numel()
        index = self._invert(cdf, shape[lead:] + (draws,))
        return index.movedim(-1, 0).reshape(shape)

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new._built = self._built_logits()
        return new

    def _built_logits(self):
        """The normalised logits as built, before :meth:`expand` broadcast them (a plate of
        particles or of datapoints does), ``batch_shape + (N,)`` or fewer batch dims."""
        return self.__dict__.get("_built", self.logits)

    def log_prob(self, value):
        """log p(a) of addresses ``value``, read from the logits as built.

        ``Categorical.log_prob`` gathers from the logits broadcast to the values' shape,
        whose gradient is a zero tensor of that whole shape (K particles times the batch
        times |M|). Here the gradient has the shape of the logits as built: one row of
        |M| per query. (Pyro's reshape of the logits for an enumerated support is kept.)
        """
        if getattr(value, "_pyro_categorical_support", None) == id(self):
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        logits = self._built_logits()
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        rows = torch.arange(logits.shape[:-1].numel(), device=value.device)
        rows = rows.reshape(logits.shape[:-1]).expand(shape)
        return logits.reshape(-1).take(rows * self._num_events + value.long().expand(shape))

    def _invert(self, cdf, shape):
        """The first slot of each row of ``cdf`` (``rows + (N,)``) past a uniform point of
        its total, for draws of ``shape`` = ``rows + (draws,)`` or ``rows``."""
        u = torch.rand(shape, dtype=cdf.dtype, device=cdf.device)
        if u.dim() == cdf.dim():  # several draws per row
            index = torch.searchsorted(cdf, u * cdf[..., -1:], right=True)
        else:
            total = cdf[..., -1:]
            index = torch.searchsorted(cdf, (u.unsqueeze(-1) * total), right=True).squeeze(-1)
        return index.clamp_max(self._num_events - 1)


class ExpRelaxedCategorical(relaxed_categorical.ExpRelaxedCategorical, TorchDistributionMixin):
    """The ExpConcrete distribution (Maddison et al. 2017, App. C) as a Pyro distribution.

    A draw y (``batch_shape + (N,)``, reparameterised) is the log of a Concrete
    relaxation of a one-hot address at ``temperature``: y = log softmax((logits + g) / τ)
    with Gumbel noise g. A KL between two such relaxations equals that between the
    Concrete distributions of exp(y), and in log space stays finite where exp(y) underflows.
    """


class ConcreteAddress(ExpRelaxedCategorical):
    """Relaxed draws of an address, scored as the categorical they relax.

    A draw is an :class:`ExpRelaxedCategorical` one (a reparameterised point of the log
    simplex), but the KL of two is that of their categoricals, KL(Cat(q) ‖ Cat(p)), as in
    the Gumbel-softmax VAE of Jang et al. (2017): an ELBO with analytic KLs
    (``TraceMeanField_ELBO``) then scores the address as the discrete model does and relaxes
    only the read. (The one-sample KL of two ExpConcrete densities has a gradient for the
    logits about ten times the discrete KL's on few-shot VMA, whatever τ.)
    """


@register_kl(ConcreteAddress, ConcreteAddress)
def _kl_concrete_address(q, p):
    return kl_divergence(dist.Categorical(logits=q.logits), dist.Categorical(logits=p.logits))
