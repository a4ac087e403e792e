"""The zoo, one file per family. Importing this package registers every model."""

from . import lenet, alexnet, vgg, googlenet, inception, resnet  # noqa: F401, I001  (registration, in zoo order)
from ._base import FeatureStage, ZooModel
from ._features import FeatureExtractor, FeatureInfo

__all__ = ["ZooModel", "FeatureExtractor", "FeatureInfo", "FeatureStage"]
