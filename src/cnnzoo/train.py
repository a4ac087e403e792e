"""Training: one function, :func:`train`, from a :class:`TrainConfig` to a run folder.

Short and direct in the spirit of nanoGPT and airbench: build data, model, optimizer and schedule,
then loop. What a run folder holds:

    config.json         the resolved configuration
    summary.txt         the model's summary table
    metrics.jsonl       one line per epoch (train/test loss and accuracy, lr, img/s)
    tb/                 TensorBoard event files
    checkpoints/        numbered weight (.safetensors) + state (.state.pt) pairs
    last.json best.json pointers to the last and the best checkpoint (see checkpoint.py)
    curves.png confusion_matrix.png   written at the end

Resuming (``resume=RUN_DIR``) restores model, optimizer, scheduler, AMP scaler, epoch, step and RNG
state. The data order and augmentation of epoch ``e`` come from generators seeded with
``(seed, e)``, so a resumed run replays exactly the batches the uninterrupted run would have seen;
on CPU with ``deterministic=True`` it ends with bitwise equal weights.

Run under ``torchrun --nproc_per_node N -m cnnzoo train ...`` it trains with DistributedDataParallel
(gloo on CPU, nccl on GPU); only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from . import data as datalib
from .data.device_decode import DeviceDecoder, check_decode_option
from .checkpoint import RunCheckpoints, atomic_write_text, load_weights, unwrap
from .errors import CnnzooError, InputShapeError
from .fast import training_defaults
from .registry import create_model, get_model_info


class TrainingError(CnnzooError, RuntimeError):
    """Training cannot start or cannot go on (bad settings, diverged loss)."""


# Sensible defaults per model (anything given on the command line wins). "aug_pad"/"aug_flip" are the
# batched augmentations of in-memory data: random shifts of up to aug_pad pixels, horizontal flips.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # The seed's LeNet-5 on the embedded MNIST subset: SGD + one-cycle, +/-2 px shifts, no flips (digits).
    # NCHW: at 28x28 with 6 and 16 channels channels-last gains under 10% an epoch on the CPU, and it changes the
    # seed-0 run's arithmetic enough to end at 98.2% instead of 98.7% (benchmarks/RESULTS.md).
    "lenet": dict(data="mnist5k", epochs=30, batch_size=64, lr=0.1, weight_decay=5e-4, schedule="onecycle", aug_pad=2, aug_flip=False, channels_last=False),
    # He et al. 2015 section 4.2 trains the CIFAR ResNets with SGD 0.1, batch 128, wd 1e-4, 4 px shifts and flips.
    "cifar": dict(data="cifar10:data/cifar-10-batches-py", epochs=200, batch_size=128, lr=0.1, weight_decay=1e-4, schedule="cosine", aug_pad=4, aug_flip=True),
    # ImageNet-style recipes (torchvision's references): SGD 0.1 for batch 256, wd 1e-4, 90 epochs.
    "imagenet": dict(data="folder:data/imagenet", epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4, schedule="cosine", warmup=5, label_smoothing=0.1, aug_pad=4, aug_flip=True),
    # VGG and AlexNet have no BatchNorm and diverge at 0.1: the papers used 0.01.
    "vgg": dict(lr=0.01, weight_decay=5e-4),
}


# Weight of the auxiliary classifiers' losses, where a model has them and returns them in training:
# 0.3 in GoogLeNet's paper (section 5); 0.4 in torchvision's Inception v3 recipe.
AUX_LOSS_WEIGHT = {"googlenet": 0.3, "inception": 0.4}


def _forward_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module, aux_weight: float):
    """Logits and loss; models with auxiliary heads return (logits, aux...) in training mode."""
    out = net(x)
    if isinstance(out, tuple):
        logits, aux = out[0], [a for a in out[1:] if a is not None]
        return logits, criterion(logits, y) + aux_weight * sum(criterion(a, y) for a in aux)
    return out, criterion(out, y)


def defaults_for(model: str) -> dict[str, Any]:
    info = get_model_info(model)
    if info.family == "lenet":
        return dict(FAMILY_DEFAULTS["lenet"])
    if info.input_size[1] <= 32:
        return dict(FAMILY_DEFAULTS["cifar"])
    d = dict(FAMILY_DEFAULTS["imagenet"])
    if info.family in ("vgg", "alexnet") and not model.endswith("_bn"):
        d.update(FAMILY_DEFAULTS["vgg"])
    return d


@dataclass
class TrainConfig:
    model: str
    data: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    opt: str = "sgd"
    momentum: float = 0.9
    schedule: str | None = None
    warmup: int | None = None  # epochs of linear warm-up
    label_smoothing: float | None = None
    weight_decay: float | None = None
    aug_pad: int | None = None
    aug_flip: bool | None = None
    amp: str | None = None  # "bf16", "fp16" or "none"; None: bf16 on CUDA, none on CPU
    channels_last: bool | None = None  # None: on (off for LeNet; see FAMILY_DEFAULTS and fast.training_defaults)
    compile: bool | None = None  # None: on a GPU yes (1.45x for resnet50 on an H200), on the CPU no
    device: str | None = None
    seed: int = 0
    deterministic: bool = False
    out: str | None = None
    resume: str | None = None
    weights: str | None = None  # start from these weights (any format cnnzoo.weights reads)
    sha256: str | None = None  # check the weights file first
    reset_head: bool = False  # weights of another class count: keep a fresh classifier
    image_size: int | None = None
    workers: int | None = None  # None: 4, or on a GPU up to 16 (one per core)
    decode: str = "auto"  # image folders: "workers" (CPU), "device" (nvJPEG on a GPU); "auto": workers, measured faster
    strict: bool = False  # stop on a corrupt image instead of skipping it
    sync_bn: bool = False
    progress: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)

    def resolved(self) -> TrainConfig:
        """Fill every None with the model's default."""
        d = defaults_for(self.model)
        d.setdefault("warmup", 0)
        d.setdefault("label_smoothing", 0.0)
        updates = {k: v for k, v in d.items() if getattr(self, k, "missing") is None}
        cfg = dataclasses.replace(self, **updates)
        if cfg.out is None:
            cfg.out = str(Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        return cfg


# ----------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class Dist:
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
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ----------------------------------------------------------------------------------------------
# data


def _epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 100_003 + epoch)
    return g


