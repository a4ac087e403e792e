"""The zoo, one file per family. Importing this package registers every model."""

from . import lenet, alexnet, vgg, googlenet, inception, resnet  # noqa: F401  (registration)
from ._base import ZooModel

__all__ = ["ZooModel"]
