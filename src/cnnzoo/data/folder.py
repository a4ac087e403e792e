"""Image folders in the ImageNet layout: ``DIR/train/CLASS/*.jpg``, ``DIR/val/CLASS/*.jpg``.

For evaluation alone (:func:`load_eval_folder`) the validation images may also come as ImageNet
publishes them: flat ``ILSVRC2012_val_*.JPEG`` files labelled by ``LOC_val_solution.csv``. How an
evaluation image is resized and cropped is an :class:`EvalCrop`: torchvision's resize-then-centre-crop
by default, or what published weights were evaluated with (resize 232, crop 224, bilinear for
ResNet-50 V2; Keras' plain resize to the input size).

Images are decoded one by one by :mod:`cnnzoo.data.images` (in DataLoader worker processes when there
are workers), the reader that never aborts the process and refuses decompression bombs from the header
(``max_pixels``), and cropped with ``torchvision.transforms.v2``. A file that does not decode is not
fatal: the dataset warns with its name (:class:`CorruptImageWarning`) and gives ``None`` in its place;
:func:`collate_skip_none` drops those and says how many it dropped, so the training loop can count them
even when the decoding happened in another process. With ``strict=True`` the first such file raises.
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .base import DataError
from .images import DEFAULT_MAX_PIXELS, ImageReadError, decode_image_bytes, read_image

# The files a folder's classes hold, by name (case ignored); the reader tells the format from the bytes.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
EVAL_CROP_FRACTION = 0.875  # eval resizes to image_size / 0.875 (256 for 224) and takes the centre crop
# "nearest" as PIL (and so Keras' load_img) computes it: torch's plain "nearest" samples half a pixel off.
INTERPOLATIONS = {
    "nearest": v2.InterpolationMode.NEAREST_EXACT,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "bicubic": v2.InterpolationMode.BICUBIC,
}
RESIZE_MODES = ("shorter", "exact")
VAL_SOLUTION_CSV = "LOC_val_solution.csv"  # ImageNet's validation labels as the Kaggle download ships them
CSV_SEARCH_DEPTH = 4  # LOC_val_solution.csv sits 4 folders above ILSVRC/Data/CLS-LOC/val/ in that download


class CorruptImageWarning(UserWarning):
    """An image file that could not be decoded and was skipped."""


@dataclass(frozen=True)
class EvalCrop:
    """How an evaluation image becomes the network's ``crop`` x ``crop`` input.

    ``mode="shorter"`` (torchvision's eval transform): the shorter side resized to ``resize`` (default
    ``crop / 0.875``, 256 for 224), aspect kept, then the centre square. ``mode="exact"`` (Keras'
    ``load_img(target_size=...)``): the whole image resized to the square, aspect not kept, no crop.
    """

    crop: int
    resize: int | None = None
    interpolation: str = "bilinear"
    mode: str = "shorter"
    antialias: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.crop, int) or self.crop < 1 or (self.resize is not None and self.resize < self.crop):
            raise DataError(f"eval crop {self.crop!r} / resize {self.resize!r}: positive sizes, resize >= crop")
        if self.interpolation not in INTERPOLATIONS or self.mode not in RESIZE_MODES:
            raise DataError(
                f"eval interpolation {self.interpolation!r} / resize mode {self.mode!r}: expected one of "
                f"{', '.join(INTERPOLATIONS)} / {', '.join(RESIZE_MODES)}"
            )

    @classmethod
    def of(cls, preprocessing) -> EvalCrop:
        """From a :class:`cnnzoo.pretrained.Preprocessing` (or anything with its fields): the weights' own."""
        exact = preprocessing.resize_mode == "exact"
        return cls(
            crop=preprocessing.input_size,
            resize=None if exact else preprocessing.resize,
            interpolation=preprocessing.interpolation,
            mode=preprocessing.resize_mode,
            antialias=preprocessing.antialias,
        )

    def transform(self) -> v2.Transform:
        """The torchvision v2 transform (uint8 or float ``(C, H, W)`` tensors)."""
        how = dict(interpolation=INTERPOLATIONS[self.interpolation], antialias=self.antialias)
        if self.mode == "exact":
            return v2.Resize((self.crop, self.crop), **how)
        resize = self.resize or int(self.crop / EVAL_CROP_FRACTION)
        return v2.Compose([v2.Resize(resize, **how), v2.CenterCrop(self.crop)])