class ArrayBatches:
    """Batches of an in-memory split: shuffled, sharded across ranks, augmented on the device."""

    def __init__(self, split: datalib.ArrayData, batch_size: int, device: torch.device, mean, std, d: Dist, *, train: bool, pad: int = 0, flip: bool = False) -> None:
        self.images = split.images.to(device)  # uint8, whole split: MNIST/CIFAR fit anywhere
        self.labels = split.labels.to(device)
        self.batch_size, self.device, self.mean, self.std, self.d = batch_size, device, mean, std, d
        self.train, self.pad, self.flip = train, pad, flip
        n = len(self.labels)
        # Training: every rank takes the same number of full batches (DDP needs equal step counts).
        self.per_rank = n // d.world if train else len(range(d.rank, n, d.world))
        self.steps = self.per_rank // batch_size if train else math.ceil(self.per_rank / batch_size)

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
    keeps up with a GPU where CPU decoding would need dozens of cores. ``"auto"``: device on a GPU with
    nvJPEG, workers otherwise.
    """

    def __init__(self, split, batch_size: int, device: torch.device, mean, std, d: Dist, *, train: bool, workers: int, decode: str = "auto") -> None:
        self.split, self.batch_size, self.device, self.mean, self.std, self.d = split, batch_size, device, mean, std, d
        self.train, self.workers = train, workers
        self.decode = check_decode_option(decode, device)
        self.decoder = DeviceDecoder(split, device) if self.decode == "device" else None
        n = len(split)
        self.per_rank = n // d.world if train else len(range(d.rank, n, d.world))
        self.steps = self.per_rank // batch_size if train else math.ceil(self.per_rank / batch_size)
        self.skipped = 0

    def __len__(self) -> int:
        return self.steps

    def epoch(self, seed: int, epoch: int):
        n = len(self.split)
        if self.train:
            order = torch.randperm(n, generator=_epoch_generator(seed, epoch))[self.d.rank :: self.d.world][: self.per_rank]
            order = order[: self.steps * self.batch_size]
        else:
            order = torch.arange(self.d.rank, n, self.d.world)
        # Seeds the workers' random crops, and on the device path the crops drawn in this process.
        torch.manual_seed(seed * 100_003 + epoch + 7919 * self.d.rank)
        on_device = self.decoder is not None
        loader = torch.utils.data.DataLoader(
            datalib.EncodedImages(self.split) if on_device else self.split,
            batch_size=self.batch_size,
            sampler=order.tolist(),
            num_workers=self.workers,
            collate_fn=datalib.collate_encoded if on_device else datalib.collate_skip_none,
            pin_memory=self.device.type == "cuda" and not on_device,  # nvJPEG reads the bytes from host memory itself
            persistent_workers=False,
        )
        for batch in loader:
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


def make_batches(split, cfg: TrainConfig, device, mean, std, d: Dist, *, train: bool):
    if isinstance(split, datalib.ArrayData):
        return ArrayBatches(split, cfg.batch_size, device, mean, std, d, train=train, pad=cfg.aug_pad if train else 0, flip=bool(cfg.aug_flip) if train else False)
    return LoaderBatches(split, cfg.batch_size, device, mean, std, d, train=train, workers=cfg.workers, decode=cfg.decode)


def channel_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """The model's per-channel mean/std, for another channel count (averaged, then repeated)."""
    return tuple(values) if len(values) == channels else (sum(values) / len(values),) * channels


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
            opt, max_lr=cfg.lr, total_steps=total, pct_start=pct, cycle_momentum=cfg.opt == "sgd", base_momentum=0.85, max_momentum=cfg.momentum if cfg.opt == "sgd" else 0.95
        )
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
    return dict(loss=loss / max(count, 1), top1=top1 / max(count, 1), top5=top5 / max(count, 1), count=count, per_class=per_class, confusion=confusion.cpu().tolist())


