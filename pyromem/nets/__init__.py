"""Networks and likelihood heads: generic pieces (:class:`MLP`, :class:`ConvTrunk`), encoders,
decoders, and the distributions of ``"x"``.

Every net but :class:`ConvTrunk` (a plain ``Sequential`` of images ``(N, C, H, W)``) broadcasts
over any number of leading batch dims, so vectorised particles and parallel enumeration work
unchanged.
"""

from .conv_memory import ConvMemoryDecoder, ConvMemoryEncoder, DownscalingStack, TopFeatures
from .conv_trunk import ConvTrunk
from .decoders import ConvDecoder, MLPDecoder
from .discretized_logistic import DiscretizedLogisticMixture
from .encoders import ConvEncoder, MLPEncoder
from .likelihoods import (
    BernoulliLikelihood,
    DiscretizedLogisticMixtureLikelihood,
    GaussianLikelihood,
    Likelihood,
    make_likelihood,
    typical_image,
)
from .mlp import MLP
from .resnet_tsm import ResNet18TSM, temporal_shift

__all__ = [
    "BernoulliLikelihood",
    "ConvDecoder",
    "ConvEncoder",
    "ConvMemoryDecoder",
    "ConvMemoryEncoder",
    "ConvTrunk",
    "DiscretizedLogisticMixture",
    "DiscretizedLogisticMixtureLikelihood",
    "DownscalingStack",
    "GaussianLikelihood",
    "Likelihood",
    "MLP",
    "MLPDecoder",
    "MLPEncoder",
    "ResNet18TSM",
    "TopFeatures",
    "make_likelihood",
    "temporal_shift",
    "typical_image",
]
