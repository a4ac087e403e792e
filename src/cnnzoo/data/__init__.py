"""The data layer: ``load_data(spec)`` gives the train and test splits that ``cnnzoo train`` reads.

In-memory data (mnist5k, MNIST IDX files, CIFAR batches, synthetic) comes as :class:`ArrayData`: whole
uint8 tensors, batched by indexing and augmented on the device with :func:`augment_batch`. Image folders
come as :class:`ImageFolderData`, a ``Dataset`` for a ``DataLoader`` with ``collate_fn=collate_skip_none``
(decoded in worker processes), or wrapped in :class:`EncodedImages` to be decoded a batch at a time on the
GPU by :class:`DeviceDecoder` (nvJPEG).
Nothing here downloads anything.
"""

from .arrays import augment_batch, convert_channels, normalize_batch, resize_images
from .base import ArrayData, DataError, DataSplits
from .cifar import SafeUnpickler, load_cifar10, load_cifar100
from .device_decode import DeviceDecoder, EncodedBatch, EncodedImages, collate_encoded, nvjpeg_available
from .folder import (
    CorruptImageWarning,
    EvalCrop,
    FolderBatch,
    ImageFolderData,
    collate_skip_none,
    load_eval_folder,
    load_folder,
    read_solution_csv,
)
from .mnist import MNIST5K_SEED, load_mnist5k, load_mnist_dir, mnist5k_split, read_idx
from .specs import SYNTHETIC_SEED, data_kinds, load_data, load_eval_data

__all__ = [
    "ArrayData",
    "CorruptImageWarning",
    "DataError",
    "DataSplits",
    "DeviceDecoder",
    "EncodedBatch",
    "EncodedImages",
    "EvalCrop",
    "FolderBatch",
    "ImageFolderData",
    "MNIST5K_SEED",
    "SYNTHETIC_SEED",
    "SafeUnpickler",
    "augment_batch",
    "collate_encoded",
    "collate_skip_none",
    "convert_channels",
    "data_kinds",
    "load_cifar10",
    "load_cifar100",
    "load_data",
    "load_eval_data",
    "load_eval_folder",
    "load_folder",
    "load_mnist5k",
    "load_mnist_dir",
    "mnist5k_split",
    "normalize_batch",
    "nvjpeg_available",
    "read_idx",
    "read_solution_csv",
    "resize_images",
]
