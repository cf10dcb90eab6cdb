"""Procedural handwritten-like characters: alphabets × characters × drawers."""

import numpy as np
import torch

from pyromem.checks import as_int
from pyromem.data.dataset import ImageDataset
from pyromem.data.resize import check_memory
from pyromem.data.splits import check_split

STROKES = (2, 4)  # fewest and most strokes of a character
PRIMITIVES = 5  # stroke primitives per alphabet
CURVE_POINTS = 9  # points sampled along each Bézier stroke (8 segments)
MARGIN = 0.12  # characters are fitted into [MARGIN, 1 - MARGIN]² of the unit box


def glyphs(
    split="train",
    *,
    seed=0,
    size=28,
    num_alphabets=20,
    num_characters=10,
    num_drawers=20,
    num_test_alphabets=5,
):
    """Binary characters in the spirit of Omniglot, generated without a network.

    Generative story, all fixed by ``seed``:

    - an **alphabet** draws a style: a stroke width (1.4-2.8 px at 28 px), a
      curvature, 2-4 preferred stroke directions and five stroke primitives
      (a direction among the preferred ones, a length and a signed bend);
    - a **character** of the alphabet is 2-4 strokes, each a primitive placed
      at a random point or continuing from the end of an earlier stroke, drawn
      as a quadratic Bézier curve; the character is centred and scaled to fill
      the image;
    - a **drawer** has a personal slant, scale and pen width, and perturbs
      every control point a little each time they write a character.

    Samples of one character therefore look alike but not identical, while
    alphabets differ in stroke width, curvature and direction. Strokes are
    rendered as anti-aliased thick polylines and thresholded at one half.
    As in Omniglot, the split is by alphabet: the first
    ``num_alphabets - num_test_alphabets`` alphabets are the train
    ("background") split and the rest the test ("evaluation") split. Alphabet
    ``a`` depends only on ``(seed, a)``, so it does not change with
    ``num_alphabets``.

    :param str split: ``"train"`` or ``"test"``.
    :param int seed: seed of every alphabet, character and drawer (an int >= 0).
    :param int size: side length of the rendered images in pixels (>= 8).
    :param int num_alphabets: alphabets in both splits together (>= 2).
    :param int num_characters: characters per alphabet (>= 1).
    :param int num_drawers: drawers, each writing every character once (>= 1).
    :param int num_test_alphabets: alphabets of the test split, in
        [1, num_alphabets - 1].
    :returns: an :class:`ImageDataset` of binary images ``(N, 1, size, size)``
        (strokes are 1), ordered by alphabet, then character, then drawer.
        Labels are global character ids ``alphabet * num_characters + character``
        (so train and test labels differ); factors ``"alphabet"`` (global
        index), ``"character"`` (index within its alphabet) and ``"drawer"``,
        each ``(N,)`` long.
    """
    check_split(split)
    for name, value, low in [
        ("size", size, 8),
        ("num_alphabets", num_alphabets, 2),
        ("num_characters", num_characters, 1),
        ("num_drawers", num_drawers, 1),
        ("num_test_alphabets", num_test_alphabets, 1),
    ]:
        as_int(value, name, low)
    if num_test_alphabets >= num_alphabets:
        raise ValueError(
            f"num_test_alphabets must be smaller than num_alphabets = {num_alphabets}, "
            f"got {num_test_alphabets}"
        )
    first_test = num_alphabets - num_test_alphabets
    alphabets = range(first_test) if split == "train" else range(first_test, num_alphabets)

    drawers = [_drawer_style(np.random.default_rng([seed, 1, d])) for d in range(num_drawers)]
    points, present, width = [], [], []
    for a in alphabets:
        rng = np.random.default_rng([seed, 0, a])
        style = _alphabet_style(rng)
        for _ in range(num_characters):
            character, strokes = _character(rng, style)
            for slant, scale, pen in drawers:
                points.append(_write(rng, character, slant, scale))
                present.append(strokes)
                width.append(style["width"] * pen)
    # rendered at the size asked for, so resize's memory check would come too late
    check_memory((len(points), 1, size, size), 4, "size")
    images = _render(np.stack(points), np.stack(present), np.array(width), size)

    n_alphabets = len(alphabets)
    alphabet = torch.arange(alphabets.start, alphabets.stop).repeat_interleave(
        num_characters * num_drawers
    )
    character = torch.arange(num_characters).repeat_interleave(num_drawers).repeat(n_alphabets)
    drawer = torch.arange(num_drawers).repeat(n_alphabets * num_characters)
    return ImageDataset(
        images,
        alphabet * num_characters + character,
        {"alphabet": alphabet, "character": character, "drawer": drawer},
        name="glyphs",
        split=split,
        support="binary",
    )


