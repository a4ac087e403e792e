"""Batchers: a data split as an endless supply of normalised batches on the training device, epoch by epoch.

:class:`ArrayBatches` serves in-memory splits (MNIST, CIFAR, synthetic): the whole uint8 split sits on the
device and is indexed, augmented and normalised there. :class:`LoaderBatches` serves image folders through
DataLoader worker processes. Both shard the split across the processes of a distributed run: each takes
``shard.rank``-th of every ``shard.world`` samples (``shard`` is a :class:`cnnzoo.train.Dist`, or anything with
``rank`` and ``world``). The order and augmentation of epoch ``e`` come from generators seeded with
``(seed, e)`` alone, so a resumed run replays exactly the batches the uninterrupted run would have seen.

The recipe augmentations (:mod:`cnnzoo.data.augment`) hook in as a :class:`~cnnzoo.data.augment.BatchAugment`:
its policy on the uint8 pixels of in-memory batches (folders run theirs in the decoding workers), RandomErasing
and MixUp/CutMix on every normalised training batch. ``ra_reps`` turns on repeated augmentation
(:mod:`cnnzoo.data.samplers`): the epoch's order is the RA sampler's for this process.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

# Through the package, not from .arrays: the batch functions are looked up when a batch is made, so a
# caller (or a test) that replaces cnnzoo.data.normalize_batch reaches every batcher.
from .. import data as datalib
from .augment import BatchAugment, epoch_rng
from .device_decode import DeviceDecoder, check_decode_option
from .samplers import repeated_order, selected_per_rank

__all__ = ["ArrayBatches", "ChannelsReversed", "LoaderBatches", "Shard", "channel_stats", "make_batches"]


class Shard(Protocol):
    """Which share of a split this process takes: every ``world``-th sample from ``rank`` on."""

    rank: int
    world: int


def _epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 100_003 + epoch)
    return g


def _shard_steps(n: int, batch_size: int, d: Shard, train: bool, ra_reps: int = 0) -> tuple[int, int]:
    """(samples per process, batches per epoch). Training: every process takes the same number of full
    batches (DDP needs equal step counts); evaluation: every sample once, the last batch may be short.
    Repeated augmentation: the RA sampler's share per process."""
    if train and ra_reps:
        per_rank = selected_per_rank(n, d.world)
    else:
        per_rank = n // d.world if train else len(range(d.rank, n, d.world))
    return per_rank, per_rank // batch_size if train else math.ceil(per_rank / batch_size)


def _train_order(n: int, seed: int, epoch: int, d: Shard, per_rank: int, ra_reps: int) -> torch.Tensor:
    """This process's sample order for a training epoch: its shard of the epoch's permutation, or the RA
    sampler's indices of it."""
    perm = torch.randperm(n, generator=_epoch_generator(seed, epoch))
    if ra_reps:
        return repeated_order(perm, world=d.world, rank=d.rank, repetitions=ra_reps)
    return perm[d.rank :: d.world][:per_rank]


