"""One epoch of training and one pass of evaluation, and what they need: loss, optimizer, schedule.

:func:`train_one_epoch` and :func:`evaluate` know nothing of run folders or checkpoints (``cnnzoo eval``
calls :func:`evaluate` on its own); :mod:`cnnzoo.train.run` strings them together.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import unwrap
from .config import EPOCH_SCHEDULES, STEP_SCHEDULES, TrainConfig, TrainingError
from .distributed import Dist, all_reduce_sum
from .ema import ExponentialMovingAverage
from .freeze import Freezing

__all__ = [
    "AUX_LOSS_WEIGHT", "NORM_LAYERS", "Learner", "NonFiniteLoss", "base_lr", "evaluate", "make_optimizer", "make_scheduler",
    "param_groups", "steps_each_epoch", "train_one_epoch",
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

# torchvision's set_weight_decay: the layers whose parameters take norm_weight_decay
NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm,
)  # fmt: skip


def param_groups(
    model: nn.Module, weight_decay: float, *, norm_weight_decay: float = 0.0, bias_weight_decay: float | None = 0.0,
    head: nn.Module | None = None, lr_head_scale: float = 1.0,
) -> list[dict[str, Any]]:  # fmt: skip
    """The trainable parameters in optimizer groups, each with its ``weight_decay`` and ``lr_scale``.

    The decay follows torchvision's ``set_weight_decay``: a parameter named ``bias`` takes
    ``bias_weight_decay`` (None: no rule for biases), any other of a normalisation layer ``norm_weight_decay``,
    the rest ``weight_decay`` (cnnzoo's default, both 0: no decay on biases and BatchNorm, decaying them only hurts).
    With ``lr_head_scale`` other than 1 the parameters of ``head`` form groups of their own whose rate is
    that many times the others'. Frozen parameters (``requires_grad=False``) are in no group; empty
    groups are left out.
    """
    in_head = {id(p) for p in head.parameters()} if head is not None and lr_head_scale != 1 else set()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}

    def add(module: nn.Module) -> None:  # module by module, each one's own parameters first: model.parameters()' order
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias" and bias_weight_decay is not None:
                decay = bias_weight_decay
            else:
                decay = norm_weight_decay if isinstance(module, NORM_LAYERS) else weight_decay
            scale = lr_head_scale if id(p) in in_head else 1.0
            groups.setdefault((scale, decay), []).append(p)
        for child in module.children():
            add(child)

    add(model)
    # the groups of the body first, so param_groups[0] carries the base rate (what the logs report)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0] != 1.0, kv[0][1] != weight_decay))
    return [dict(params=ps, weight_decay=decay, lr_scale=scale) for (scale, decay), ps in ordered]


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, device: torch.device, head: nn.Module | None = None
) -> torch.optim.Optimizer:
    """The optimizer over what trains (see :func:`param_groups`), each group at ``cfg.lr`` times its ``lr_scale``."""
    groups = param_groups(
        model, cfg.weight_decay, norm_weight_decay=cfg.norm_weight_decay or 0.0, bias_weight_decay=cfg.bias_weight_decay,
        head=head, lr_head_scale=cfg.lr_head_scale if cfg.lr_head_scale is not None else 1.0,
    )  # fmt: skip
    if not groups:
        raise TrainingError("nothing to train: every parameter is frozen (--freeze, --freeze-backbone)")
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    # One kernel for all parameters on a GPU; batched per-tensor loops on the CPU.
    fused = dict(fused=True) if training_defaults(device)["fused_optimizer"] else dict(foreach=True)
    momentum = 0.9 if cfg.momentum is None else cfg.momentum
    if cfg.opt in ("sgd", "sgd_nesterov"):
        if cfg.opt == "sgd_nesterov" and momentum == 0:
            raise TrainingError("--opt sgd_nesterov needs --momentum above 0 (or use --opt sgd)")
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=momentum, nesterov=cfg.opt == "sgd_nesterov", **fused)
    if (
        cfg.opt == "rmsprop"
    ):  # torchvision's references: eps 0.0316 and alpha 0.9, as TensorFlow's RMSProp in the papers
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=momentum, eps=0.0316, alpha=0.9, foreach=True)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    raise TrainingError(f"unknown optimizer {cfg.opt!r}: use sgd, sgd_nesterov, rmsprop or adamw")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int | None = None):
    """The learning-rate schedule, stepped once per optimizer step (``plateau``: once per epoch, with the
    held-out accuracy). ``total_steps``: the run's length (default ``cfg.epochs * steps_per_epoch``)."""
    total = max(1, total_steps if total_steps is not None else cfg.epochs * steps_per_epoch)
    warm = min(cfg.warmup * steps_per_epoch, total - 1)
    if cfg.schedule == "plateau":
        if cfg.warmup:
            raise TrainingError(
                "--lr-scheduler plateau takes no warm-up: drop --lr-warmup-epochs (or pick another schedule)"
            )
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.lr_gamma, patience=cfg.lr_patience
        )
    if cfg.schedule == "onecycle" and total >= 4:  # each of its two phases needs a step or more
        pct = min(max(warm / total, 0.25, 2 / total), (total - 2) / total)
        momentum = 0.9 if cfg.momentum is None else cfg.momentum
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total, pct_start=pct,
            cycle_momentum=cfg.opt in ("sgd", "sgd_nesterov"), base_momentum=0.85,
            max_momentum=momentum if cfg.opt in ("sgd", "sgd_nesterov") else 0.95,
        )  # fmt: skip
    if cfg.schedule in EPOCH_SCHEDULES:
        return torch.optim.lr_scheduler.LambdaLR(opt, _epoch_factor(cfg, steps_per_epoch))
    if cfg.schedule not in STEP_SCHEDULES:
        raise TrainingError(
            f"unknown schedule {cfg.schedule!r}: use {', '.join((*STEP_SCHEDULES, *EPOCH_SCHEDULES, 'plateau'))}"
        )
    start = cfg.lr_warmup_decay or 0.0

    def factor(step: int) -> float:
        if step < warm:  # linear: from start to 1 over the warm-up's steps ((step + 1) / warm when start is 0)
            return start if cfg.lr_warmup_method == "constant" else start + (1 - start) * (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if cfg.schedule in ("cosine", "onecycle"):  # onecycle of under 4 steps: plain cosine
            return 0.5 * (1 + math.cos(math.pi * t))
        return 0.1 ** (int(t >= 0.5) + int(t >= 0.75))  # step: /10 at half and three quarters

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _epoch_factor(cfg: TrainConfig, steps_per_epoch: int):
    """torchvision's per-epoch schedules as a factor of the step: within an epoch the rate holds, as when the
    references call ``lr_scheduler.step()`` once an epoch. Warm-up is their ``LinearLR(start_factor=
    lr_warmup_decay, total_iters=warmup)`` or ``ConstantLR(factor=lr_warmup_decay)``, then (``SequentialLR``)
    ``StepLR``, ``CosineAnnealingLR(T_max=epochs - warmup, eta_min=lr_min)`` or ``ExponentialLR``."""
    warm, decay, floor = cfg.warmup, cfg.lr_warmup_decay, cfg.lr_min / cfg.lr if cfg.lr else 0.0
    span = max(1, cfg.epochs - warm)

    def factor(step: int) -> float:
        epoch = step // steps_per_epoch
        if epoch < warm:
            return decay if cfg.lr_warmup_method == "constant" else decay + (1 - decay) * epoch / warm
        k = epoch - warm
        if cfg.schedule == "steplr":
            return cfg.lr_gamma ** (k // cfg.lr_step_size)
        if cfg.schedule == "exponentiallr":
            return cfg.lr_gamma**k
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * k / span))  # cosineannealinglr

    return factor