def _alphabet_style(rng):
    # 2-4 preferred directions, spread over the half-turn so that an alphabet
    # never writes in one direction only, rotated differently per alphabet.
    k = rng.integers(2, 5)
    directions = rng.uniform(0, np.pi) + np.pi * np.arange(k) / k + rng.normal(0, 0.15, size=k)
    curvature = rng.uniform(0.0, 0.7)
    angle = rng.choice(directions, size=PRIMITIVES) + rng.normal(0, 0.1, size=PRIMITIVES)
    return {
        "width": rng.uniform(1.4, 2.8),
        "angle": angle,
        "length": rng.uniform(0.35, 0.75, size=PRIMITIVES),
        "bend": curvature
        * rng.uniform(0.4, 1.0, size=PRIMITIVES)
        * rng.choice([-1, 1], PRIMITIVES),
    }


def _character(rng, style):
    # Control points (STROKES[1], 3, 2) in the unit box (x right, y down), and
    # which of the STROKES[1] slots hold a stroke.
    n = rng.integers(STROKES[0], STROKES[1] + 1)
    points = np.zeros((STROKES[1], 3, 2))
    for s in range(n):
        p = rng.integers(PRIMITIVES)
        if s > 0 and rng.uniform() < 0.5:
            # Continue the pen from an end of an earlier stroke, as handwriting does.
            start = points[rng.integers(s), rng.choice([0, 2])]
        else:
            start = rng.uniform(0.1, 0.9, size=2)
        angle = style["angle"][p] + np.pi * rng.integers(2)
        chord = style["length"][p] * np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-chord[1], chord[0]])
        points[s] = [start, start + chord / 2 + style["bend"][p] * normal, start + chord]
    used = points[:n].reshape(-1, 2)
    low, high = used.min(0), used.max(0)
    scale = (1 - 2 * MARGIN) / max((high - low).max(), 1e-6)
    points[:n] = (points[:n] - (low + high) / 2) * scale + 0.5
    return points, np.arange(STROKES[1]) < n


def _drawer_style(rng):
    return rng.normal(0, 0.12), rng.uniform(0.9, 1.05), rng.uniform(0.85, 1.15)


def _write(rng, points, slant, scale):
    # A drawer's slant (shear) and size about the centre, a small shift of the
    # whole character and jitter of each control point.
    shear = np.array([[1.0, -slant], [0.0, 1.0]]) * scale
    centred = points - 0.5
    jitter = rng.normal(0, 0.025, size=points.shape) + rng.normal(0, 0.02, size=2)
    return centred @ shear.T + 0.5 + jitter


def _render(points, present, width, size, chunk=256):
    # points (N, S, 3, 2) Bézier control points in the unit box; present (N, S);
    # width (N,) pen width in pixels at 28 px. Images are rendered in chunks
    # whose temporaries fit in the CPU cache, which is several times faster.
    t = torch.linspace(0, 1, CURVE_POINTS, dtype=torch.float64)[:, None]
    p = torch.as_tensor(points) * size
    curve = (
        (1 - t) ** 2 * p[:, :, None, 0]
        + 2 * t * (1 - t) * p[:, :, None, 1]
        + t**2 * p[:, :, None, 2]
    ).float()  # (N, S, CURVE_POINTS, 2)
    absent = ~torch.as_tensor(present)
    half_width = torch.as_tensor(width, dtype=torch.float32)[:, None] * size / 56
    images = [
        _render_chunk(curve[i : i + chunk], absent[i : i + chunk], half_width[i : i + chunk], size)
        for i in range(0, len(curve), chunk)
    ]
    return torch.cat(images).reshape(-1, 1, size, size)


def _render_chunk(curve, absent, half_width, size):
    # Distance from every pixel centre to the nearest polyline segment, one
    # segment at a time, with x and y kept apart (much faster than norms over a
    # last dimension of 2).
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    px, py = grid.repeat(size)[None], grid.repeat_interleave(size)[None]  # (1, size²), row-major
    squared = torch.full((curve.shape[0], size * size), float("inf"))
    for s in range(curve.shape[1]):
        for i in range(CURVE_POINTS - 1):
            ax, ay = curve[:, s, i, 0, None], curve[:, s, i, 1, None]  # (n, 1)
            abx, aby = curve[:, s, i + 1, 0, None] - ax, curve[:, s, i + 1, 1, None] - ay
            dx, dy = px - ax, py - ay
            length2 = (abx.square() + aby.square()).clamp_min(1e-12)
            along = ((dx * abx + dy * aby) / length2).clamp_(0, 1)
            d2 = (dx - along * abx).square_() + (dy - along * aby).square_()
            squared = torch.minimum(squared, d2.masked_fill_(absent[:, s, None], float("inf")))
    # Pixel coverage of an anti-aliased pen, then a threshold at one half.
    coverage = (half_width + 0.5 - squared.sqrt_()).clamp(0, 1)
    return (coverage > 0.5).float()
