"""Several processes, one run: the process group under torchrun, sums across ranks, the device of each rank.

Run under ``torchrun --nproc_per_node N -m cnnzoo train ...`` a run trains with DistributedDataParallel
(gloo on CPU, nccl on GPU); alone, :func:`setup_distributed` returns ``Dist()`` (rank 0 of 1) and every
helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..options import check_device_name
from .config import TrainingError

__all__ = ["Dist", "all_reduce_sum", "gather_rng_states", "pick_device", "setup_distributed"]


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_hint: str | None) -> Dist:
    """Join the process group when launched by torchrun (RANK / WORLD_SIZE in the environment)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    use_cuda = torch.cuda.is_available() and (device_hint is None or device_hint.startswith("cuda"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """``t`` summed over every rank, in place (alone: ``t`` as it is)."""
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rng_states(d: Dist) -> list[torch.Tensor]:
    """Every rank's torch RNG state (dropout masks differ per rank), gathered on all ranks."""
    state = torch.get_rng_state()
    if d.world == 1:
        return [state]
    out = [None] * d.world
    dist.all_gather_object(out, state)
    return out


def pick_device(name: str | None, d: Dist) -> torch.device:
    """The device ``name`` asks for (None or "auto": cuda when there is one); each rank on its own GPU."""
    check_device_name(name, label="--device")  # "tpu" is refused in one line, not by torch.device's RuntimeError
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and d.world > 1:
        name = f"cuda:{d.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but this machine has no CUDA GPU; use --device cpu")
    return device