def steps_each_epoch(sched: Any) -> bool:
    """Whether ``sched`` is stepped after each optimizer step (all but ReduceLROnPlateau, stepped per epoch)."""
    return not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)


def base_lr(opt: torch.optim.Optimizer) -> float:
    """The learning rate of the body (the first group, divided by its ``lr_scale``): what the logs report."""
    g = opt.param_groups[0]
    return g["lr"] / g.get("lr_scale", 1.0) if g.get("lr_scale", 1.0) else g["lr"]


# ----------------------------------------------------------------------------------------------
# training


@dataclass
class Learner:
    """What a training step runs and updates: the network as trained (DDP- or compile-wrapped, or the model
    itself), its optimizer, schedule and AMP scaler, the loss, and the numeric settings of the step.

    ``freezing``: what stays frozen (its BatchNorm layers go back to eval mode at each epoch's start);
    ``accum_steps``: batches per optimizer step; ``clip_grad_norm``: the gradients' largest total norm;
    ``ema``: the moving average of the weights, updated every ``ema_steps`` steps (reset during the
    ``warmup_epochs``); ``max_steps``: where the run stops (``--iterations``)."""

    net: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None = None
    aux_weight: float = 0.0
    channels_last: bool = False
    freezing: Freezing = field(default_factory=Freezing)
    accum_steps: int = 1
    clip_grad_norm: float | None = None
    ema: ExponentialMovingAverage | None = None
    ema_steps: int = 32
    warmup_epochs: int = 0
    max_steps: int | None = None


