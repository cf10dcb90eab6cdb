"""The discretized logistic mixture of PixelCNN++ as a Pyro distribution."""

import math

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.util import sum_rightmost
from torch.distributions.utils import clamp_probs

from pyromem.checks import as_positive_int, as_shape, batch_shape_of

# PixelCNN++ clamps log-scales from below so that a collapsing component cannot
# make the density (and the gradients) blow up on the bin it sits on.
MIN_LOG_SCALE = -7.0

# Below this bin width (in units of the component's scale) the mid-point rule is
# exact to float precision (its relative error is about width**2 / 24), while the
# exact CDF difference needs log(1 - exp(-width)), which is -inf once a huge scale
# makes the width underflow.
_MIDPOINT_WIDTH = 1e-4


def num_params(num_channels, num_mixtures):
    """The number of decoder output channels for ``num_mixtures`` components on
    ``num_channels`` channels: ``K + 2 K C + K C (C - 1) / 2``.
    """
    c, k = num_channels, num_mixtures
    return k + 2 * k * c + k * c * (c - 1) // 2


class DiscretizedLogisticMixture(TorchDistribution):
    r"""A mixture of discretized logistics over images with ``num_bins`` levels per
    channel, with the linear channel-autoregressive means of PixelCNN++.

    Data ``x`` lie in :math:`[0, 1]` on the grid :math:`x = k / (B - 1)`,
    :math:`k = 0, \dots, B - 1`, and are rescaled to :math:`y = 2x - 1 \in [-1, 1]`,
    where bin :math:`k` has centre :math:`y_k` and half-width :math:`\delta = 1 / (B - 1)`.
    At each pixel one of :math:`K` components is shared by the :math:`C` channels:

    .. math::

        p(x) = \sum_{k=1}^K \pi_k \prod_{c=1}^C
            \left[\sigma\!\left(\frac{y_c + \delta - \mu_{kc}}{s_{kc}}\right)
                - \sigma\!\left(\frac{y_c - \delta - \mu_{kc}}{s_{kc}}\right)\right],
        \qquad \mu_{kc} = m_{kc} + \sum_{c' < c} \alpha_{k c c'} \, y_{c'},

    where the lowest bin integrates from :math:`-\infty` (the first sigmoid only) and
    the highest bin up to :math:`+\infty` (one minus the second sigmoid), so that the
    :math:`B` probabilities of a channel sum to one. The log of each CDF difference
    is computed in log space,
    :math:`\log(\sigma(a) - \sigma(b)) = \log\sigma(a) + \log\sigma(-b) + \log(1 - e^{b-a})`,
    which is exact in the tails where PixelCNN++ needs its mid-point fallback; the
    mid-point rule :math:`\log p_{\text{logistic}}(y_c) + \log 2\delta` is kept only for
    bins narrower than ``1e-4`` scales, where it is exact to float precision.

    ``params`` is the decoder output, of shape ``batch_shape + (P,) + spatial``
    with :math:`P = K + 2KC + KC(C-1)/2` (see :func:`num_params`), laid out along
    dim ``P`` as

    - ``[0, K)``: the mixture logits :math:`\log \pi_k` (unnormalised);
    - ``[K, K + KC)``: the means :math:`m_{kc}` at index ``K + k C + c``;
    - ``[K + KC, K + 2KC)``: the log-scales :math:`\log s_{kc}` at ``K + KC + k C + c``,
      clamped below at ``-7`` as in PixelCNN++;
    - ``[K + 2KC, P)``: the pre-``tanh`` coefficients :math:`\alpha_{kcc'}`, ``K C(C-1)/2``
      of them at ``K + 2KC + k C(C-1)/2 + j``, where ``j`` runs over the pairs
      :math:`c' < c` in row-major order, ``(1, 0), (2, 0), (2, 1)`` for RGB.

    Means are on the :math:`[-1, 1]` scale of :math:`y`.

    Reference:

    [1] Tim Salimans, Andrej Karpathy, Xi Chen, Diederik P. Kingma,
        "PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture
        Likelihood and Other Modifications", ICLR 2017.

    :param torch.Tensor params: ``batch_shape + (P,) + event_shape[1:]``.
    :param tuple event_shape: the shape ``(C,) + spatial`` of one datapoint, e.g.
        ``(3, 32, 32)``; ``spatial`` may be empty (a single pixel).
    :param int num_bins: the number :math:`B \ge 2` of levels per channel (256 for 8-bit data).
    """

    arg_constraints = {"params": constraints.real}
    has_rsample = False

    def __init__(self, params, event_shape, num_bins=256, validate_args=None):
        event_shape = as_shape(event_shape, "event_shape")
        num_bins = as_positive_int(num_bins, "num_bins")
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        channels, spatial = event_shape[0], event_shape[1:]
        per_component = num_params(channels, 1)
        if not isinstance(params, torch.Tensor):
            raise TypeError(f"params must be a torch.Tensor, got {type(params).__name__}")
        p = params.shape[-len(event_shape)] if params.dim() >= len(event_shape) else 0
        if p == 0 or p % per_component != 0:
            raise ValueError(
                f"params must have shape (*batch, P{''.join(f', {d}' for d in spatial)}) with "
                f"P = K * {per_component} for K mixtures of {channels} channels, "
                f"got {tuple(params.shape)}"
            )
        batch_shape = batch_shape_of(params, torch.Size((p,)) + spatial, "params")
        self.params = params
        self.num_mixtures = p // per_component
        self.num_bins = num_bins
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    @property
    def support(self):
        return constraints.independent(constraints.unit_interval, len(self.event_shape))

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        params = self.params.expand(batch_shape + self.params.shape[len(self.batch_shape) :])
        return type(self)(params, self.event_shape, self.num_bins, validate_args=False)

    def _unpack(self):
        """Split ``params`` into logits ``batch + (K,) + spatial``, means and
        log-scales ``batch + (K, C) + spatial`` and tanh-squashed coefficients
        ``batch + (K, C(C-1)/2) + spatial``.
        """
        k, c = self.num_mixtures, self.event_shape[0]
        spatial = self.event_shape[1:]
        dim = -1 - len(spatial)
        logits, locs, log_scales, coeffs = self.params.split(
            [k, k * c, k * c, k * c * (c - 1) // 2], dim=dim
        )
        lead = self.params.shape[: self.params.dim() + dim]
        locs = locs.reshape(lead + (k, c) + spatial)
        log_scales = log_scales.reshape(lead + (k, c) + spatial).clamp(min=MIN_LOG_SCALE)
        coeffs = coeffs.reshape(lead + (k, c * (c - 1) // 2) + spatial).tanh()
        return logits, locs, log_scales, coeffs

    def _channel_mean(self, locs, coeffs, y, c):
        """The mean ``locs[c] + sum_{c' < c} coeffs[c, c'] * y[c']`` of channel ``c``.

        ``locs`` is ``(..., C) + spatial``, ``coeffs`` is ``(..., C(C-1)/2) + spatial``
        and ``y`` broadcasts against them with at least ``c`` channels.
        """
        dim = -1 - len(self.event_shape[1:])
        mean = locs.select(dim, c)
        for c_prev in range(c):
            # Pairs (c, c') with c' < c are numbered row-major: (1, 0), (2, 0), (2, 1), ...
            mean = mean + coeffs.select(dim, c * (c - 1) // 2 + c_prev) * y.select(dim, c_prev)
        return mean

    def log_prob(self, value):
        """
        :param torch.Tensor value: images in ``[0, 1]`` on the bin grid, of shape
            ``sample_shape + batch_shape + event_shape``.
        :returns: log-probabilities of shape ``sample_shape + batch_shape``, summed
            over the event dims.
        """
        if self._validate_args:
            self._validate_sample(value)
        logits, locs, log_scales, coeffs = self._unpack()
        spatial = self.event_shape[1:]
        mix_dim = -2 - len(spatial)
        # One y per component: the components share the observed channels.
        y = (2 * value - 1).unsqueeze(mix_dim)
        means = [self._channel_mean(locs, coeffs, y, c) for c in range(self.event_shape[0])]
        centred = y - torch.stack(torch.broadcast_tensors(*means), mix_dim + 1)
        inv_scale = torch.exp(-log_scales)
        half_width = 1.0 / (self.num_bins - 1)
        upper = inv_scale * (centred + half_width)
        lower = inv_scale * (centred - half_width)
        width = 2 * half_width * inv_scale

        # Interior bins: log(sigmoid(upper) - sigmoid(lower)) in log space; the
        # clamp keeps the unused branch of torch.where finite, so its gradient is too.
        log_delta = (
            F.logsigmoid(upper)
            + F.logsigmoid(-lower)
            + torch.log(-torch.expm1(-width.clamp(min=_MIDPOINT_WIDTH)))
        )
        mid = inv_scale * centred
        log_midpoint = mid - log_scales - 2 * F.softplus(mid) + math.log(2 * half_width)
        log_interior = torch.where(width > _MIDPOINT_WIDTH, log_delta, log_midpoint)
        # Edge bins take the whole tail: (-inf, y_0 + delta] and [y_{B-1} - delta, inf).
        log_probs = torch.where(
            y < -1 + half_width,
            F.logsigmoid(upper),
            torch.where(y > 1 - half_width, F.logsigmoid(-lower), log_interior),
        )

        log_probs = log_probs.sum(mix_dim + 1) + torch.log_softmax(logits, mix_dim + 1)
        return sum_rightmost(torch.logsumexp(log_probs, mix_dim + 1), len(spatial))

    def sample(self, sample_shape=()):
        """Draw one component per pixel, then the channels in order, each from its
        logistic given the quantised channels before it, quantised to the bin grid.

        :returns: images of shape ``sample_shape + batch_shape + event_shape`` with
            values ``k / (num_bins - 1)``.
        """
        with torch.no_grad():
            logits, locs, log_scales, coeffs = self._unpack()
            mix_dim = -1 - len(self.event_shape[1:])
            component = torch.distributions.Categorical(logits=logits.movedim(mix_dim, -1))
            one_hot = F.one_hot(component.sample(torch.Size(sample_shape)), self.num_mixtures)
            # (sample, batch, K, 1, *spatial): selects the drawn component by summing over K.
            one_hot = one_hot.movedim(-1, mix_dim).unsqueeze(mix_dim).to(locs.dtype)
            locs, log_scales, coeffs = (
                (one_hot * t).sum(mix_dim - 1) for t in (locs, log_scales, coeffs)
            )
            top = self.num_bins - 1
            y = []
            for c in range(self.event_shape[0]):
                mean = self._channel_mean(locs, coeffs, torch.stack(y, mix_dim) if y else None, c)
                u = clamp_probs(torch.rand(mean.shape, dtype=mean.dtype, device=mean.device))
                draw = mean + log_scales.select(mix_dim, c).exp() * (u.log() - (-u).log1p())
                # Rounding is exact quantisation: bin k holds [y_k - delta, y_k + delta),
                # and the clamp gives the edge bins their tails.
                level = torch.round((draw + 1) / 2 * top).clamp(0, top)
                y.append(2 * level / top - 1)
            return (torch.stack(y, mix_dim) + 1) / 2
