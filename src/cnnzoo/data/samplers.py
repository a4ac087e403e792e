"""Repeated augmentation (Hoffer et al. 2019; DeiT): each image several times an epoch, its copies spread over processes.

:class:`RASampler` is torchvision's ``references/classification/sampler.py`` (from DeiT): every index of
a shuffled order repeated ``repetitions`` times in a row, padded to a multiple of the process count,
dealt out round-robin (so the copies of one image land on different processes, each augmented its own
way), and each process keeps only ``floor(N / 256) * 256 / world`` of its share, so that an epoch holds
about as many images as the data set, whatever ``repetitions`` is. :func:`repeated_order` is that rule
on a given permutation; cnnzoo's batchers draw the permutation from their per-epoch generator (the same
on every process), so a resumed run replays it.
"""

from __future__ import annotations

import math

import torch

from .base import DataError

__all__ = ["RASampler", "repeated_order", "selected_per_rank"]

ROUND_TO = 256  # the reference keeps floor(N / 256) * 256 images per epoch in all


def selected_per_rank(n: int, world: int) -> int:
    """How many indices each of ``world`` processes takes per epoch from a data set of ``n``."""
    return int(math.floor(n // ROUND_TO * ROUND_TO / world))


def repeated_order(perm: torch.Tensor, *, world: int, rank: int, repetitions: int, cut: bool = True) -> torch.Tensor:
    """Process ``rank``'s indices of one epoch, given the epoch's permutation ``perm`` of the data set
    (``cut=False``: its whole share, before the reference keeps the first :func:`selected_per_rank`)."""
    n = len(perm)
    per_rank = int(math.ceil(n * repetitions / world))
    total = per_rank * world
    indices = perm.repeat_interleave(repetitions)
    indices = torch.cat([indices, indices[: total - len(indices)]])
    share = indices[rank:total:world]
    return share[: selected_per_rank(n, world)] if cut else share


class RASampler(torch.utils.data.Sampler):
    """torchvision's repeated-augmentation sampler for a DataLoader (``set_epoch`` before each epoch).

    ``num_replicas`` and ``rank`` default to the process group's. The order of an epoch is
    ``torch.randperm(len(dataset))`` from a generator seeded with ``seed + epoch`` (``shuffle=False``:
    ``0 .. N-1``), as in the reference.
    """

    def __init__(
        self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True, seed: int = 0,
        repetitions: int = 3,
    ) -> None:  # fmt: skip
        if num_replicas is None or rank is None:
            import torch.distributed as dist

            if not dist.is_available() or not dist.is_initialized():
                raise DataError("RASampler: give num_replicas and rank, or start the process group first")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.repetitions, self.epoch = shuffle, seed, repetitions, 0
        self.num_selected_samples = selected_per_rank(len(dataset), num_replicas)

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            perm = torch.arange(n)
        order = repeated_order(perm, world=self.num_replicas, rank=self.rank, repetitions=self.repetitions)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_selected_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
