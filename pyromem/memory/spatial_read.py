"""Differentiable block reads from a spatial memory through a spatial transformer.

Kanerva++ (Ramapuram et al. 2021, eq. 5 and App. A) reads K blocks
``m_k = f_ST(M, y_k)`` from a memory ``M`` of shape ``(C, H, W)``. Each key
``y = (y0, y1, y2) ∈ R³`` sets the affine map of a spatial transformer
(Jaderberg et al. 2015),

    θ = [[s_x, 0, t_x], [0, s_y, t_y]],

which sends the normalised coordinates of the ``h × w`` block (in [-1, 1]) to
normalised coordinates of the memory, where the memory is bilinearly sampled.

Squashing into the valid range. The paper uses θ = [[y0, 0, y1], [0, y0, y2]]
with every entry "bound between [-1, 1]". Here an unconstrained key is squashed
so that every read lies inside the memory and is never mirrored; with
``u = y / key_scale``,

    ρ   = max(h / H, w / W)                      (the block's share of the memory, ≤ 1)
    s   = ρ ** (-tanh u0)                        (zoom, in (ρ, 1/ρ); s = 1 at y0 = 0)
    s_x = s · w / W,   s_y = s · h / H           (the read's extent; s = 1 is one memory
                                                  pixel per block pixel)
    t_x = tanh(u1) · (1 − s_x),   t_y = tanh(u2) · (1 − s_y)

so ``y1`` moves the block along the width (columns) and ``y2`` along the
height (rows), ``y = 0`` reads the centred block at the memory's own
resolution, and a key with ``|y0| → ∞`` zooms out to the whole memory (along
the side of the larger share, h / H or w / W) or in to ``ρ²`` of it. A block
that touches the memory's border is reached only as ``|y1|`` or ``|y2| → ∞``.

``key_scale`` (default 3) matches the squashing to the key prior p(y) = N(0, I)
of K++: a key ``key_scale`` prior standard deviations out reaches tanh(1) ≈ 76 %
of the free range, so the bulk of p(y) spreads over the memory instead of
piling up at its borders; at the default a key one standard deviation out
moves the read by tanh(1/3) ≈ 32 % of the range (zooms by ρ^±0.32). With
``key_scale = 1`` a third of the prior's keys lie past 76 %, and the reads of
nearby keys differ by whole zooms and shifts; measured on ``digits`` episodes of one class, that
costs K++ about 0.7 of the 1.2 nats/image by which it beats the plain VAE at
``key_scale = 3`` (docs/models/kanerva.md).

Sampling uses ``align_corners=False``: coordinate ±1 is the outer edge of the
border pixels, so a block of ``h`` pixels at ``s = 1`` spans exactly ``h``
memory pixels, and an integer-aligned key reads a slice of the memory exactly.
Points are always inside the memory; ``padding_mode="border"`` only guards the
last half pixel against rounding.
"""

import math
import numbers

import torch
import torch.nn.functional as F

from pyromem.checks import as_float_tensor, broadcast_batch, check_device, check_dtype

KEY_SIZE = 3
KEY_SCALE = 3.0


def _check_block_shape(block_shape, memory_hw):
    if (
        not isinstance(block_shape, (tuple, list, torch.Size))
        or len(block_shape) != 2
        or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in block_shape)
        or min(block_shape) < 1
    ):
        raise ValueError(f"block_shape must be a pair (h, w) of positive ints, got {block_shape!r}")
    h, w = (int(d) for d in block_shape)
    if h > memory_hw[0] or w > memory_hw[1]:
        raise ValueError(
            f"block_shape {(h, w)} is larger than the memory's height and width "
            f"{tuple(memory_hw)}; a block must fit inside the memory"
        )
    return h, w


def check_key_scale(key_scale):
    """``key_scale`` as a float, or a ValueError unless it is a positive finite number."""
    if (
        isinstance(key_scale, bool)
        or not isinstance(key_scale, numbers.Real)
        or not math.isfinite(key_scale)
        or key_scale <= 0
    ):
        raise ValueError(f"key_scale must be a positive finite number, got {key_scale!r}")
    return float(key_scale)


def key_to_affine(keys, block_shape, memory_hw, key_scale=KEY_SCALE):
    """The affine maps θ of the keys, after the squashing described in the module docstring.

    :param torch.Tensor keys: ``batch_shape + (3,)``.
    :param tuple block_shape: ``(h, w)``.
    :param tuple memory_hw: ``(H, W)``.
    :param float key_scale: the key that reaches tanh(1) of the range.
    :returns: θ of shape ``batch_shape + (2, 3)``.
    """
    h, w = block_shape
    height, width = memory_hw
    rho = max(h / height, w / width)
    u0, u1, u2 = (keys / key_scale).unbind(-1)
    s = torch.exp(-torch.tanh(u0) * math.log(rho))
    s_x, s_y = s * (w / width), s * (h / height)
    t_x, t_y = torch.tanh(u1) * (1 - s_x), torch.tanh(u2) * (1 - s_y)
    zero = torch.zeros_like(s)
    return torch.stack([torch.stack([s_x, zero, t_x], -1), torch.stack([zero, s_y, t_y], -1)], -2)


