"""Writers for small files in the exact formats cnnzoo.data reads: IDX, CIFAR pickles, PNG and JPEG."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision.io import encode_jpeg, encode_png

# --- MNIST IDX ------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array as IDX: magic 0x0000 08 NDIM, big-endian uint32 sizes, then the bytes."""
    assert array.dtype == np.uint8
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX to ``path``, gzipped when the name ends in ``.gz``."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_mnist_dir(
    folder: Path, *, gz: bool, n_train: int = 12, n_test: int = 5, seed: int = 0
) -> dict[str, np.ndarray]:
    """The four MNIST files of random digits in ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


# --- CIFAR pickles -------------------------------------------------------------------------------


class Py2Pickler(pickle._Pickler):
    """Pickles like Python 2's cPickle did for the real CIFAR files: strings as BINSTRING, protocol 2.

    Python 3 would write bytes under protocol 2 as ``_codecs.encode(text, "latin1")`` calls; Python 2 had
    one string type and wrote it inline. Numpy's array rebuilder is named as numpy 1.x named it.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj: bytes | str) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled the way the real CIFAR files were."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_batch(n: int, num_classes: int, label_key: bytes, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    if label_key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in batch[label_key]]
    return batch


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def make_cifar10_dir(parent: Path, *, n: int = 4, writer=py2_pickle) -> tuple[Path, list[dict], dict]:
    """``parent/cifar-10-batches-py`` with 5 training batches of ``n`` images and a test batch of ``n``."""
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    train = [cifar_batch(n, 10, b"labels", seed=i) for i in range(1, 6)]
    for i, batch in enumerate(train, 1):
        (root / f"data_batch_{i}").write_bytes(writer(batch))
    test = cifar_batch(n, 10, b"labels", seed=99)
    (root / "test_batch").write_bytes(writer(test))
    (root / "batches.meta").write_bytes(
        writer({b"num_cases_per_batch": n, b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
    )
    return root, train, test


def make_cifar100_dir(parent: Path, *, n: int = 6) -> tuple[Path, dict, dict]:
    """``parent/cifar-100-python`` with ``train``, ``test`` and ``meta`` (100 fine, 20 coarse names)."""
    root = parent / "cifar-100-python"
    root.mkdir(parents=True)
    train, test = cifar_batch(n, 100, b"fine_labels", seed=1), cifar_batch(n, 100, b"fine_labels", seed=2)
    (root / "train").write_bytes(py2_pickle(train))
    (root / "test").write_bytes(py2_pickle(test))
    meta = {
        b"fine_label_names": [b"fine%d" % i for i in range(100)],
        b"coarse_label_names": [b"coarse%d" % i for i in range(20)],
    }
    (root / "meta").write_bytes(py2_pickle(meta))
    return root, train, test


# --- images --------------------------------------------------------------------------------------


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of an (H, W, C) uint8 array, C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA).

    torchvision writes only gray and RGB PNGs, so this writes the format by hand: the signature, then
    IHDR, IDAT (zlib of each row behind filter byte 0) and IEND chunks, each with its CRC-32.
    """
    h, w, c = image.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + image[y].tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def solid(h: int, w: int, color: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.array(color, dtype=np.uint8), (h, w, len(color))).copy()


def write_png(path: Path, image: np.ndarray) -> Path:
    """Gray/RGB through torchvision's encoder, gray+alpha/RGBA by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.shape[2] in (1, 3):
        path.write_bytes(encode_png(torch.from_numpy(image).permute(2, 0, 1).contiguous()).numpy().tobytes())
    else:
        path.write_bytes(png_bytes(image))
    return path


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    return encode_jpeg(torch.from_numpy(image).permute(2, 0, 1).contiguous(), quality=quality).numpy().tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 Exif segment holding one tag, Orientation (0x0112), right after the SOI marker."""
    tiff = b"MM\x00*" + struct.pack(">I", 8)  # big-endian TIFF header; the first IFD follows at offset 8
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + jpeg[2:]


def write_jpeg(path: Path, image: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(image, **kwargs))
    return path
