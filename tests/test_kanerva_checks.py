"""Kanerva++'s checks of a memory, keys and images passed to its reading methods: one line
naming the argument, before any read (a memory of the wrong size used to be read silently)."""

import pytest
import torch

from pyromem.models import KanervaPlusPlus

IMAGE = (1, 8, 8)


def small(**kwargs):
    options = dict(latent_dim=3, memory_shape=(2, 8, 8), block_shape=(4, 4), embed_dim=16)
    return KanervaPlusPlus(IMAGE, **(options | kwargs))


def episodes(b, t):
    return torch.bernoulli(torch.full((b, t) + IMAGE, 0.4))


def readers(kpp, memory):
    """Every public method that reads a memory, called on ``memory``."""
    return {
        "generate": lambda: kpp.generate(2, memory),
        "sample_keys": lambda: kpp.sample_keys(memory, 2),
        "iterative_read": lambda: kpp.iterative_read(episodes(3, 2), memory, steps=1),
        "readout_prior": lambda: kpp.readout_prior(memory, torch.zeros(4, 3, kpp.reads, 3)),
    }


@pytest.mark.parametrize(
    ("memory", "error", "message"),
    [
        # a wider memory used to be read as if it were the model's: images, no error
        (torch.rand(3, 2, 8, 9), ValueError, r"memory must have shape \(B,\) \+ \(2, 8, 8\)"),
        # one memory without its batch dim used to be read as 2 memories of 8 channels
        (torch.rand(2, 8, 8), ValueError, r"got \(2, 8, 8\)"),
        (torch.rand(3, 1, 8, 8), ValueError, r"got \(3, 1, 8, 8\)"),
        (torch.rand(0, 2, 8, 8), ValueError, "memory is an empty batch"),
        (torch.full((3, 2, 8, 8), float("nan")), ValueError, "memory contains NaN"),
        (torch.rand(3, 2, 8, 8, dtype=torch.float64), TypeError, "memory is torch.float64"),
        (torch.rand(3, 2, 8, 8).to("meta"), ValueError, "memory: on meta, .* on cpu"),
        ([[0.0]], TypeError, "memory must be a floating-point torch.Tensor, got list"),
    ],
)
def test_a_bad_memory_is_named_by_every_reader(memory, error, message):
    kpp = small()
    for name, read in readers(kpp, memory).items():
        with pytest.raises(error, match=message):
            read()
            pytest.fail(f"{name} read a bad memory")


def test_the_memory_write_returns_is_read_by_every_reader():
    for write in ("block", "dense"):
        kpp = small(write=write)
        with torch.no_grad():
            memory = kpp.write(episodes(3, 2))
            for read in readers(kpp, memory).values():
                read()
    with pytest.raises(ValueError, match=r"memory must have shape \(B,\) \+ \(128,\)"):
        small(write="dense").generate(2, torch.rand(3, 2, 8, 8))


def test_bad_keys_and_images_are_named():
    kpp = small()
    memory = kpp.write(episodes(3, 2)).detach()
    with pytest.raises(TypeError, match="keys must be a floating-point torch.Tensor, got list"):
        kpp.generate(2, memory, keys=[0.0])
    with pytest.raises(TypeError, match="keys is torch.float64"):
        kpp.generate(2, memory, keys=torch.zeros(3, 2, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"keys must have shape \(\.\.\., 3, 2, 3\)"):
        kpp.readout_prior(memory, torch.zeros(4, 2, 2, 3))
    # iterative reads take noisy images in [0, 1] (they need not be binary) but not others
    assert kpp.iterative_read(torch.full((3, 2) + IMAGE, 0.3), memory, steps=1).shape == (
        (2, 3, 2) + IMAGE
    )
    with pytest.raises(ValueError, match=r"x must take values in \[0, 1\]"):
        kpp.iterative_read(torch.full((3, 2) + IMAGE, 255.0), memory, steps=1)
    with pytest.raises(TypeError, match="x is torch.float64"):
        kpp.iterative_read(episodes(3, 2).double(), memory, steps=1)


def test_channels_are_checked_by_name():
    with pytest.raises(ValueError, match=r"channels must hold at least one width, got \(\)"):
        small(channels=())
    with pytest.raises(TypeError, match="channels must be a tuple of ints"):
        small(channels="32")
    assert small(channels=8).config["channels"] == [8]
