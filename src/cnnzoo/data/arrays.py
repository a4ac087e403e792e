"""Whole-tensor operations on image batches: channel conversion, resizing, augmentation, normalisation.

They work on whatever device the batch is on and loop over nothing in Python, which is what makes
MNIST and CIFAR training fast: a batch is indexed out of :class:`ArrayData`, moved to the GPU as uint8,
and augmented and normalised there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .base import ArrayData, DataError

# Resizing works on this many images at a time, so the float copy made inside stays small.
_RESIZE_CHUNK = 1024


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images to ``channels``: 3 -> 1 by luminance (ITU-R 601), 1 -> 3 by repeating."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        return TF.rgb_to_grayscale(images, num_output_channels=1)
    if have == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    raise DataError(f"cannot convert {have}-channel images to {channels} channels (only between 1 and 3)")


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` images to ``size x size`` (bilinear, antialiased), a chunk at a time."""
    if images.shape[-2:] == (size, size):
        return images
    chunks = [TF.resize(chunk, [size, size], antialias=True) for chunk in images.split(_RESIZE_CHUNK)]
    return torch.cat(chunks) if chunks else images.new_empty(*images.shape[:2], size, size)


def fit_arrays(data: ArrayData, *, channels: int | None, image_size: int | None) -> ArrayData:
    """``data`` with ``channels`` channels and ``image_size`` sides (None keeps the data's own)."""
    images = data.images
    # Grayscale first and repeat last, so the resize works on one channel either way.
    if channels == 1:
        images = convert_channels(images, 1)
    if image_size is not None:
        images = resize_images(images, image_size)
    if channels is not None:
        images = convert_channels(images, channels)
    return ArrayData(images, data.labels, data.classes)


def augment_batch(
    images: torch.Tensor, *, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random translation (zero padding, each sample its own shift in ``[-pad, pad]``) and optional flip.

    This is the "pad and random-crop" augmentation of the CIFAR papers, done for the whole batch with one
    gather. ``images`` is ``(N, C, H, W)`` of any dtype on any device; the result has the same shape,
    dtype and device, and every pixel is either an input pixel or 0.

    Randomness comes only from ``generator`` (the device's default generator when None): first the
    shifts, ``(N, 2)`` integers (rows, columns), then, if ``flip``, ``N`` coin tosses. A run that saves and
    restores the generator's state gets the same augmentation bit for bit.
    """
    if images.dim() != 4:
        raise DataError(f"augment_batch expects a batch (N, C, H, W); got shape {tuple(images.shape)}")
    if pad < 0:
        raise DataError(f"augment_batch: pad must be >= 0, got {pad}")
    n, _, h, w = images.shape
    draw_on = generator.device if generator is not None else images.device
    shifts = torch.randint(-pad, pad + 1, (n, 2), generator=generator, device=draw_on).to(images.device)
    flips = torch.rand(n, generator=generator, device=draw_on).to(images.device) < 0.5 if flip else None

    # out[y, x] = in[y - dy, x - dx]; in the padded image that is row y - dy + pad, column x - dx + pad.
    y = torch.arange(h, device=images.device)
    x = torch.arange(w, device=images.device)
    dy, dx = shifts[:, :1], shifts[:, 1:]
    rows = y - dy + pad  # (N, H)
    cols = x - dx + pad  # (N, W)
    if flips is not None:
        # Flip, then shift: out[y, x] = in[y - dy, W - 1 - (x - dx)].
        cols = torch.where(flips[:, None], (w - 1 - x) + dx + pad, cols)
    padded = F.pad(images, (pad, pad, pad, pad))
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images / 255 - mean) / std`` per channel, as float32 on the batch's device (``images`` holds 0..255)."""
    c = images.shape[1]
    if len(mean) != c or len(std) != c:
        raise DataError(f"normalize_batch: {c}-channel images need {c} means and stds; got {len(mean)} and {len(std)}")
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, c, 1, 1)
    return (images.float() / 255 - mean_t) / std_t
