import numpy as np
import pytest
import torch

from pyromem.data import AUGMENTATIONS, dihedral_views
from pyromem.experiments import retrieval as retrieval_recipe


def test_dihedral_views_are_numpys_rotations_and_mirrors():
    images = torch.rand(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
    views = dihedral_views(images)
    assert views.shape == (24, 2, 5, 5)
    array = images.numpy()
    expected = [np.rot90(array, k, axes=(2, 3)) for k in range(4)]
    expected += [view[..., ::-1] for view in expected]
    np.testing.assert_array_equal(views.numpy(), np.concatenate(expected))
    # a generic image has 8 distinct views, each a permutation of its pixels
    flat = views.reshape(8, 3, -1)[:, 0]
    assert len({tuple(v.tolist()) for v in flat}) == 8
    assert torch.equal(flat.sort(-1).values, flat[:1].sort(-1).values.expand(8, -1))
    assert AUGMENTATIONS["none"](images) is images
    with pytest.raises(ValueError, match="square"):
        dihedral_views(torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="images"):
        dihedral_views(torch.zeros(4, 5))


class _Stopped(Exception):
    pass


def test_the_retrieval_vae_trains_on_the_views_asked_for(monkeypatch, tmp_path):
    seen = []

    def fake_fit(model, data, **kwargs):
        seen.append(data)
        raise _Stopped  # the training itself is fit's own tests' business

    monkeypatch.setattr(retrieval_recipe, "fit", fake_fit)
    images = torch.rand(4, 1, 8, 8)
    for augment in ("none", "dihedral"):
        with pytest.raises(_Stopped):
            retrieval_recipe.retrieval_vae(images, out_dir=tmp_path, augment=augment)
    assert seen[0] is images and torch.equal(seen[1], dihedral_views(images))
    with pytest.raises(ValueError, match="augment"):
        retrieval_recipe.retrieval_vae(images, out_dir=tmp_path, augment="jitter")
