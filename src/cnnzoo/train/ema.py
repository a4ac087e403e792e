"""An exponential moving average of the weights, as torchvision's classification references keep it.

``ema = decay * ema + (1 - decay) * weights`` for every parameter and buffer (BatchNorm's running
statistics included), every ``model_ema_steps`` optimizer steps; during the warm-up epochs the average
is reset to a plain copy after each update, so it starts from the warmed-up weights. The decay is
adjusted as the references do (``references/classification/train.py``, after pycls): the number of EMA
updates in a run grows with the data and shrinks with the images per update, so

    adjust = world_size * batch_size * model_ema_steps / epochs
    alpha  = min(1, (1 - model_ema_decay) * adjust)
    decay  = 1 - alpha

(``batch_size`` here counts the images of one optimizer step per process: ``--batch-size`` times
``--accum-steps``). :class:`ExponentialMovingAverage` is the references' ``utils.ExponentialMovingAverage``:
torch's ``AveragedModel`` with that average and ``use_buffers=True``.

A run with an EMA checkpoints it as the weights (:class:`EmaCheckpoints`): the pair's ``.safetensors``
holds the averaged weights, so ``cnnzoo eval``, ``predict``, ``export`` and ``load_model`` use them as
they are, and the raw weights go beside it to ``TAG.raw.safetensors``, which the pointer files and the
weights' metadata name (``raw_weights``); the state file holds the average's update count. Run folders
without an EMA are as they always were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .. import checkpoint as ckpt

__all__ = ["EmaCheckpoints", "ExponentialMovingAverage", "adjusted_decay", "raw_weights_of"]


def adjusted_decay(decay: float, *, batch_size: int, world_size: int, ema_steps: int, epochs: int) -> float:
    """The decay the references use for ``--model-ema-decay decay`` (see the module docstring)."""
    adjust = world_size * batch_size * ema_steps / epochs
    alpha = min(1.0, (1.0 - decay) * adjust)
    return 1.0 - alpha


class ExponentialMovingAverage(AveragedModel):
    """``AveragedModel`` keeping ``decay * average + (1 - decay) * current`` of parameters and buffers.

    ``self.module`` is the averaged copy of the model (evaluate it, save it); ``n_averaged`` counts the
    updates since the last reset (0: the next update copies the weights).
    """

    def __init__(self, model: nn.Module, decay: float, device: torch.device | str | None = None) -> None:
        def ema_avg(
            avg_model_param: torch.Tensor, model_param: torch.Tensor, num_averaged: torch.Tensor
        ) -> torch.Tensor:
            return decay * avg_model_param + (1 - decay) * model_param

        super().__init__(model, device, ema_avg, use_buffers=True)
        self.decay = decay

    def step(self, model: nn.Module, step_in_epoch: int, *, every: int, epoch: int, warmup_epochs: int) -> None:
        """After optimizer step ``step_in_epoch`` (0-based) of ``epoch``: update every ``every`` steps, as the
        references' ``train_one_epoch`` does, and during warm-up reset the count so the next update copies."""
        if step_in_epoch % every == 0:
            self.update_parameters(model)
            if epoch < warmup_epochs:
                self.n_averaged.fill_(0)


class EmaCheckpoints(ckpt.RunCheckpoints):
    """A run folder's checkpoints where the weights file holds the EMA and ``TAG.raw.safetensors`` the raw weights."""

    def save(
        self, tag: str, model: nn.Module, model_args: dict[str, Any], state: dict[str, Any], *, best: bool,
        info: dict[str, Any], raw_model: nn.Module | None = None,
    ) -> None:  # fmt: skip
        """As :meth:`RunCheckpoints.save`, the raw weights written first (so the pointers never name a
        pair whose raw file is missing); ``model`` is then the EMA's averaged module."""
        if raw_model is not None:
            raw = f"{ckpt.CKPT_DIR}/{tag}.raw.safetensors"
            ckpt.save_weights(self.run_dir / raw, raw_model, model_args, extra={"info": {**info, "ema": False}})
            info = {**info, "ema": True, "raw_weights": raw}
        super().save(tag, model, model_args, state, best=best, info=info)

    def _prune(self) -> None:
        keep = set()
        for which in ("last", "best"):
            p = self.pointer(which)
            if p:
                keep.update(Path(p[k]).name for k in ("weights", "state", "raw_weights") if k in p)
        for f in self.folder.glob("*"):  # also temp files a killed run left behind; only rank 0 writes here
            if f.name not in keep:
                f.unlink(missing_ok=True)


def raw_weights_of(weights: Path) -> Path:
    """The raw weights of a checkpoint: ``weights`` itself, or for a run with an EMA the file its metadata names."""
    raw = ckpt.read_metadata(weights).get("info", {}).get("raw_weights")
    return weights if raw is None else Path(weights).parents[1] / raw
