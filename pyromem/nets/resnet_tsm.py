r"""A ResNet-18 image encoder with a temporal shift along the episode axis.

The Temporal Shift Module (TSM) of Lin et al. moves a fraction of the channels of
each feature map one step along the time axis, so that 2D convolutions mix
information between neighbouring frames at no cost in parameters or FLOPs.
Kanerva++ applies it to the images of an episode instead of the frames of a
video, so that each image's encoding sees the rest of the episode.

For a feature map :math:`x_{t,c}` of an episode of :math:`T` images with
:math:`C` channels and a shift of :math:`k = \lfloor f C \rfloor` channels,

.. math::

    \mathrm{shift}(x)_{t,c} = \begin{cases}
        x_{t-1,c} & 0 \le c < k \\
        x_{t+1,c} & k \le c < 2k \\
        x_{t,c} & 2k \le c < C,
    \end{cases}
    \qquad x_{-1,c} = x_{T,c} = 0.

Zero padding (rather than a circular shift) keeps the two ends of the episode
from mixing. The shift sits at the start of each residual branch ("residual
shift"), so the shortcut still carries every image's own unshifted features.
With one shift per block, the output for image :math:`t` depends only on images
:math:`t - 8, \dots, t + 8` of its episode, and never on other episodes.

**References:**

1. *Deep Residual Learning for Image Recognition*,
   Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun (CVPR 2016)
2. *TSM: Temporal Shift Module for Efficient Video Understanding*,
   Ji Lin, Chuang Gan, Song Han (ICCV 2019)
3. *Group Normalization*, Yuxin Wu, Kaiming He (ECCV 2018)
4. *Kanerva++: Extending the Kanerva Machine with Differentiable, Locally Block
   Allocated Latent Memory*, Jason Ramapuram, Yan Wu, Alexandros Kalousis
   (ICLR 2021), §3.3 and App. E
"""

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from pyromem.checks import as_float_tensor, as_positive_int, as_shape, check_net_input

# The layout of ResNet-18: two BasicBlocks in each of four stages.
BLOCKS_PER_STAGE = (2, 2, 2, 2)
STAGE_WIDTHS = (1, 2, 4, 8)


def _as_fraction(value, name):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    # Above 1/2 the forward and backward shifts would claim more than C channels.
    if not 0 <= value <= 0.5:
        raise ValueError(f"{name} must lie in [0, 0.5], got {value}")
    return float(value)


def temporal_shift(x, fraction=0.125):
    """Shift a fraction of the channels one step forward and as many one step
    backward along the episode axis, with zero padding.

    :param torch.Tensor x: feature maps of shape ``batch_shape + (T, C, H, W)``.
    :param float fraction: the fraction ``f`` in ``[0, 0.5]`` of channels shifted
        each way: channels ``[0, k)`` move forward (image ``t`` gets image
        ``t - 1``'s, image ``0`` gets zeros), channels ``[k, 2k)`` move backward
        (image ``t`` gets image ``t + 1``'s, the last gets zeros), the rest stay,
        where ``k = floor(C * f)``.
    :returns: a new tensor of the shape of ``x``.
    :raises TypeError: if ``x`` is not a tensor or ``fraction`` not a real number.
    :raises ValueError: if ``x`` has fewer than 4 dims or ``fraction`` is outside ``[0, 0.5]``.
    """
    fraction = _as_fraction(fraction, "fraction")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 4:
        raise ValueError(f"x must have shape (*batch, T, C, H, W), got {tuple(x.shape)}")
    k = int(x.shape[-3] * fraction)
    out = torch.zeros_like(x)
    out[..., 1:, :k, :, :] = x[..., :-1, :k, :, :]
    out[..., :-1, k : 2 * k, :, :] = x[..., 1:, k : 2 * k, :, :]
    out[..., 2 * k :, :, :] = x[..., 2 * k :, :, :]
    return out


