import pytest
import torch
import torch.nn.functional as F

from pyromem.data import load
from pyromem.data.glyphs import glyphs
from pyromem.data.shapes import COLOURS, SHAPES

# name, options, event shape, support, number of classes, (train, test) sizes
EMBEDDED = [
    ("digits", {}, (1, 8, 8), "unit_interval", 10, (1437, 360)),
    ("patches", {}, (3, 32, 32), "8bit", 10, (512, 128)),
    ("shapes", {"num_scenes": 300}, (3, 64, 64), "8bit", 3, (300, 300)),
    ("glyphs", {"num_drawers": 4}, (1, 28, 28), "binary", 200, (15 * 10 * 4, 5 * 10 * 4)),
]


@pytest.mark.parametrize("name, options, event_shape, support, classes, sizes", EMBEDDED)
@pytest.mark.parametrize("split", ["train", "test"])
def test_shapes_dtypes_ranges(name, options, event_shape, support, classes, sizes, split):
    data = load(name, split, **options)
    n = sizes[split == "test"]
    assert data.images.shape == (n,) + event_shape
    assert data.event_shape == event_shape
    assert len(data) == n
    assert data.images.dtype == torch.float32
    assert data.labels.dtype == torch.long and data.labels.shape == (n,)
    assert 0 <= data.labels.min() and data.labels.max() < classes
    assert data.images.min() >= 0 and data.images.max() <= 1
    assert data.value_range == (0.0, 1.0)
    assert data.support == support and data.name == name and data.split == split
    if support == "binary":
        assert set(data.images.unique().tolist()) == {0.0, 1.0}
    if support == "8bit":
        levels = data.images * 255
        assert torch.allclose(levels, levels.round(), atol=1e-3)
    for value in data.factors.values():
        assert value.shape[0] == n
    # Not blank: images carry content.
    assert data.images.flatten(1).std(1).min() > 0


@pytest.mark.parametrize("name, options", [(e[0], e[1]) for e in EMBEDDED])
def test_deterministic_for_a_seed(name, options):
    a, b = load(name, "test", seed=3, **options), load(name, "test", seed=3, **options)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    for key in a.factors:
        assert torch.equal(a.factors[key], b.factors[key])
    c = load(name, "test", seed=4, **options)
    assert c.images.shape != a.images.shape or not torch.equal(c.images, a.images)


def test_digits_split_is_a_stratified_partition():
    train, test = load("digits", "train"), load("digits", "test")
    train_index, test_index = (
        set(train.factors["index"].tolist()),
        set(test.factors["index"].tolist()),
    )
    assert not train_index & test_index
    assert train_index | test_index == set(range(1797))
    # Every digit is in both splits in about the same share.
    share = test.labels.bincount(minlength=10) / train.labels.bincount(minlength=10)
    assert torch.allclose(share, torch.full((10,), 0.25), atol=0.02)
    # Pixels are the 17 ink levels k/16.
    assert torch.equal(train.images * 16, (train.images * 16).round())


def test_digits_resize():
    data = load("digits", size=16)
    assert data.event_shape == (1, 16, 16)
    assert data.images.min() >= 0 and data.images.max() <= 1
    # Resizing keeps the ink: means of the 8×8 and 16×16 images agree.
    small = load("digits").images
    assert torch.allclose(data.images.mean((1, 2, 3)), small.mean((1, 2, 3)), atol=0.03)


def test_patches_split_and_deduplication():
    from pyromem.data.patches import MIN_DISTANCE, PER_PHOTOGRAPH

    train, test = load("patches", "train"), load("patches", "test")

    def cells(data):
        keys = zip(
            data.labels.tolist(),
            data.factors["pixel_position"].tolist(),
            data.factors["crop_side"].tolist(),
            strict=True,
        )
        return {(label, tuple(corner), side) for label, corner, side in keys}

    assert not cells(train) & cells(test)
    labels = torch.cat([train.labels, test.labels])
    assert labels.bincount().tolist() == [PER_PHOTOGRAPH] * 10
    assert set(train.factors["crop_side"].unique().tolist()) == {32, 64, 128}
    images = torch.cat([train.images, test.images]).flatten(1).double()
    for label in range(10):
        same = images[labels == label]
        distance = torch.cdist(same, same).fill_diagonal_(float("inf")) / same.shape[1] ** 0.5
        assert distance.min() >= MIN_DISTANCE - 1e-9


