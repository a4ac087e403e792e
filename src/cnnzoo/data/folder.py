"""Image folders in the ImageNet layout: ``DIR/train/CLASS/*.jpg``, ``DIR/val/CLASS/*.jpg``.

Images are decoded one by one with ``torchvision.io`` (in DataLoader worker processes when there are
workers) and cropped with ``torchvision.transforms.v2``. A file that does not decode is not fatal: the
dataset warns with its name (:class:`CorruptImageWarning`) and gives ``None`` in its place;
:func:`collate_skip_none` drops those and says how many it dropped, so the training loop can count them
even when the decoding happened in another process. With ``strict=True`` the first such file raises.
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path
from typing import NamedTuple, Optional

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from .base import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # what torchvision.io.decode_image reads (case ignored)
EVAL_CROP_FRACTION = 0.875  # eval resizes to image_size / 0.875 (256 for 224) and takes the centre crop

# Newer torchvision turns a JPEG upright by its EXIF orientation tag when asked; ask where it can.
_EXIF = {"apply_exif_orientation": True} if "apply_exif_orientation" in inspect.signature(decode_image).parameters else {}


class CorruptImageWarning(UserWarning):
    """An image file that could not be decoded and was skipped."""


class FolderBatch(NamedTuple):
    """A batch from :func:`collate_skip_none`: images ``(B, C, S, S)`` uint8, labels ``(B,)``, files skipped."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: int


def collate_skip_none(samples: list[Optional[tuple[torch.Tensor, int]]]) -> FolderBatch:
    """DataLoader ``collate_fn`` for :class:`ImageFolderData`: stacks the good samples, counts the ``None`` ones.

    A batch whose every file was unreadable has zero-length ``images`` and ``labels``; skip it.
    """
    good = [s for s in samples if s is not None]
    skipped = len(samples) - len(good)
    if not good:
        return FolderBatch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), skipped)
    images = torch.stack([image for image, _ in good])
    labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    return FolderBatch(images, labels, skipped)


def _image_files(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()  # os.walk visits subfolders in this order: make it the same on every filesystem
        files += [Path(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return files


def find_split(root: Path, names: tuple[str, ...]) -> Path:
    """The first of ``root/name`` that is a folder; a clear error naming them otherwise."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    wanted = " or ".join(str(root / n) for n in names)
    raise DataError(f"{wanted}: missing. An image folder holds train/CLASS/*.jpg and val/CLASS/*.jpg")


def scan_split(split: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted subfolder names) and ``(path, label)`` samples of one split folder.

    With ``classes`` given (those of the training split), the split's classes must be among them and
    labels index into them.
    """
    found = sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{split}: no class folders; expected {split}/CLASS/*.jpg (one subfolder per class)")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{split}: classes {', '.join(unknown)} are not among the {len(classes)} training classes")
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name in found:
        files = _image_files(split / name)
        if not files:
            raise DataError(f"{split / name}: no images (files ending in {', '.join(IMAGE_EXTENSIONS)})")
        samples += [(str(f), index[name]) for f in files]
    return classes, samples


class ImageFolderData(Dataset):
    """One split of an image folder; ``dataset[i]`` is ``(uint8 (C, S, S) image, label)``, or None if unreadable.

    ``train=True`` crops like Inception/ResNet training (RandomResizedCrop to ``image_size`` with scale
    0.08..1, random horizontal flip); otherwise it resizes the short side to ``image_size / 0.875`` and
    takes the centre ``image_size`` square. Pixels stay uint8: the training loop normalises on the device.
    Random crops draw from torch's global generator, which DataLoader seeds in each worker.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        classes: list[str],
        *,
        train: bool,
        image_size: int = 224,
        channels: int = 3,
        strict: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"image folders decode to 1 (grayscale) or 3 (RGB) channels, not {channels}")
        self.samples = samples
        self.classes = classes
        self.train = train
        self.image_size = image_size
        self.channels = channels
        self.strict = strict
        self.mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB  # also drops alpha
        if train:
            self.transform = v2.Compose([v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip()])
        else:
            self.transform = v2.Compose([v2.Resize(int(image_size / EVAL_CROP_FRACTION), antialias=True), v2.CenterCrop(image_size)])

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def decode(self, path: str) -> torch.Tensor:
        """The image at ``path`` as uint8 ``(C, H, W)`` with this dataset's channels, upright; raises if unreadable."""
        data = Path(path).read_bytes()
        if not data:
            raise RuntimeError("empty file")
        return self.decode_bytes(data)

    def decode_bytes(self, data: bytes) -> torch.Tensor:
        """An encoded image (JPEG, PNG, WebP) as uint8 ``(C, H, W)`` with this dataset's channels, upright."""
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=self.mode, **_EXIF)

    def unreadable(self, path: str, error: Exception) -> None:
        """What a file that does not decode gives: an error with ``strict``, else a warning and ``None`` (skipped)."""
        if self.strict:
            raise DataError(f"{path}: cannot decode image ({error})") from None
        warnings.warn(f"skipping unreadable image {path}: {error}", CorruptImageWarning, stacklevel=3)
        return None

    def __getitem__(self, i: int) -> Optional[tuple[torch.Tensor, int]]:
        path, label = self.samples[i]
        try:
            image = self.decode(path)
        except (OSError, RuntimeError, ValueError) as e:  # torchvision reports bad data as RuntimeError
            return self.unreadable(path, e)
        return self.transform(image), label

    def drop_unreadable(self) -> list[str]:
        """Decode every file once, drop the ones that fail from this split, and return their paths.

        Slow (a full pass over the files), but afterwards no batch comes back short.
        """
        bad = []
        for path, _ in self.samples:
            try:
                self.decode(path)
            except (OSError, RuntimeError, ValueError):
                bad.append(path)
        if bad:
            dropped = set(bad)
            self.samples = [s for s in self.samples if s[0] not in dropped]
            warnings.warn(f"dropped {len(bad)} unreadable images: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}", CorruptImageWarning, stacklevel=2)
        return bad


def load_folder(
    folder: str | Path, *, image_size: int = 224, channels: int = 3, strict: bool = False
) -> tuple[ImageFolderData, ImageFolderData]:
    """The train and val splits of an ImageNet-layout folder (``val/`` may be called ``test/``)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes, train_samples = scan_split(find_split(root, ("train",)))
    _, val_samples = scan_split(find_split(root, ("val", "test")), classes)
    options = dict(image_size=image_size, channels=channels, strict=strict)
    return (
        ImageFolderData(train_samples, classes, train=True, **options),
        ImageFolderData(val_samples, classes, train=False, **options),
    )