class _GroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` without torch's check "Expected more than 1 value per
    channel when training", which counts the images of the batch too: it would stop a lone
    image whose groups hold one value each (1×1 maps, one channel per group), though the
    same image in a batch of two is encoded, to the same features."""

    def forward(self, x):
        return torch.group_norm(
            x, self.num_groups, self.weight, self.bias, self.eps, torch.backends.cudnn.enabled
        )


def _group_norm(channels):
    # GroupNorm normalises each image on its own, so an episode's encoding never
    # depends on the other episodes of the batch (BatchNorm's would).
    groups = max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)
    return _GroupNorm(groups, channels)


class _BasicBlock(nn.Module):
    """shift → conv3×3 → norm → ReLU → conv3×3 → norm, plus the shortcut, then ReLU."""

    def __init__(self, c_in, c_out, stride, shift_fraction):
        super().__init__()
        self.shift_fraction = shift_fraction
        # No conv biases: the norm that follows each convolution has its own.
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _group_norm(c_out)
        if stride == 1 and c_in == c_out:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _group_norm(c_out)
            )

    def forward(self, h, episode):
        """
        :param torch.Tensor h: ``(N * T, c_in, H, W)``, the images of each episode contiguous.
        :param tuple episode: ``(N, T)``.
        :returns: ``(N * T, c_out, H', W')``.
        """
        shifted = temporal_shift(h.reshape(episode + h.shape[1:]), self.shift_fraction)
        branch = F.relu(self.norm1(self.conv1(shifted.reshape(h.shape))))
        branch = self.norm2(self.conv2(branch))
        return F.relu(branch + self.shortcut(h))


class ResNet18TSM(nn.Module):
    """A ResNet-18 encoder for small images with a temporal shift along the
    episode axis at the start of each residual branch (TSM-ResNet18 of Kanerva++).

    The stem is the small-image ("CIFAR") one: a 3×3 convolution at stride 1, a
    norm and a ReLU, and no max-pool. Four stages of two BasicBlocks follow, with
    ``base_width * (1, 2, 4, 8)`` channels; stages 2-4 halve the height and width
    (rounding up) and start with a 1×1 projection shortcut, so 8×8 images reach
    the last stage at 1×1. Global average pooling and a linear map give the features.

    Unlike Kanerva++ (App. E), which uses BatchNorm, every normalisation is a
    GroupNorm with the largest number of groups up to 32 that divides the
    channels: the encoding of an episode must not depend on the other episodes of
    the batch, nor differ between training and evaluation.

    :param tuple image_shape: the shape ``(C, H, W)`` of one image.
    :param int features: the width of each image's output.
    :param int base_width: the channels of the first stage.
    :param float shift_fraction: the fraction of channels shifted each way along
        the episode axis (see :func:`temporal_shift`); ``0`` encodes each image alone.
    :raises TypeError: if ``image_shape`` is not a tuple of ints, ``features`` or
        ``base_width`` not an int, or ``shift_fraction`` not a real number.
    :raises ValueError: if ``image_shape`` is not 3 positive dims, ``features`` or
        ``base_width`` not positive, or ``shift_fraction`` outside ``[0, 0.5]``.

    ``forward(x)`` maps episodes ``x`` of shape ``batch_shape + (T, C, H, W)``,
    the episode axis at dim ``-4`` (an empty ``batch_shape`` is one episode), to
    features of shape ``batch_shape + (T, features)``.
    """

    def __init__(self, image_shape, features, base_width=64, shift_fraction=0.125):
        super().__init__()
        self.image_shape = as_shape(image_shape, "image_shape", ndim=3)
        self.features = as_positive_int(features, "features")
        base_width = as_positive_int(base_width, "base_width")
        shift_fraction = _as_fraction(shift_fraction, "shift_fraction")
        self.stem = nn.Sequential(
            nn.Conv2d(self.image_shape[0], base_width, 3, padding=1, bias=False),
            _group_norm(base_width),
            nn.ReLU(),
        )
        self.blocks = nn.ModuleList()
        c_in = base_width
        for stage, (blocks, scale) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_WIDTHS, strict=True)):
            c_out = base_width * scale
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                self.blocks.append(_BasicBlock(c_in, c_out, stride, shift_fraction))
                c_in = c_out
        self.linear = nn.Linear(c_in, self.features)

    def forward(self, x):
        """
        :param torch.Tensor x: ``batch_shape + (T, C, H, W)``.
        :returns: ``batch_shape + (T, features)``.
        :raises TypeError: if ``x`` is not a floating-point tensor of the parameters' dtype.
        :raises ValueError: if ``x`` does not have that shape or is on another device than the
            parameters.
        """
        as_float_tensor(x, "x", " of episodes (*batch, T, C, H, W)")
        if x.dim() < 4 or x.shape[-3:] != self.image_shape:
            expected = ", ".join(map(str, self.image_shape))
            raise ValueError(f"x must have shape (*batch, T, {expected}), got {tuple(x.shape)}")
        check_net_input(self, x, "x")
        batch_shape, steps = x.shape[:-4], x.shape[-4]
        episode = (math.prod(batch_shape), steps)
        h = self.stem(x.reshape((math.prod(episode),) + self.image_shape))
        for block in self.blocks:
            h = block(h, episode)
        out = self.linear(h.mean(dim=(-2, -1)))
        return out.reshape(batch_shape + (steps, self.features))