def test_patches_are_cut_from_the_photographs():
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    data = load("patches", "test")
    for i in torch.nonzero(data.labels < 2).flatten()[::5].tolist():
        (row, col), side = data.factors["pixel_position"][i].tolist(), data.factors["crop_side"][i]
        crop = torch.tensor(photos[data.labels[i].item()][row : row + side, col : col + side])
        expected = F.avg_pool2d(crop.permute(2, 0, 1)[None].double(), side // 32)[0] / 255.0
        # box averages rounded to 8 bits
        assert (data.images[i].double() - expected).abs().max() <= 0.5 / 255 + 1e-6


def test_shapes_factors_and_rendering():
    data = load("shapes", num_scenes=400)
    f = data.factors
    count = f["count"]
    assert set(count.unique().tolist()) == {1, 2, 3}
    present = torch.arange(3) < count[:, None]
    for key in ["shape", "colour", "size"]:
        assert (f[key][~present] == -1).all()
        assert (f[key][present] >= 0).all()
    assert f["shape"].max() < len(SHAPES) and f["colour"].max() < len(COLOURS)
    assert (f["position"][present] > 0).all() and (f["position"][present] < 1).all()
    assert torch.equal(data.labels, f["shape"][:, 0])
    # The centre pixel of the last-painted object has that object's colour.
    palette = torch.tensor(list(COLOURS.values())) / 255.0
    for i in range(50):
        last = count[i].item() - 1
        row, col = (f["position"][i, last] * 64).long().tolist()
        colour = palette[f["colour"][i, last]]
        assert torch.allclose(data.images[i, :, row, col], colour)
    # Background is dark grey.
    assert torch.allclose(data.images[:, :, 0, 0].median(0).values, torch.full((3,), 20 / 255))


def test_shapes_train_and_test_scenes_differ():
    train, test = load("shapes", "train", num_scenes=300), load("shapes", "test", num_scenes=300)
    train_set = {bytes(x.numpy()) for x in (train.images * 255).byte()}
    assert not any(bytes(x.numpy()) in train_set for x in (test.images * 255).byte())


@pytest.fixture(scope="module")
def default_glyphs():
    return load("glyphs", "train"), load("glyphs", "test")


def test_glyphs_default_split_by_alphabet(default_glyphs):
    train, test = default_glyphs
    assert len(train) == 15 * 10 * 20 and len(test) == 5 * 10 * 20
    train_alphabets = set(train.factors["alphabet"].tolist())
    test_alphabets = set(test.factors["alphabet"].tolist())
    assert train_alphabets == set(range(15)) and test_alphabets == set(range(15, 20))
    for data in (train, test):
        f = data.factors
        assert torch.equal(data.labels, f["alphabet"] * 10 + f["character"])
        assert set(f["drawer"].tolist()) == set(range(20))


def test_glyphs_drawers_alike_alphabets_different(default_glyphs):
    train, _ = default_glyphs
    x = train.images.view(15, 10, 20, -1)  # alphabet, character, drawer, pixels

    def overlap(a, b):  # intersection over union of the ink
        return ((a * b).sum(-1) / ((a + b) > 0).sum(-1).clamp_min(1)).mean()

    same_character = overlap(x[:, :, :10], x[:, :, 10:])
    other_character = overlap(x[:, :5], x[:, 5:])
    assert same_character > 0.3
    assert same_character > 2 * other_character
    # Drawers differ: no two drawings of a character are identical.
    assert (x[:, :, :1] != x[:, :, 1:]).any(-1).all()
    # Alphabets have their own pen width, so the ink of a character depends on
    # its alphabet: one-way ANOVA F statistic well above its null value of 1.
    ink = x.mean((2, 3))  # (alphabet, character)
    f_statistic = ink.mean(1).var() * ink.shape[1] / ink.var(1).mean()
    assert f_statistic > 2


def test_glyphs_alphabet_does_not_depend_on_the_number_of_alphabets():
    small = glyphs("train", num_alphabets=4, num_test_alphabets=1, num_drawers=2)
    large = glyphs("train", num_alphabets=8, num_test_alphabets=2, num_drawers=2)
    assert torch.equal(small.images, large.images[: len(small)])


def test_glyphs_render_at_other_sizes():
    data = glyphs("test", size=16, num_alphabets=3, num_test_alphabets=1, num_drawers=2)
    assert data.event_shape == (1, 16, 16)
    assert data.support == "binary"


@pytest.mark.parametrize(
    "options, match",
    [
        ({"num_test_alphabets": 20}, "num_test_alphabets"),
        ({"num_drawers": 0}, "num_drawers"),
        ({"size": 4}, "size"),
    ],
)
def test_glyphs_bad_arguments(options, match):
    with pytest.raises(ValueError, match=match):
        glyphs(**options)