class ArrayBatches:
    """Batches of an in-memory split: shuffled, sharded across ranks, augmented on the device."""

    def __init__(
        self, split: datalib.ArrayData, batch_size: int, device: torch.device, mean, std, d: Shard, *,
        train: bool, pad: int = 0, flip: bool = False, augment: BatchAugment | None = None, ra_reps: int = 0,
    ) -> None:  # fmt: skip
        self.images = split.images.to(device)  # uint8, whole split: MNIST/CIFAR fit anywhere
        self.labels = split.labels.to(device)
        self.batch_size, self.device, self.mean, self.std, self.d = batch_size, device, mean, std, d
        self.train, self.pad, self.flip = train, pad, flip
        self.augment, self.ra_reps = (augment, ra_reps) if train else (None, 0)
        self.per_rank, self.steps = _shard_steps(len(self.labels), batch_size, d, train, self.ra_reps)

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int, epoch: int):
        n = len(self.labels)
        if self.train:
            order = _train_order(n, seed, epoch, self.d, self.per_rank, self.ra_reps).to(self.device)
            aug = _epoch_generator(seed + 1 + 1_000 * self.d.rank, epoch, self.device)
        else:
            order = torch.arange(self.d.rank, n, self.d.world, device=self.device)  # each sample exactly once
        pixels_rng, batch_rng = (epoch_rng(seed, epoch, self.d.rank, k) for k in (1, 2))
        for i in range(self.steps):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x, y = self.images[idx], self.labels[idx]
            if self.train and (self.pad or self.flip):
                x = datalib.augment_batch(x, pad=self.pad, flip=self.flip, generator=aug)
            if self.augment is not None:
                x = self.augment.pixels(x, pixels_rng)
            x = datalib.normalize_batch(x, self.mean, self.std)
            yield self.augment.tensors(x, y, batch_rng) if self.augment is not None else (x, y)


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
        train: bool, workers: int, decode: str = "auto", augment: BatchAugment | None = None, ra_reps: int = 0,
    ) -> None:  # fmt: skip
        self.split, self.batch_size, self.device, self.mean, self.std, self.d = split, batch_size, device, mean, std, d
        self.train, self.workers = train, workers
        self.augment, self.ra_reps = (augment, ra_reps) if train else (None, 0)
        self.decode = check_decode_option(decode, device)
        self.decoder = DeviceDecoder(split, device) if self.decode == "device" else None
        self.per_rank, self.steps = _shard_steps(len(split), batch_size, d, train, self.ra_reps)
        self.skipped = 0

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int, epoch: int):
        on_device = self.decoder is not None
        pixels_rng, batch_rng = (epoch_rng(seed, epoch, self.d.rank, k) for k in (1, 2))
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
            if self.augment is not None and on_device:  # the workers did not: the policy on the decoded batch
                x = self.augment.pixels(x.round().clamp_(0, 255).to(torch.uint8), pixels_rng)
            x = datalib.normalize_batch(x, self.mean, self.std)
            yield self.augment.tensors(x, y, batch_rng) if self.augment is not None else (x, y)

    def _loader(self, seed: int, epoch: int) -> torch.utils.data.DataLoader:
        n = len(self.split)
        if self.train:
            order = _train_order(n, seed, epoch, self.d, self.per_rank, self.ra_reps)[: self.steps * self.batch_size]
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
    pad: int = 0, flip: bool = False, workers: int = 4, decode: str = "auto", channel_order: str = "RGB",
    augment: BatchAugment | None = None, ra_reps: int = 0,
):  # fmt: skip
    """The batcher for ``split``: :class:`ArrayBatches` for in-memory data (augmented with ``pad`` and
    ``flip`` when training), :class:`LoaderBatches` for an image folder (``workers``, ``decode``); ``augment``
    and ``ra_reps`` for training batches (see the module docstring).

    ``channel_order="BGR"`` (weights ported from Keras' caffe-style models): images are decoded as RGB,
    so the batches are normalised with ``mean`` and ``std`` (given in BGR order) reversed and then have
    their channels reversed: ``flip((x - m[::-1]) / s[::-1]) == (flip(x) - m) / s``."""
    if channel_order not in ("RGB", "BGR"):
        raise ValueError(f"channel_order {channel_order!r}: expected RGB or BGR")
    bgr = channel_order == "BGR" and len(mean) == 3
    if bgr:
        mean, std = tuple(mean)[::-1], tuple(std)[::-1]
    if isinstance(split, datalib.ArrayData):
        batches = ArrayBatches(
            split, batch_size, device, mean, std, d, train=train, pad=pad if train else 0, flip=bool(flip) if train else False,
            augment=augment, ra_reps=ra_reps,
        )  # fmt: skip
    else:
        batches = LoaderBatches(
            split,
            batch_size,
            device,
            mean,
            std,
            d,
            train=train,
            workers=workers,
            decode=decode,
            augment=augment,
            ra_reps=ra_reps,
        )
    return ChannelsReversed(batches) if bgr else batches


class ChannelsReversed:
    """A batcher whose batches have their channels in reverse order (RGB -> BGR); everything else passes through."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getattr__(self, name: str):  # per_rank, skipped, ...: the wrapped batcher's
        if name == "batches":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.batches, name)

    def epoch(self, seed: int, epoch: int):
        for x, y in self.batches.epoch(seed, epoch):
            yield x.flip(1), y


def channel_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """The model's per-channel mean/std, for another channel count (averaged, then repeated)."""
    return tuple(values) if len(values) == channels else (sum(values) / len(values),) * channels