class FolderBatch(NamedTuple):
    """A batch from :func:`collate_skip_none`: images ``(B, C, S, S)`` uint8, labels ``(B,)``, files skipped."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: int


def collate_skip_none(samples: list[tuple[torch.Tensor, int] | None]) -> FolderBatch:
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
    files, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        # Linked folders are followed, each once: a link back up the tree would otherwise be walked
        # again and again (to the kernel's 40-link limit), listing every file dozens of times.
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames.clear()
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
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
    0.08..1, random horizontal flip); otherwise ``eval_crop`` says how (default: the short side resized
    to ``image_size / 0.875``, the centre ``image_size`` square; with ``eval_crop`` its ``crop`` is the
    image size). Pixels stay uint8: the training loop normalises on the device.
    Random crops draw from torch's global generator, which DataLoader seeds in each worker. An image of
    more than ``max_pixels`` pixels (by its header; None: no limit) is unreadable, as a damaged one is.
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
        eval_crop: EvalCrop | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"image folders decode to 1 (grayscale) or 3 (RGB) channels, not {channels}")
        self.samples = samples
        self.classes = classes
        self.train = train
        self.eval_crop = eval_crop or EvalCrop(image_size)
        self.image_size = image_size if train else self.eval_crop.crop
        self.channels = channels
        self.strict = strict
        self.max_pixels = max_pixels
        if train:
            self.transform = v2.Compose(
                [v2.RandomResizedCrop(image_size, scale=(0.08, 1.0), antialias=True), v2.RandomHorizontalFlip()]
            )
        else:
            self.transform = self.eval_crop.transform()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def decode(self, path: str) -> torch.Tensor:
        """The image at ``path`` as uint8 ``(C, H, W)`` with this dataset's channels, upright; raises
        :class:`~cnnzoo.data.images.ImageReadError` if unreadable."""
        return read_image(path, channels=self.channels, max_pixels=self.max_pixels)

    def decode_bytes(self, data: bytes, path: str = "<bytes>") -> torch.Tensor:
        """An encoded image (JPEG, PNG, WebP ...) as uint8 ``(C, H, W)`` with this dataset's channels, upright."""
        return decode_image_bytes(data, path, channels=self.channels, max_pixels=self.max_pixels)

    def unreadable(self, path: str, error: ImageReadError) -> None:
        """What a file that does not decode gives: an error with ``strict``, else a warning and ``None`` (skipped)."""
        if self.strict:
            raise DataError(f"{path}: cannot decode image: {error.reason}") from None
        warnings.warn(f"skipping unreadable image {path}: {error.reason}", CorruptImageWarning, stacklevel=3)
        return None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.samples[i]
        try:
            image = self.decode(path)
        except ImageReadError as e:  # the reader's one failure; anything else is a bug, and surfaces as one
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
            except ImageReadError:
                bad.append(path)
        if bad:
            dropped = set(bad)
            self.samples = [s for s in self.samples if s[0] not in dropped]
            warnings.warn(
                f"dropped {len(bad)} unreadable images: {', '.join(bad[:10])}{' ...' if len(bad) > 10 else ''}",
                CorruptImageWarning,
                stacklevel=2,
            )
        return bad


