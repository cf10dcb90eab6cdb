"""The dihedral views of square images: more training images from the same ones."""

import torch


def dihedral_views(images):
    """The 8 views of each image under the symmetries of the square: rotations by 0, 90, 180
    and 270 degrees, then the same four mirrored left to right.

    A small training set (``patches``' 512 images) seen in every view trains a VAE whose codes
    generalise better to new images; the views of natural image patches are natural image
    patches too.

    :param torch.Tensor images: ``(M, C, H, H)``.
    :returns: ``(8 M, C, H, H)``: the M images of view 0 (the images themselves), then of
        view 1, ..., view 7.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = getattr(images, "shape", images)
        raise ValueError(f"images must be an (M, C, H, W) tensor, got {shape}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(
            f"images must be square to have 8 dihedral views, got H x W = "
            f"{images.shape[-2]} x {images.shape[-1]}"
        )
    rotations = [torch.rot90(images, k, (-2, -1)) for k in range(4)]
    return torch.cat(rotations + [view.flip(-1) for view in rotations])


def _as_they_are(images):
    return images


#: A training set's augmentations by name: the images as they are, or their dihedral views.
AUGMENTATIONS = {"none": _as_they_are, "dihedral": dihedral_views}
