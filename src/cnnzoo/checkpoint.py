"""Checkpoints that are safe to load and survive a crash at any moment.

* Model weights go to ``.safetensors`` (no code can hide in it), with the model's name and
  constructor arguments in its metadata, so :func:`cnnzoo.load_model` rebuilds the model alone
  (the file format: :mod:`cnnzoo.weights.cnnzoo_format`).
* Optimizer, scheduler, AMP scaler, RNG and loop counters go to a ``.state.pt`` file holding only
  tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` reads it and no
  pickle from the file is ever executed.
* Every file is written atomically: to a temporary file in the same folder, flushed, fsynced, then
  renamed over the target (a rename within one file system is atomic on POSIX). A run folder keeps
  numbered checkpoint pairs plus two tiny pointer files, ``last.json`` and ``best.json``, rewritten
  atomically only after both files of the pair are on disk. So a crash (SIGKILL, power cut, disk
  full) leaves the pointers naming a complete, older pair.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import WeightsError
from .fileio import atomic_write, atomic_write_text
from .weights.cnnzoo_format import load_weights, read_metadata, resolve_checkpoint, save_weights
from .weights.state_dict import unwrap

# The weights file itself (safetensors + metadata) and the reading of a run folder's pointers are in
# weights/, one floor down, since every weights reader takes a run folder; re-exported here, where
# they used to be, since RunCheckpoints writes them.
__all__ = [
    "CKPT_DIR",
    "RunCheckpoints",
    "load_training_state",
    "load_weights",
    "read_metadata",
    "resolve_checkpoint",
    "save_training_state",
    "save_weights",
    "unwrap",
]

CKPT_DIR = "checkpoints"


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write optimizer/scheduler/scaler/RNG/counters; readable with ``torch.load(weights_only=True)``."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an UnpicklingError names the forbidden global; nothing in the file ran
        raise WeightsError(f"{path}: refused or unreadable training state ({type(e).__name__}: {e})") from None


class RunCheckpoints:
    """The checkpoints of one run folder: numbered pairs plus ``last.json`` / ``best.json`` pointers."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / CKPT_DIR

    def pointer(self, which: str) -> dict[str, Any] | None:
        p = self.run_dir / f"{which}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def save(
        self,
        tag: str,
        model: nn.Module,
        model_args: dict[str, Any],
        state: dict[str, Any],
        *,
        best: bool,
        info: dict[str, Any],
    ) -> None:
        """Write the pair ``tag`` then move ``last`` (and ``best``) to it; delete pairs nothing points at."""
        weights, trainer = f"{CKPT_DIR}/{tag}.safetensors", f"{CKPT_DIR}/{tag}.state.pt"
        save_weights(self.run_dir / weights, model, model_args, extra={"info": info})
        save_training_state(self.run_dir / trainer, state)
        record = json.dumps({"weights": weights, "state": trainer, **info}, indent=2)
        atomic_write_text(self.run_dir / "last.json", record)
        if best:
            atomic_write_text(self.run_dir / "best.json", record)
        self._prune()

    def _prune(self) -> None:
        keep = set()
        for which in ("last", "best"):
            p = self.pointer(which)
            if p:
                keep.update(Path(p[k]).name for k in ("weights", "state"))
        for f in self.folder.glob("*"):  # also temp files a killed run left behind; only rank 0 writes here
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def load_last(self) -> tuple[Path, dict[str, Any]]:
        """(weights path, training state) of the last complete checkpoint."""
        p = self.pointer("last")
        if p is None:
            raise WeightsError(f"{self.run_dir}: nothing to resume, no last.json (the run saved no checkpoint yet)")
        return self.run_dir / p["weights"], load_training_state(self.run_dir / p["state"])
