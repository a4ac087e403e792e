"""Image folders decoded on the training device, a batch at a time (nvJPEG on a GPU).

The worker path (:class:`~cnnzoo.data.folder.ImageFolderData` in DataLoader processes) decodes and
crops every image on the CPU: a GPU that trains a ResNet-50 at thousands of images a second then needs
dozens of cores just to feed it. Here the work is split the other way:

* **Workers only read files.** :class:`EncodedImages` returns a JPEG's bytes untouched, and
  :func:`collate_encoded` packs a batch of them into one buffer (one shared-memory tensor per batch
  crosses the process boundary, not 256). Each file's header is parsed there first by
  :mod:`cnnzoo.data.images` (the pixel limit, the format), so only JPEGs within the limit reach the
  batch decoder; files the GPU decoder cannot take -- PNG, WebP, CMYK, a JPEG turned upright by an
  EXIF tag (nvJPEG ignores the tag) -- are decoded in the worker by that reader; they are rare.
* **The main process decodes the whole batch at once** with ``torchvision.io.decode_jpeg(list,
  device="cuda")``, which hands it to nvJPEG. A batch the decoder refuses is retried image by image,
  then on the CPU, so one bad file costs only itself (skipped with a warning, or an error with
  ``strict``), never the batch.
* **Crops happen on the device**: the same random-resized crop and flip as the worker path for
  training (crop boxes drawn by torchvision's ``RandomResizedCrop.get_params``), the same resize and
  centre crop for evaluation, with antialiased bilinear resizing, written into one float batch.

On a CPU device the same code runs with libjpeg in the main process (tests use that). It is not the
default: on a GPU machine with many cores the worker path fed more images per second (see
:func:`check_decode_option`), so this path is for machines with few cores per GPU. The pixels differ from the worker path's by rounding only: nvJPEG's IDCT is not libjpeg's
and the crops stay float instead of being rounded to uint8.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import RandomResizedCrop

from .base import DataError
from .folder import ImageFolderData
from .images import ImageHeader, ImageReadError, probe_image, read_image_bytes

__all__ = ["EncodedBatch", "EncodedImages", "DeviceDecoder", "collate_encoded", "nvjpeg_available"]


def nvjpeg_available() -> bool:
    """Whether this torchvision can decode JPEGs on a CUDA GPU (built with nvJPEG, a GPU present)."""
    if not torch.cuda.is_available():
        return False
    try:
        return hasattr(torch.ops.image, "decode_jpegs_cuda")
    except (AttributeError, RuntimeError):
        return False


def _batch_decodable(header: ImageHeader) -> bool:
    """What the batch decoder (nvJPEG; libjpeg on a CPU) takes as it is: a gray or colour JPEG shown as stored."""
    return header.format == "JPEG" and header.mode in ("L", "RGB") and header.orientation == 1


class EncodedImages(Dataset):
    """The files of an :class:`ImageFolderData`, read but not decoded (for :class:`DeviceDecoder`).

    ``dataset[i]`` is ``(payload, encoded, label, path)``: the JPEG's bytes as a 1-d uint8 tensor with
    ``encoded=True``, or for a file the GPU decoder cannot take the image decoded here on the CPU
    (uint8 ``(C, H, W)``, upright) with ``encoded=False``; ``None`` for a file that cannot be read.
    """

    def __init__(self, folder: ImageFolderData) -> None:
        self.folder = folder

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        try:
            data = read_image_bytes(path, self.folder.max_pixels)
            if not _batch_decodable(probe_image(data, path, self.folder.max_pixels)):
                return self.folder.decode_bytes(data, path), False, label, path
        except ImageReadError as e:
            return self.folder.unreadable(path, e)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), True, label, path


class EncodedBatch(NamedTuple):
    """A batch from :func:`collate_encoded`.

    ``buffer`` holds the JPEGs back to back (``sizes`` bytes each); ``decoded`` the images decoded on the
    CPU, with ``order`` saying where each item sits: ``("jpeg", k)`` or ``("image", k)``.
    """

    buffer: torch.Tensor
    sizes: list[int]
    decoded: list[torch.Tensor]
    order: list[tuple[str, int]]
    labels: torch.Tensor
    paths: list[str]
    skipped: int

    def jpegs(self) -> list[torch.Tensor]:
        """The JPEGs as 1-d uint8 tensors (views into ``buffer``), the input ``decode_jpeg`` takes."""
        return list(torch.split(self.buffer, self.sizes)) if self.sizes else []


def collate_encoded(samples: list) -> EncodedBatch:
    """DataLoader ``collate_fn`` for :class:`EncodedImages`: one byte buffer per batch, unreadable files counted."""
    good = [s for s in samples if s is not None]
    jpegs, decoded, order = [], [], []
    for payload, encoded, _, _ in good:
        if encoded:
            order.append(("jpeg", len(jpegs)))
            jpegs.append(payload)
        else:
            order.append(("image", len(decoded)))
            decoded.append(payload)
    buffer = torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8)
    return EncodedBatch(
        buffer=buffer,
        sizes=[len(j) for j in jpegs],
        decoded=decoded,
        order=order,
        labels=torch.tensor([s[2] for s in good], dtype=torch.int64),
        paths=[s[3] for s in good],
        skipped=len(samples) - len(good),
    )


class DeviceDecoder:
    """Turns an :class:`EncodedBatch` into a float batch ``(B, C, S, S)`` of 0..255 pixels on ``device``.

    Crops like ``folder``'s own transform (training: random-resized crop, scale 0.08-1, and a random
    flip; evaluation: resize the short side to ``S / 0.875``, centre crop). Random draws come from
    torch's global generator, which the training loop seeds every epoch.
    """

    def __init__(self, folder: ImageFolderData, device: torch.device | str) -> None:
        self.folder = folder
        self.device = torch.device(device)
        self.size = folder.image_size
        self.mode = ImageReadMode.GRAY if folder.channels == 1 else ImageReadMode.RGB
        self.skipped = 0  # files that failed to decode here (the workers count theirs in the batch)

    def __call__(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        images = self._decode(batch)
        keep = [i for i, img in enumerate(images) if img is not None]
        s, c = self.size, self.folder.channels
        out = torch.empty(len(keep), c, s, s, device=self.device)
        flips = []
        for row, i in enumerate(keep):
            out[row] = self._crop(images[i])
            if self.folder.train:  # drawn right after the crop, as RandomHorizontalFlip after RandomResizedCrop
                flips.append(bool(torch.rand(1) < 0.5))
        if any(flips):  # applied to the whole batch at once
            flip = torch.tensor(flips, device=self.device).view(-1, 1, 1, 1)
            out = torch.where(flip, out.flip(-1), out)
        return out, batch.labels[keep].to(self.device, non_blocking=True)

    # decoding -------------------------------------------------------------------------------------

    def _decode(self, batch: EncodedBatch) -> list[torch.Tensor | None]:
        jpegs = batch.jpegs()
        decoded_jpegs: list[torch.Tensor | None] = []
        if jpegs:
            try:
                decoded_jpegs = list(decode_jpeg(jpegs, mode=self.mode, device=self.device))
            except RuntimeError:  # one bad file fails the whole call: find it
                jpeg_paths = [batch.paths[i] for i, (kind, _) in enumerate(batch.order) if kind == "jpeg"]
                decoded_jpegs = [self._decode_one(data, path) for data, path in zip(jpegs, jpeg_paths)]
        images = []
        for kind, k in batch.order:
            if kind == "jpeg":
                images.append(decoded_jpegs[k])
            else:
                images.append(batch.decoded[k].to(self.device, non_blocking=True))
        return images

    def _decode_one(self, data: torch.Tensor, path: str) -> torch.Tensor | None:
        """One JPEG the batch decoder refused: alone on the device, else on the CPU, else skipped (or an error)."""
        try:
            return decode_jpeg(data, mode=self.mode, device=self.device)
        except RuntimeError:
            pass
        try:
            return self.folder.decode_bytes(data.numpy().tobytes(), path).to(self.device)
        except ImageReadError as e:
            self.skipped += 1
            return self.folder.unreadable(path, e)

    # cropping -------------------------------------------------------------------------------------

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        """One image (uint8 ``(C, H, W)`` on the device) cropped and resized to ``(C, S, S)`` float."""
        s = self.size
        x = image.float()
        if self.folder.train:
            top, left, h, w = RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
            return _resize(x[:, top : top + h, left : left + w], (s, s))
        # Evaluation: the folder's EvalCrop (by default torchvision's Resize(int), short side to S / 0.875, and
        # the centre crop; for published weights the resize, crop and interpolation they were evaluated with).
        return self.folder.eval_crop.transform()(x)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def check_decode_option(decode: str, device: torch.device) -> str:
    """``decode`` resolved for ``device``: "workers" or "device". "auto" is "workers".

    Measured on an H200 with 16 CPU cores (benchmarks/RESULTS.md), 375x500 JPEGs to 224x224 crops:
    16 decoding workers fed 12,930 images/s, nvJPEG batches 4,320, because torchvision's batched nvJPEG
    decoding does its Huffman stage on one CPU thread of the main process, where it also holds up the
    training step. "device" pays only where few cores serve each GPU (under about 6).
    """
    if decode == "auto":
        return "workers"
    if decode not in ("workers", "device"):
        raise DataError(f"decode must be auto, workers or device; got {decode!r}")
    if decode == "device" and device.type == "cuda" and not nvjpeg_available():
        raise DataError("decode='device' on a GPU needs a torchvision built with nvJPEG; use decode='workers'")
    return decode
