"""Batchers: a data split as an endless supply of normalised batches on the training device, epoch by epoch.

:class:`ArrayBatches` serves in-memory splits (MNIST, CIFAR, synthetic): the whole uint8 split sits on the
device and is indexed, augmented and normalised there. :class:`LoaderBatches` serves image folders through
DataLoader worker processes. Both shard the split across the processes of a distributed run: each takes
``shard.rank``-th of every ``shard.world`` samples (``shard`` is a :class:`cnnzoo.train.Dist`, or anything with
``rank`` and ``world``). The order and augmentation of epoch ``e`` come from generators seeded with
``(seed, e)`` alone, so a resumed run replays exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

# Through the package, not from .arrays: the batch functions are looked up when a batch is made, so a
# caller (or a test) that replaces cnnzoo.data.normalize_batch reaches every batcher.
from .. import data as datalib
from .device_decode import DeviceDecoder, check_decode_option

__all__ = ["ArrayBatches", "LoaderBatches", "Shard", "channel_stats", "make_batches"]


class Shard(Protocol):
    """Which share of a split this process takes: every ``world``-th sample from ``rank`` on."""

    rank: int
    world: int


def _epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 100_003 + epoch)
    return g


def _shard_steps(n: int, batch_size: int, d: Shard, train: bool) -> tuple[int, int]:
    """(samples per process, batches per epoch). Training: every process takes the same number of full
    batches (DDP needs equal step counts); evaluation: every sample once, the last batch may be short."""
    per_rank = n // d.world if train else len(range(d.rank, n, d.world))
    return per_rank, per_rank // batch_size if train else math.ceil(per_rank / batch_size)


class ArrayBatches:
    """Batches of an in-memory split: shuffled, sharded across ranks, augmented on the device."""

    def __init__(
        self, split: datalib.ArrayData, batch_size: int, device: torch.device, mean, std, d: Shard, *,
        train: bool, pad: int = 0, flip: bool = False,
    ) -> None:  # fmt: skip
        self.images = split.images.to(device)  # uint8, whole split: MNIST/CIFAR fit anywhere
        self.labels = split.labels.to(device)
        self.batch_size, self.device, self.mean, self.std, self.d = batch_size, device, mean, std, d
        self.train, self.pad, self.flip = train, pad, flip
        self.per_rank, self.steps = _shard_steps(len(self.labels), batch_size, d, train)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int, epoch: int):
        n = len(self.labels)
        if self.train:
            order = torch.randperm(n, generator=_epoch_generator(seed, epoch)).to(self.device)
            order = order[self.d.rank :: self.d.world][: self.per_rank]
            aug = _epoch_generator(seed + 1 + 1_000 * self.d.rank, epoch, self.device)
        else:
            order = torch.arange(self.d.rank, n, self.d.world, device=self.device)  # each sample exactly once
        for i in range(self.steps):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.images[idx]
            if self.train and (self.pad or self.flip):
                x = datalib.augment_batch(x, pad=self.pad, flip=self.flip, generator=aug)
            yield datalib.normalize_batch(x, self.mean, self.std), self.labels[idx]


class LoaderBatches:
    """Batches of an image folder, read by DataLoader worker processes.

    ``decode="workers"``: the workers decode and crop each image on the CPU (ImageFolderData) and the
    uint8 batch is copied over. ``decode="device"``: the workers only read the files and the batch is
    decoded and cropped on ``device`` (nvJPEG on a GPU, see :mod:`cnnzoo.data.device_decode`), which
    keeps up with a GPU where CPU decoding would need dozens of cores. ``"auto"``: workers, measured
    faster wherever a GPU has a few cores (see :func:`~cnnzoo.data.device_decode.check_decode_option`).
    """

    def __init__(
        self, split, batch_size: int, device: torch.device, mean, std, d: Shard, *,
        train: bool, workers: int, decode: str = "auto",
    ) -> None:  # fmt: skip
        self.split, self.batch_size, self.device, self.mean, self.std, self.d = split, batch_size, device, mean, std, d
        self.train, self.workers = train, workers
        self.decode = check_decode_option(decode, device)
        self.decoder = DeviceDecoder(split, device) if self.decode == "device" else None
        self.per_rank, self.steps = _shard_steps(len(split), batch_size, d, train)
        self.skipped = 0

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int, epoch: int):
        on_device = self.decoder is not None
        for batch in self._loader(seed, epoch):
            self.skipped += batch.skipped  # corrupt files, found (and warned about) in the workers
            if batch.labels.numel() == 0:
                continue
            if on_device:
                before = self.decoder.skipped
                x, y = self.decoder(batch)
                self.skipped += self.decoder.skipped - before
                if len(y) == 0:
                    continue
            else:
                x = batch.images.to(self.device, non_blocking=True)
                y = batch.labels.to(self.device, non_blocking=True)
            yield datalib.normalize_batch(x, self.mean, self.std), y

    def _loader(self, seed: int, epoch: int) -> torch.utils.data.DataLoader:
        n = len(self.split)
        if self.train:
            order = torch.randperm(n, generator=_epoch_generator(seed, epoch))[self.d.rank :: self.d.world][: self.per_rank]
            order = order[: self.steps * self.batch_size]
        else:
            order = torch.arange(self.d.rank, n, self.d.world)
        # Seeds the workers' random crops, and on the device path the crops drawn in this process.
        torch.manual_seed(seed * 100_003 + epoch + 7919 * self.d.rank)
        on_device = self.decoder is not None
        return torch.utils.data.DataLoader(
            datalib.EncodedImages(self.split) if on_device else self.split,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            num_workers=self.workers,
            collate_fn=datalib.collate_encoded if on_device else datalib.collate_skip_none,
            pin_memory=self.device.type == "cuda" and not on_device,  # nvJPEG reads the bytes from host memory itself
            persistent_workers=False,
        )


def make_batches(
    split, batch_size: int, device: torch.device, mean, std, d: Shard, *, train: bool,
    pad: int = 0, flip: bool = False, workers: int = 4, decode: str = "auto",
):  # fmt: skip
    """The batcher for ``split``: :class:`ArrayBatches` for in-memory data (augmented with ``pad`` and
    ``flip`` when training), :class:`LoaderBatches` for an image folder (``workers``, ``decode``)."""
    if isinstance(split, datalib.ArrayData):
        return ArrayBatches(split, batch_size, device, mean, std, d, train=train, pad=pad if train else 0, flip=bool(flip) if train else False)
    return LoaderBatches(split, batch_size, device, mean, std, d, train=train, workers=workers, decode=decode)


def channel_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """The model's per-channel mean/std, for another channel count (averaged, then repeated)."""
    return tuple(values) if len(values) == channels else (sum(values) / len(values),) * channels