def spatial_read(memory, keys, block_shape, key_scale=KEY_SCALE, *, check_values=True):
    """Read K blocks of ``h × w`` from a memory through a spatial transformer.

    Leading batch dims of ``memory`` and ``keys`` broadcast against each other
    (data, episode, vectorised particles, enumeration), so one memory per
    episode serves the keys of all its images without being copied by the caller.

    :param torch.Tensor memory: ``mem_batch + (C, H, W)``.
    :param torch.Tensor keys: ``key_batch + (K, 3)``, unconstrained.
    :param tuple block_shape: ``(h, w)`` with ``h <= H`` and ``w <= W``.
    :param float key_scale: the key that moves or zooms a read by tanh(1) ≈ 76 % of
        its range (module docstring); 3 prior standard deviations by default.
    :param bool check_values: whether to check that the keys hold no NaN and the memory
        only finite values; this reads both (a device sync on a GPU), so a model that reads
        every step with keys and a memory it made itself, as Kanerva++ does, skips it.
        Infinite keys are allowed: they read the limits of the squashing, e.g. a block at
        the memory's border.
    :returns: reads of shape ``broadcast(mem_batch, key_batch) + (K, C, h, w)``.
    :raises TypeError: if an input is not a floating-point tensor, or their dtypes differ.
    :raises ValueError: if the keys do not have 3 entries or (with ``check_values``) hold
        NaN (the border padding would turn a NaN key into a plausible read), the memory has
        fewer than 3 dims or (with ``check_values``) holds NaN or infinite values (its reads
        would be NaN), the block does not fit in the memory or ``key_scale`` is not a
        positive number.
    """
    as_float_tensor(memory, "memory")
    as_float_tensor(keys, "keys")
    # grid_sample would stop with "expected scalar type Float but found Double"
    check_dtype(keys, "keys", memory.dtype, "the memory is", verb="are")
    check_device(keys, "keys", memory.device, "the memory is")
    if memory.dim() < 3:
        raise ValueError(f"memory must have shape (..., C, H, W), got {tuple(memory.shape)}")
    if keys.dim() < 2 or keys.shape[-1] != KEY_SIZE:
        raise ValueError(
            f"keys must have shape (..., K, {KEY_SIZE}) (scale, x, y per read), "
            f"got {tuple(keys.shape)}"
        )
    if check_values and keys.isnan().any():
        raise ValueError(
            f"keys must not hold NaN, got NaN in {int(keys.isnan().sum())} of {keys.numel()} values"
        )
    if check_values and not torch.isfinite(memory).all():
        # bilinear sampling spreads a NaN or inf (0 * inf) over every read that touches it
        raise ValueError(
            f"memory must be finite, got {int((~torch.isfinite(memory)).sum())} NaN or infinite "
            f"values in a tensor of shape {tuple(memory.shape)}"
        )
    channels, height, width = memory.shape[-3:]
    h, w = _check_block_shape(block_shape, (height, width))
    key_scale = check_key_scale(key_scale)
    num_reads = keys.shape[-2]
    batch_shape = broadcast_batch(
        ("memory", "keys"), (memory, keys), (memory.shape[:-3], keys.shape[:-2])
    )
    n = math.prod(batch_shape)
    if n * num_reads == 0:  # affine_grid refuses an empty batch: no reads, no work
        return memory.new_zeros(batch_shape + (num_reads, channels, h, w))
    # affine_grid and grid_sample need a fixed rank: flatten the batch dims around them.
    memory = memory.expand(batch_shape + memory.shape[-3:]).reshape(n, channels, height, width)
    theta = key_to_affine(
        keys.expand(batch_shape + keys.shape[-2:]), (h, w), (height, width), key_scale
    )
    grid = F.affine_grid(
        theta.reshape(n * num_reads, 2, 3), (n * num_reads, 1, h, w), align_corners=False
    )
    # The K grids of a memory are stacked along the grid's height: one sampling
    # pass per memory, without K copies of it.
    grid = grid.reshape(n, num_reads * h, w, 2)
    reads = F.grid_sample(
        memory, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (n, C, K * h, w)
    reads = reads.reshape(n, channels, num_reads, h, w).transpose(1, 2)
    return reads.reshape(batch_shape + (num_reads, channels, h, w))
