"""The containers every data source fills: :class:`ArrayData`, :class:`DataSplits`, and :class:`DataError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import CnnzooError

if TYPE_CHECKING:
    from .folder import ImageFolderData


class DataError(CnnzooError, ValueError):
    """A data spec, file or folder that cannot be read. The message names the path and what was wrong."""


@dataclass
class ArrayData:
    """A whole split held in memory: uint8 images ``(N, C, H, W)``, int64 labels ``(N,)`` and the class names.

    Indexing gives ``(image, label)``, so it is also a map-style ``Dataset``; the fast path is to index
    ``images`` and ``labels`` with a batch of indices and augment the batch with :func:`augment_batch`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(
                f"ArrayData.images must be a uint8 tensor (N, C, H, W); got {images.dtype} {tuple(images.shape)}"
            )
        if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
            raise DataError(
                f"ArrayData.labels must be int64 of shape ({len(images)},); got {labels.dtype} {tuple(labels.shape)}"
            )
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < len(self.classes):
            raise DataError(
                f"labels run from {int(labels.min())} to {int(labels.max())}, but there are {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


@dataclass
class DataSplits:
    """What :func:`load_data` returns: a training split, a held-out split, and what the model must fit."""

    train: ArrayData | ImageFolderData
    test: ArrayData | ImageFolderData
    classes: list[str]
    name: str  # the kind of data: "mnist5k", "mnist", "cifar10", "folder", "synthetic" ...
    spec: str  # the spec it was loaded from, to load it again (e.g. when resuming)
    channels: int  # C of every image the splits give
    image_size: int  # H = W of every image the splits give (for folders: the crop size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)