# ----------------------------------------------------------------------------------------------
# the run


def pick_device(name: str | None, d: Dist) -> torch.device:
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and d.world > 1:
        name = f"cuda:{d.local_rank}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but this machine has no CUDA GPU; use --device cpu")
    return device


def _check_image_size(cfg: TrainConfig, data_size: int) -> None:
    info = get_model_info(cfg.model)
    if data_size < info.min_size:
        raise TrainingError(
            f"{cfg.model} needs images of at least {info.min_size}x{info.min_size} (native {info.input_size[1]}x{info.input_size[2]}); "
            f"the data {cfg.data!r} has {data_size}x{data_size}. Pass --image-size {max(info.min_size, data_size)} or more "
            f"(up to {info.input_size[1]}) to resize, or pick a model that takes small images (e.g. resnet20 or lenet5)."
        )


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` and return the final metrics (test top-1 etc.)."""
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: Dist) -> dict[str, Any]:
    resume_state = None
    if cfg.resume:
        run = RunCheckpoints(cfg.resume)
        cfg_path = Path(cfg.resume) / "config.json"
        if not cfg_path.exists():
            raise TrainingError(f"{cfg.resume}: not a cnnzoo run folder (no config.json)")
        saved = json.loads(cfg_path.read_text())
        # Where and how fast to run may change on resume; what is trained may not.
        keep = {k: getattr(cfg, k) for k in ("device", "workers", "decode", "progress")}
        if cfg.epochs is not None and cfg.epochs != saved["epochs"]:
            raise TrainingError(
                f"{cfg.resume} was started for {saved['epochs']} epochs and resumes with the learning-rate schedule of that "
                f"length; to train further, start a new run from its weights: cnnzoo train {saved['model']} --weights {cfg.resume} --epochs {cfg.epochs}"
            )
        cfg = TrainConfig(**{**saved, **keep, "resume": cfg.resume, "out": cfg.resume})
        if run.pointer("last") is not None:
            weights_path, resume_state = run.load_last()
        # else: killed before its first checkpoint; start it again from scratch with its own config
    cfg = cfg.resolved()
    if resume_state is None and not cfg.resume and (Path(cfg.out) / "config.json").exists():
        raise TrainingError(f"{cfg.out} already holds a run; continue it with --resume {cfg.out}, or pass another --out (nothing was changed)")
    device = pick_device(cfg.device, d)
    # The fast paths measured in benchmarks/RESULTS.md are the defaults: channels-last (CPU and GPU; not
    # LeNet, see FAMILY_DEFAULTS), and on a GPU bf16 autocast, a fused optimizer and torch.compile.
    fast = training_defaults(device)
    cfg = dataclasses.replace(
        cfg,
        amp=cfg.amp or fast["amp"] or "none",
        channels_last=fast["channels_last"] if cfg.channels_last is None else cfg.channels_last,
        compile=fast["compile"] if cfg.compile is None else cfg.compile,
        workers=cfg.workers if cfg.workers is not None else min(16, os.cpu_count() or 1) if device.type == "cuda" else 4,
    )

    torch.manual_seed(cfg.seed + d.rank)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    info = get_model_info(cfg.model)
    in_chans = cfg.model_options.get("in_chans", info.input_size[0])
    image_size = cfg.image_size or (None if _is_array_spec(cfg.data) else info.input_size[1])
    splits = datalib.load_data(cfg.data, channels=in_chans, image_size=image_size, strict=cfg.strict)
    _check_image_size(cfg, splits.image_size)
    classes = list(splits.classes)
    options = {k: v for k, v in cfg.model_options.items() if k != "in_chans"}
    model = create_model(cfg.model, num_classes=len(classes), in_chans=in_chans, **options)
    model_args = dict(name=cfg.model, num_classes=len(classes), in_chans=in_chans, **options)
    try:  # the model's own check, in training mode (Inception v3's aux head needs more than its minimum)
        model.check_input(torch.empty(1, in_chans, splits.image_size, splits.image_size, device="meta"))
    except InputShapeError as e:
        raise TrainingError(f"{e} (data {cfg.data!r}; --image-size resizes it)") from None
    if cfg.weights and not cfg.resume:  # any format cnnzoo reads: its own, torchvision, timm, Keras
        from .weights import load_pretrained

        report = load_pretrained(model, cfg.weights, sha256=cfg.sha256, reset_head=cfg.reset_head)
        if d.main:
            _log(str(report))
    if resume_state is not None:
        load_weights(model, weights_path)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and d.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    mean, std = channel_stats(info.mean, in_chans), channel_stats(info.std, in_chans)
    train_batches = make_batches(splits.train, cfg, device, mean, std, d, train=True)
    test_batches = make_batches(splits.test, cfg, device, mean, std, d, train=False)
    if len(train_batches) == 0:
        raise TrainingError(f"the training split of {cfg.data!r} has {train_batches.per_rank} images per process, fewer than one batch of {cfg.batch_size}; lower --batch-size")

    opt = make_optimizer(model, cfg, device)
    sched = make_scheduler(opt, cfg, len(train_batches))
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    aux_weight = AUX_LOSS_WEIGHT.get(info.family, 0.0)

    start_epoch, step, history, best = 0, 0, [], -1.0
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        torch.set_rng_state(resume_state["rng"][d.rank] if d.rank < len(resume_state["rng"]) else resume_state["rng"][0])
        start_epoch, step, history, best = resume_state["epoch"], resume_state["step"], resume_state["history"], resume_state["best"]

    run_dir = Path(cfg.out)
    checkpoints = RunCheckpoints(run_dir)
    writer = None
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_state is None:
            atomic_write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
            _write_summary(run_dir, model, cfg, splits.image_size)
        writer = _tensorboard(run_dir, purge_step=start_epoch)
        _log(f"{cfg.model}: {sum(p.numel() for p in model.parameters()):,} parameters, {len(classes)} classes, "
             f"data {splits.name} ({_count(splits.train)} train / {_count(splits.test)} test, {in_chans}x{splits.image_size}x{splits.image_size}), "
             f"{d.world} process{'es' if d.world > 1 else ''} on {device}, run folder {run_dir}"
             + (f", resuming after epoch {start_epoch}" if resume_state is not None else ""))

    result: dict[str, Any] = history[-1] if history else {}
    last_test = None
    for epoch in range(start_epoch, cfg.epochs):
        net.train()
        t0 = time.perf_counter()
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
        seen = 0
        bad = torch.zeros((), dtype=torch.bool, device=device)
        with _progress(cfg.progress and d.main, f"epoch {epoch + 1}/{cfg.epochs}", len(train_batches)) as bar:
            for i, (x, y) in enumerate(train_batches.epoch(cfg.seed, epoch)):
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    logits, loss = _forward_loss(net, x, y, criterion, aux_weight)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                # Accumulate on the device; the host reads these only at refreshes (no sync per step).
                bad |= ~torch.isfinite(loss.detach())
                sums += torch.stack([loss.detach().double() * len(y), (logits.detach().argmax(1) == y).sum().double()])
                seen += len(y)
                if bar.due(i):
                    if bad.item():
                        _diverged(cfg, epoch, step, opt, checkpoints)
                    s = sums.tolist()
                    bar.update(i + 1, loss=s[0] / seen, acc=s[1] / seen, ips=seen * d.world / (time.perf_counter() - t0))
        sums = torch.cat([sums, torch.tensor([float(seen)], dtype=torch.float64, device=device)])
        all_reduce_sum(sums, d)
        flag = all_reduce_sum(bad.to(torch.float32), d)
        if flag.item() > 0:
            _diverged(cfg, epoch, step, opt, checkpoints)
        train_time = time.perf_counter() - t0
        last_test = test = evaluate(net, test_batches, len(classes), d, amp_dtype=amp_dtype, channels_last=cfg.channels_last, epoch=epoch, seed=cfg.seed)
        s = sums.tolist()
        result = dict(
            epoch=epoch + 1, step=step, lr=opt.param_groups[0]["lr"],
            train_loss=s[0] / s[2], train_acc=s[1] / s[2],
            test_loss=test["loss"], test_acc=test["top1"], test_top5=test["top5"], test_count=test["count"],
            img_per_s=s[2] / train_time, epoch_time=train_time,
        )  # fmt: skip
        if isinstance(train_batches, LoaderBatches) and train_batches.skipped:
            result["skipped_images"] = train_batches.skipped
        history.append(result)
        is_best = result["test_acc"] > best
        best = max(best, result["test_acc"])
        rng = _gather_rng(d)
        if d.main:
            state = dict(
                optimizer=opt.state_dict(), scheduler=sched.state_dict(), scaler=scaler.state_dict(), rng=rng,
                epoch=epoch + 1, step=step, history=history, best=best, classes=classes,
            )  # fmt: skip
            meta = dict(epoch=epoch + 1, step=step, test_acc=result["test_acc"], classes=classes, image_size=splits.image_size,
                        mean=list(mean), std=list(std), data=cfg.data)  # fmt: skip
            try:
                checkpoints.save(f"epoch-{epoch + 1:04d}", model, model_args, state, best=is_best, info=meta)
            except OSError as e:  # disk full, quota, permissions: the pointers still name the previous pair
                last = checkpoints.pointer("last")
                kept = f"the previous checkpoint (epoch {last['epoch']}) is intact" if last else "no earlier checkpoint exists"
                raise TrainingError(f"could not write the checkpoint of epoch {epoch + 1} to {checkpoints.folder}: {e.strerror or e}; {kept}. Free space and resume with --resume {run_dir}") from e
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            _log_epoch(result, cfg.epochs)
            if writer is not None:
                for k in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr", "img_per_s"):
                    writer.add_scalar(k, result[k], epoch + 1)
                writer.flush()
        if d.world > 1:
            dist.barrier()

    if last_test is None:  # nothing left to train (a finished run resumed): evaluate once for the plots
        last_test = evaluate(net, test_batches, len(classes), d, amp_dtype=amp_dtype, channels_last=cfg.channels_last)
    if d.main:
        from .plots import plot_confusion, plot_curves

        if writer is not None:
            writer.close()
        plot_curves(history, run_dir / "curves.png", title=f"{cfg.model} on {splits.name}")
        plot_confusion(last_test["confusion"], classes, run_dir / "confusion_matrix.png", title=f"{cfg.model} on {splits.name}: test split, last epoch")
        _log(f"done: test accuracy {result.get('test_acc', last_test['top1']):.2%} (best {max(best, last_test['top1']):.2%}); run folder {run_dir}")
    return dict(result, run_dir=str(run_dir), best=best)


def _is_array_spec(spec: str | None) -> bool:
    return spec is not None and not spec.startswith("folder:")


def _count(split) -> int:
    return len(split.labels) if isinstance(split, datalib.ArrayData) else len(split)


def _gather_rng(d: Dist) -> list[torch.Tensor]:
    """Every rank's torch RNG state (dropout masks differ per rank), gathered on all ranks."""
    state = torch.get_rng_state()
    if d.world == 1:
        return [state]
    out = [None] * d.world
    dist.all_gather_object(out, state)
    return out


def _diverged(cfg: TrainConfig, epoch: int, step: int, opt, checkpoints: RunCheckpoints) -> None:
    last = checkpoints.pointer("last")
    where = f"the last good checkpoint (epoch {last['epoch']}) is intact in {checkpoints.run_dir}" if last else "no checkpoint was written yet"
    raise TrainingError(
        f"the loss became NaN or infinite in epoch {epoch + 1} (step {step}, lr {opt.param_groups[0]['lr']:.4g}); training stopped and "
        f"{where}. Lower --lr (now {cfg.lr}), add --warmup, or use --amp bf16 instead of fp16."
    )


def _write_summary(run_dir: Path, model: nn.Module, cfg: TrainConfig, image_size: int) -> None:
    try:
        from .summary import summary
    except ImportError:  # the summary module is optional at this layer
        text = repr(model)
    else:
        text = str(summary(model, input_size=(model.in_chans, image_size, image_size)))
    atomic_write_text(run_dir / "summary.txt", text + "\n")


def _tensorboard(run_dir: Path, purge_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _log("TensorBoard is not installed: no event files (pip install tensorboard)")
        return None
    return SummaryWriter(str(run_dir / "tb"), purge_step=purge_step + 1 if purge_step else None)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr if os.environ.get("CNNZOO_LOG_STDERR") else sys.stdout, flush=True)


def _log_epoch(r: dict[str, Any], epochs: int) -> None:
    _log(f"epoch {r['epoch']:>3}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}  "
         f"test loss {r['test_loss']:.4f} acc {r['test_acc']:.2%} top-5 {r['test_top5']:.2%}  "
         f"{r['img_per_s']:,.0f} img/s  {r['epoch_time']:.1f} s")


class _Bar:
    """A rich progress bar for one epoch, refreshed a few times a second at most (each refresh syncs)."""

    def __init__(self, enabled: bool, title: str, total: int) -> None:
        self.enabled, self.title, self.total = enabled, title, total
        self.every = max(1, total // 20)
        self.progress = None

    def __enter__(self):
        from rich.console import Console

        if self.enabled and Console(stderr=True).is_terminal:  # a live bar only on a terminal; logs get one line per epoch
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