def load_folder(
    folder: str | Path,
    *,
    image_size: int = 224,
    channels: int = 3,
    strict: bool = False,
    eval_crop: EvalCrop | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[ImageFolderData, ImageFolderData]:
    """The train and val splits of an ImageNet-layout folder (``val/`` may be called ``test/``); ``max_pixels``
    as :class:`ImageFolderData` takes it."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    classes, train_samples = scan_split(find_split(root, ("train",)))
    _, val_samples = scan_split(find_split(root, ("val", "test")), classes)
    options = dict(image_size=image_size, channels=channels, strict=strict, max_pixels=max_pixels)
    return (
        ImageFolderData(train_samples, classes, train=True, **options),
        ImageFolderData(val_samples, classes, train=False, eval_crop=eval_crop, **options),
    )


def load_eval_folder(
    folder: str | Path,
    *,
    eval_crop: EvalCrop,
    channels: int = 3,
    strict: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ImageFolderData:
    """The evaluation images of a folder in any layout ImageNet's validation set comes in; no train/ needed.

    - ``DIR/val/CLASS/*`` (or ``DIR/test/``), or ``DIR/CLASS/*`` itself: classes are the sorted folder
      names (synset ids ``n01440764`` ... in ImageNet's own layout, which is its class order);
    - flat ``ILSVRC2012_val_*.JPEG`` files in ``DIR`` (or ``DIR/val``), labelled by
      ``LOC_val_solution.csv`` found there or in a folder up to 4 levels above (the Kaggle download keeps
      it above ``ILSVRC/Data/CLS-LOC/val/``): classes are the CSV's synset ids, sorted.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    split = next((root / n for n in ("val", "test") if (root / n).is_dir()), root)
    flat = sorted(p for p in split.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if flat:
        classes, samples = _flat_validation_samples(split, flat)
    else:
        classes, samples = scan_split(split)
    return ImageFolderData(
        samples, classes, train=False, channels=channels, strict=strict, eval_crop=eval_crop, max_pixels=max_pixels
    )


def _find_solution_csv(split: Path) -> Path:
    for folder in [split, *split.resolve().parents][: CSV_SEARCH_DEPTH + 1]:
        if (folder / VAL_SOLUTION_CSV).is_file():
            return folder / VAL_SOLUTION_CSV
    raise DataError(
        f"{split}: image files without class folders, and no {VAL_SOLUTION_CSV} in it or up to {CSV_SEARCH_DEPTH} "
        f"folders above. Put ImageNet's {VAL_SOLUTION_CSV} (ImageId,PredictionString) beside the images, or sort "
        "them into one subfolder per class"
    )


def read_solution_csv(path: Path) -> dict[str, str]:
    """``LOC_val_solution.csv`` as ``{image id: synset}``: the first token of each ``PredictionString``.

    Rows read ``ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...`` (the class, then its boxes).
    """
    labels: dict[str, str] = {}
    with open(path, newline="") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise DataError(f"{path}: expected the header ImageId,PredictionString (ImageNet's {VAL_SOLUTION_CSV})")
        for line, row in enumerate(rows, start=2):
            tokens = row[1].split() if len(row) >= 2 else []
            if not row or not row[0].strip() or not tokens:
                example = "ILSVRC2012_val_00000001,n01751748 ..."
                raise DataError(f"{path}, line {line}: expected IMAGE_ID,SYNSET ... (e.g. {example})")
            labels[row[0].strip()] = tokens[0]
    if not labels:
        raise DataError(f"{path}: no rows after the header")
    return labels


def _flat_validation_samples(split: Path, files: list[Path]) -> tuple[list[str], list[tuple[str, int]]]:
    """Classes (the CSV's synsets, sorted: ImageNet's class order) and samples of flat validation files."""
    csv_path = _find_solution_csv(split)
    labels = read_solution_csv(csv_path)
    classes = sorted(set(labels.values()))
    index = {synset: i for i, synset in enumerate(classes)}
    unlabelled = [f.name for f in files if f.stem not in labels]
    if unlabelled:
        raise DataError(
            f"{split}: {len(unlabelled)} images have no row in {csv_path} ({', '.join(unlabelled[:3])}"
            f"{' ...' if len(unlabelled) > 3 else ''}); is it the labels file of these images?"
        )
    if len(files) < len(labels):
        found = f"{len(files)} of the {len(labels)} images {csv_path.name} lists are here"
        warnings.warn(f"{split}: {found}; evaluating those", stacklevel=3)
    return classes, [(str(f), index[labels[f.stem]]) for f in files]
