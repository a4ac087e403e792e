"""CIFAR-10 and CIFAR-100: the "python version" pickle batches as distributed, read without running pickle code.

The batches were written by Python 2's cPickle (protocol 2): each is a dict with byte-string keys, whose
``b"data"`` is a uint8 numpy array ``(N, 3072)`` (1024 red, then 1024 green, then 1024 blue values of a
32 x 32 image, row by row) and whose labels are a list of ints. Unpickling such a file in general can run
any code its author chose, so :class:`SafeUnpickler` resolves only the three numpy globals a numpy array
needs (and ``_codecs.encode`` for latin-1, which Python 3 writes for bytes under protocol 2); every other
global is refused. Dicts, lists, byte strings and ints need no globals at all.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import ArrayData, DataError

DOWNLOAD_HINT = "download the python version from https://www.cs.toronto.edu/~kriz/cifar.html and extract it"

_reconstruct = np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's array rebuilder, wherever this numpy keeps it


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Python 3 pickles bytes under protocol 2 as _codecs.encode(text, "latin1"); allow only that.
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin-1")


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 1.x (and the real files)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # written by numpy 2.x
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, numbers, strings and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load the global {module}.{name}: a CIFAR batch holds only dicts, lists, "
                f"strings, ints and numpy arrays"
            ) from None


def load_pickle(path: Path) -> dict:
    """The dict stored in a CIFAR pickle file, loaded with :class:`SafeUnpickler` (keys stay bytes)."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: missing; {DOWNLOAD_HINT}") from None
    except Exception as e:  # a refused global, a truncated or foreign file: all mean "not a CIFAR batch"
        raise DataError(f"{path}: not a CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: not a CIFAR python batch (holds a {type(obj).__name__}, not a dict)")
    return obj


def _get(batch: dict, key: bytes, path: Path) -> Any:
    if key not in batch:
        keys = ", ".join(repr(k) for k in batch)
        raise DataError(f"{path}: no {key!r} entry; a CIFAR batch has {key!r}, found keys {keys}")
    return batch[key]


def read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of one batch file, checked."""
    batch = load_pickle(path)
    data, labels = _get(batch, b"data", path), _get(batch, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: b'data' must be a uint8 array (N, 3072), found a {found}")
    labels = np.asarray(labels)
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: {len(data)} images need {len(data)} integer labels in {label_key!r}, found {labels.dtype} of shape {labels.shape}"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise DataError(f"{path}: labels run from {labels.min()} to {labels.max()}, outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _class_names(path: Path, key: bytes) -> list[str]:
    names = _get(load_pickle(path), key, path)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{path}: {key!r} must be a list of names")
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _find_folder(folder: str | Path, marker: str, subfolder: str, what: str) -> Path:
    folder = Path(folder).expanduser()
    for candidate in (folder, folder / subfolder):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(
        f"{folder}: no {what} here: expected {folder / marker} or {folder / subfolder / marker}; {DOWNLOAD_HINT}"
    )


def _split(parts: list[tuple[np.ndarray, np.ndarray]], classes: list[str]) -> ArrayData:
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ArrayData(torch.from_numpy(images), torch.from_numpy(labels), classes)


def load_cifar10(folder: str | Path) -> tuple[ArrayData, ArrayData]:
    """The 50,000 training and 10,000 test images of ``cifar-10-batches-py`` (``folder`` or its parent)."""
    root = _find_folder(folder, "batches.meta", "cifar-10-batches-py", "CIFAR-10 batches")
    classes = _class_names(root / "batches.meta", b"label_names")
    train = [read_batch(root / f"data_batch_{i}", b"labels", len(classes)) for i in range(1, 6)]
    test = [read_batch(root / "test_batch", b"labels", len(classes))]
    return _split(train, classes), _split(test, classes)


def load_cifar100(folder: str | Path) -> tuple[ArrayData, ArrayData]:
    """The 50,000 training and 10,000 test images of ``cifar-100-python`` (``folder`` or its parent), fine labels."""
    root = _find_folder(folder, "meta", "cifar-100-python", "CIFAR-100 batches")
    classes = _class_names(root / "meta", b"fine_label_names")
    train = read_batch(root / "train", b"fine_labels", len(classes))
    test = read_batch(root / "test", b"fine_labels", len(classes))
    return _split([train], classes), _split([test], classes)
