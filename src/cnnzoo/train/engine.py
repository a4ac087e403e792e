"""One epoch of training and one pass of evaluation, and what they need: loss, optimizer, schedule.

:func:`train_one_epoch` and :func:`evaluate` know nothing of run folders or checkpoints (``cnnzoo eval``
calls :func:`evaluate` on its own); :mod:`cnnzoo.train.run` strings them together.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import unwrap
from .config import TrainConfig, TrainingError
from .distributed import Dist, all_reduce_sum

__all__ = [
    "AUX_LOSS_WEIGHT", "Learner", "NonFiniteLoss", "evaluate", "make_optimizer", "make_scheduler", "param_groups",
    "train_one_epoch",
]  # fmt: skip

# Weight of the auxiliary classifiers' losses, where a model has them and returns them in training:
# 0.3 in GoogLeNet's paper (section 5); 0.4 in torchvision's Inception v3 recipe.
AUX_LOSS_WEIGHT = {"googlenet": 0.3, "inception": 0.4}


class NonFiniteLoss(TrainingError):
    """The loss became NaN or infinite; the run turns this into a message about its last good checkpoint."""

    def __init__(self, epoch: int, step: int, lr: float) -> None:
        self.epoch, self.step, self.lr = epoch, step, lr
        super().__init__(f"the loss became NaN or infinite in epoch {epoch + 1} (step {step}, lr {lr:.4g})")



def training_defaults(device: torch.device | str) -> dict[str, Any]:
    """The settings that make training fast on ``device``, as measured (benchmarks/RESULTS.md).

    Channels-last trained every family 1.05-1.5x faster than NCHW on the 2-core CPU of RESULTS.md (oneDNN's
    kernels prefer it), and it is the layout a GPU's tensor cores read; bf16 autocast runs the convolutions
    on the tensor cores; a fused optimizer updates all weights in a few kernels instead of a few per
    weight; on a GPU ``torch.compile`` fuses the elementwise passes (1.45x for resnet50 on an H200). ``cnnzoo
    bench --mode train`` runs cnnzoo with the first three (``--compile`` compiles every contender alike);
    ``cnnzoo train`` uses all four.
    """
    cuda = torch.device(device).type == "cuda"
    return dict(channels_last=True, amp="bf16" if cuda else None, fused_optimizer=cuda, compile=cuda)


def _forward_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module, aux_weight: float):
    """Logits and loss; models with auxiliary heads return (logits, aux...) in training mode."""
    out = net(x)
    if isinstance(out, tuple):
        logits, aux = out[0], [a for a in out[1:] if a is not None]
        return logits, criterion(logits, y) + aux_weight * sum(criterion(a, y) for a in aux)
    return out, criterion(out, y)


# ----------------------------------------------------------------------------------------------
# optimisation


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and BatchNorm parameters (1-d tensors): decaying them only hurts."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    # One kernel for all parameters on a GPU; batched per-tensor loops on the CPU.
    fused = dict(fused=True) if training_defaults(device)["fused_optimizer"] else dict(foreach=True)
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **fused)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    raise TrainingError(f"unknown optimizer {cfg.opt!r}: use sgd or adamw")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step learning-rate schedule. Warm-up is linear over ``cfg.warmup`` epochs."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(cfg.warmup * steps_per_epoch, total - 1)
    if cfg.schedule == "onecycle" and total >= 4:  # each of its two phases needs a step or more
        pct = min(max(warm / total, 0.25, 2 / total), (total - 2) / total)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total, pct_start=pct, cycle_momentum=cfg.opt == "sgd", base_momentum=0.85,
            max_momentum=cfg.momentum if cfg.opt == "sgd" else 0.95,
        )  # fmt: skip
    if cfg.schedule not in ("cosine", "step", "onecycle"):
        raise TrainingError(f"unknown schedule {cfg.schedule!r}: use cosine, onecycle or step")

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if cfg.schedule in ("cosine", "onecycle"):  # onecycle of under 4 steps: plain cosine
            return 0.5 * (1 + math.cos(math.pi * t))
        return 0.1 ** (int(t >= 0.5) + int(t >= 0.75))  # step: /10 at half and three quarters

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class Learner:
    """What a training step runs and updates: the network as trained (DDP- or compile-wrapped, or the model
    itself), its optimizer, schedule and AMP scaler, the loss, and the numeric settings of the step."""

    net: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None = None
    aux_weight: float = 0.0
    channels_last: bool = False


def train_one_epoch(learner: Learner, batches, d: Dist, *, epoch: int, epochs: int, step: int, seed: int, progress: bool) -> tuple[dict[str, float], int]:
    """Train on every batch of epoch ``epoch``; the loss, accuracy, image count (all ranks) and seconds, and
    the step counter after it. Raises :class:`NonFiniteLoss` as soon as a progress refresh or the epoch's
    end sees a NaN or infinite loss."""
    lrn = learner
    lrn.net.train()
    t0 = time.perf_counter()
    sums = torch.zeros(2, dtype=torch.float64, device=lrn.device)  # loss sum, correct
    seen = 0
    bad = torch.zeros((), dtype=torch.bool, device=lrn.device)
    with _progress(progress and d.main, f"epoch {epoch + 1}/{epochs}", len(batches)) as bar:
        for i, (x, y) in enumerate(batches.epoch(seed, epoch)):
            if lrn.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(lrn.device.type, dtype=lrn.amp_dtype, enabled=lrn.amp_dtype is not None):
                logits, loss = _forward_loss(lrn.net, x, y, lrn.criterion, lrn.aux_weight)
            lrn.opt.zero_grad(set_to_none=True)
            lrn.scaler.scale(loss).backward()
            lrn.scaler.step(lrn.opt)
            lrn.scaler.update()
            lrn.sched.step()
            step += 1
            # Accumulate on the device; the host reads these only at refreshes (no sync per step).
            bad |= ~torch.isfinite(loss.detach())
            sums += torch.stack([loss.detach().double() * len(y), (logits.detach().argmax(1) == y).sum().double()])
            seen += len(y)
            if bar.due(i):
                if bad.item():
                    raise NonFiniteLoss(epoch, step, lrn.opt.param_groups[0]["lr"])
                s = sums.tolist()
                bar.update(i + 1, loss=s[0] / seen, acc=s[1] / seen, ips=seen * d.world / (time.perf_counter() - t0))
    sums = torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64, device=lrn.device)])
    all_reduce_sum(sums, d)
    if all_reduce_sum(bad.to(torch.float32), d).item() > 0:
        raise NonFiniteLoss(epoch, step, lrn.opt.param_groups[0]["lr"])
    seconds = time.perf_counter() - t0
    loss_sum, correct, images = sums.tolist()
    return dict(loss=loss_sum / images, acc=correct / images, images=images, seconds=seconds), step


# ----------------------------------------------------------------------------------------------
# evaluation (also used by `cnnzoo eval`)


@torch.no_grad()
def evaluate(model: nn.Module, batches, num_classes: int, d: Dist, *, amp_dtype=None, channels_last=False, epoch: int = 0, seed: int = 0) -> dict[str, Any]:
    """Loss, top-1, top-5 and the confusion matrix over a split; every sample counted exactly once."""
    was_training = model.training
    model.eval()
    device = next(unwrap(model).parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top1, top5 (the count is the confusion's sum)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    k = min(5, num_classes)
    for x, y in batches.epoch(seed, epoch):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        logits = logits.float()
        top = logits.topk(k, dim=1).indices
        sums += torch.stack([
            F.cross_entropy(logits, y, reduction="sum").double(),
            (top[:, 0] == y).sum().double(),
            (top == y[:, None]).any(dim=1).sum().double(),
        ])
        confusion += torch.bincount(y * num_classes + top[:, 0], minlength=num_classes**2).view(num_classes, num_classes)
    all_reduce_sum(sums, d)
    all_reduce_sum(confusion, d)
    model.train(was_training)
    loss, top1, top5 = sums.tolist()
    count = int(confusion.sum())
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1)).tolist()
    n = max(count, 1)
    return dict(loss=loss / n, top1=top1 / n, top5=top5 / n, count=count, per_class=per_class, confusion=confusion.cpu().tolist())


# ----------------------------------------------------------------------------------------------
# the progress bar


class _Bar:
    """A rich progress bar for one epoch, refreshed a few times a second at most (each refresh syncs)."""

    def __init__(self, enabled: bool, title: str, total: int) -> None:
        self.enabled, self.title, self.total = enabled, title, total
        self.every = max(1, total // 20)
        self.progress = None

    def __enter__(self):
        from rich.console import Console

        if self.enabled and Console(stderr=True).is_terminal:  # a live bar only on a terminal; logs get one line per epoch
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%} {task.fields[ips]:,.0f} img/s"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=True, console=Console(stderr=True),
            )  # fmt: skip
            self.progress.start()
            self.task = self.progress.add_task(self.title, total=self.total, loss=float("nan"), acc=0.0, ips=0.0)
        return self

    def due(self, i: int) -> bool:
        return (i + 1) % self.every == 0 or i + 1 == self.total

    def update(self, done: int, **fields: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, **fields)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def _progress(enabled: bool, title: str, total: int) -> _Bar:
    return _Bar(enabled, title, total)