def train_one_epoch(
    learner: Learner, batches, d: Dist, *, epoch: int, epochs: int, step: int, seed: int, progress: bool
) -> tuple[dict[str, float], int]:
    """Train on every batch of epoch ``epoch``; the loss, accuracy, image count (all ranks) and seconds, and
    the step counter after it. Raises :class:`NonFiniteLoss` as soon as a progress refresh or the epoch's
    end sees a NaN or infinite loss. Soft targets (MixUp, CutMix) count as their largest class."""
    lrn = learner
    lrn.freezing.train_mode(lrn.net)
    lrn.opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    sums = torch.zeros(2, dtype=torch.float64, device=lrn.device)  # loss sum, correct
    seen, first = 0, step
    bad = torch.zeros((), dtype=torch.bool, device=lrn.device)
    usable = len(batches) // lrn.accum_steps * lrn.accum_steps  # a last incomplete accumulation is left out
    with _progress(progress and d.main, f"epoch {epoch + 1}/{epochs}", usable) as bar:
        for i, (x, y) in enumerate(batches.epoch(seed, epoch)):
            if i >= usable or (lrn.max_steps is not None and step >= lrn.max_steps):
                break
            if lrn.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            steps_now = (i + 1) % lrn.accum_steps == 0
            with _no_sync(lrn.net, skip=not steps_now):
                with torch.autocast(lrn.device.type, dtype=lrn.amp_dtype, enabled=lrn.amp_dtype is not None):
                    logits, loss = _forward_loss(lrn.net, x, y, lrn.criterion, lrn.aux_weight)
                lrn.scaler.scale(loss / lrn.accum_steps if lrn.accum_steps > 1 else loss).backward()
            if steps_now:
                _optimizer_step(lrn)
                if lrn.ema is not None:
                    lrn.ema.step(
                        unwrap(lrn.net), step - first, every=lrn.ema_steps, epoch=epoch, warmup_epochs=lrn.warmup_epochs
                    )
                step += 1
            # Accumulate on the device; the host reads these only at refreshes (no sync per step).
            hard = y if y.dim() == 1 else y.argmax(1)
            bad |= ~torch.isfinite(loss.detach())
            sums += torch.stack([loss.detach().double() * len(y), (logits.detach().argmax(1) == hard).sum().double()])
            seen += len(y)
            if bar.due(i):
                if bad.item():
                    raise NonFiniteLoss(epoch, step, base_lr(lrn.opt))
                s = sums.tolist()
                bar.update(i + 1, loss=s[0] / seen, acc=s[1] / seen, ips=seen * d.world / (time.perf_counter() - t0))
    sums = torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64, device=lrn.device)])
    all_reduce_sum(sums, d)
    if all_reduce_sum(bad.to(torch.float32), d).item() > 0:
        raise NonFiniteLoss(epoch, step, base_lr(lrn.opt))
    seconds = time.perf_counter() - t0
    loss_sum, correct, images = sums.tolist()
    return dict(loss=loss_sum / max(images, 1), acc=correct / max(images, 1), images=images, seconds=seconds), step


def _optimizer_step(lrn: Learner) -> None:
    """Clip (on unscaled gradients), step, clear the gradients, advance a per-step schedule."""
    if lrn.clip_grad_norm is not None:
        lrn.scaler.unscale_(lrn.opt)
        nn.utils.clip_grad_norm_([p for g in lrn.opt.param_groups for p in g["params"]], lrn.clip_grad_norm)
    lrn.scaler.step(lrn.opt)
    lrn.scaler.update()
    lrn.opt.zero_grad(set_to_none=True)
    if steps_each_epoch(lrn.sched):
        lrn.sched.step()


def _no_sync(net: nn.Module, *, skip: bool):
    """DDP's ``no_sync()`` for the batches of an accumulation that do not step (no all-reduce for them)."""
    no_sync = getattr(net, "no_sync", None)
    return no_sync() if skip and no_sync is not None else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# evaluation (also used by `cnnzoo eval`)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    num_classes: int,
    d: Dist,
    *,
    amp_dtype=None,
    channels_last=False,
    epoch: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
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
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                (top[:, 0] == y).sum().double(),
                (top == y[:, None]).any(dim=1).sum().double(),
            ]
        )
        confusion += torch.bincount(y * num_classes + top[:, 0], minlength=num_classes**2).view(
            num_classes, num_classes
        )
    all_reduce_sum(sums, d)
    all_reduce_sum(confusion, d)
    model.train(was_training)
    loss, top1, top5 = sums.tolist()
    count = int(confusion.sum())
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1)).tolist()
    n = max(count, 1)
    return dict(
        loss=loss / n,
        top1=top1 / n,
        top5=top5 / n,
        count=count,
        per_class=per_class,
        confusion=confusion.cpu().tolist(),
    )


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

        if (
            self.enabled and Console(stderr=True).is_terminal
        ):  # a live bar only on a terminal; logs get one line per epoch
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
