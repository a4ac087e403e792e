"""The run: :func:`train`, from a :class:`TrainConfig` to a run folder.

Short and direct in the spirit of nanoGPT and airbench: settle the configuration, build data, model,
optimizer and schedule, then loop. What a run folder holds:

    config.json         the resolved configuration
    summary.txt         the model's summary table
    metrics.jsonl       one line per epoch (train/test loss and accuracy, lr, img/s)
    tb/                 TensorBoard event files
    checkpoints/        numbered weight (.safetensors) + state (.state.pt) pairs
    last.json best.json pointers to the last and the best checkpoint (see checkpoint.py)
    curves.png confusion_matrix.png   written at the end

Resuming (``resume=RUN_DIR``) restores model, optimizer, scheduler, AMP scaler, epoch, step and RNG
state. The data order and augmentation of epoch ``e`` come from generators seeded with
``(seed, e)`` (:mod:`cnnzoo.data.batches`), so a resumed run replays exactly the batches the
uninterrupted run would have seen; on CPU with ``deterministic=True`` it ends with bitwise equal weights.
Only rank 0 of a distributed run writes logs and checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .. import data as datalib
from ..checkpoint import RunCheckpoints, load_weights
from ..data.batches import LoaderBatches, channel_stats, make_batches
from ..data.specs import absolute_spec, spec_folder
from ..errors import InputShapeError
from ..factory import create_model
from ..fileio import atomic_write_text, safe_output
from ..pretrained import resolve_pretrained
from ..registry import ModelInfo, get_model_info
from .augmentation import batch_augment, folder_sizes, set_train_transform
from .config import TrainConfig, TrainingError, declared_options
from .distributed import Dist, gather_rng_states, pick_device, setup_distributed
from .ema import EmaCheckpoints, ExponentialMovingAverage, adjusted_decay, raw_weights_of
from .engine import (
    AUX_LOSS_WEIGHT,
    Learner,
    NonFiniteLoss,
    base_lr,
    evaluate,
    make_optimizer,
    make_scheduler,
    steps_each_epoch,
    train_one_epoch,
    training_defaults,
)
from .freeze import Freezing, classifier_name, freeze_modules

__all__ = ["train"]


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.model`` and return the final metrics (test top-1 etc.); with ``print_config``, print the
    resolved configuration as JSON and return it, training nothing."""
    cfg.validate()  # before anything is built or written
    if cfg.print_config:
        return _print_config(cfg)
    d = setup_distributed(cfg.device)
    try:
        return _train(cfg, d)
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Data:
    """The splits and how the model sees them: channels, class names, normalisation."""

    splits: datalib.DataSplits
    info: ModelInfo
    in_chans: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channel_order: str = "RGB"  # BGR: published Keras caffe-style weights being fine-tuned
    pretrained: Any = None  # the PretrainedEntry of --pretrained
    eval_crop: Any = None  # the test split's EvalCrop when the weights' own (None: the folder default)


@dataclass
class _Progress:
    """Where the run stands: what a checkpoint's state restores."""

    start_epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -1.0


@dataclass
class _Run:
    """What the epochs work with, as the phases of :func:`_train` built it."""

    cfg: TrainConfig
    d: Dist
    data: _Data
    model: nn.Module  # the plain model: what checkpoints save
    model_args: dict[str, Any]  # what rebuilds it (saved with every checkpoint)
    train_batches: Any
    test_batches: Any
    learner: Learner
    progress: _Progress
    checkpoints: RunCheckpoints
    writer: Any = None  # TensorBoard, on rank 0 where it is installed

    def evaluate(self, net: nn.Module | None = None, **seeding: int) -> dict[str, Any]:
        """The test split through ``net`` (default: the network as trained; the EMA's module for its figures)."""
        lrn = self.learner
        net = lrn.net if net is None else net
        return evaluate(
            net,
            self.test_batches,
            len(self.data.classes),
            self.d,
            amp_dtype=lrn.amp_dtype,
            channels_last=lrn.channels_last,
            **seeding,
        )


def _train(cfg: TrainConfig, d: Dist) -> dict[str, Any]:
    # Settle the configuration: a resumed run's own, the model's defaults, the device's fast paths.
    cfg, weights_path, resume_state = _settle_config(cfg)
    device = pick_device(cfg.device, d)
    cfg = _with_device_defaults(cfg, device)
    _seed_and_kernels(cfg, device, d)
    # Build the data, then the model (its initial weights come from the seed just set), then the batchers.
    data = _load_data(cfg)
    model, model_args = _build_model(cfg, data, device, d, weights_path)
    train_batches, test_batches = _make_batchers(cfg, data, device, d)
    cfg = _with_iterations(cfg, len(train_batches) // (cfg.accum_steps or 1))
    learner = _build_learner(model, cfg, data.info, device, d, len(train_batches))
    # Resume: optimizer, schedule, scaler, RNG and counters as the last checkpoint left them.
    progress = _restore(learner, resume_state, d)
    if learner.ema is not None and weights_path is not None:  # the checkpoint's weights file holds the EMA
        load_weights(learner.ema.module, weights_path)
    run = _Run(
        cfg, d, data, model, model_args, train_batches, test_batches, learner, progress, EmaCheckpoints(Path(cfg.out))
    )
    if d.main:
        run.writer = _open_run_folder(run, device, fresh=resume_state is None)
    # The epoch loop: train, evaluate, checkpoint, log.
    result, last_test = progress.history[-1] if progress.history else {}, None
    for epoch in range(progress.start_epoch, cfg.epochs):
        result, last_test = _one_epoch(run, epoch)
        if d.world > 1:
            dist.barrier()
    # Finish: the plots of the curves and of the confusion matrix, the closing line.
    if last_test is None:  # nothing left to train (a finished run resumed): evaluate once for the plots
        last_test = run.evaluate(learner.ema.module if learner.ema is not None else None)
    if d.main:
        _finish(run, result, last_test)
    return dict(result, run_dir=str(Path(cfg.out)), best=progress.best)


# ----------------------------------------------------------------------------------------------
# settling the configuration


def _settle_config(cfg: TrainConfig) -> tuple[TrainConfig, Path | None, dict[str, Any] | None]:
    """The configuration to run (a resumed run's own, defaults filled in), and with ``--resume`` the last
    checkpoint's weights file and state (None for a run killed before its first checkpoint)."""
    weights_path, resume_state = None, None
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
        # a config.json written before "sgd" meant torchvision's (plain momentum) has no "recipe": its sgd was Nesterov's
        if "recipe" not in saved and saved.get("opt") == "sgd":
            saved["opt"] = "sgd_nesterov"
        _refuse_conflicts(cfg, saved)
        cfg = _validated_run_config(TrainConfig(**{**saved, **keep, "resume": cfg.resume, "out": cfg.resume}))
        if run.pointer("last") is not None:
            weights_path, resume_state = run.load_last()
        # else: killed before its first checkpoint; start it again from scratch with its own config
    cfg = _with_absolute_paths(cfg.resolved())
    safe_output(cfg.out, kind="folder")  # a file, a place under a file, a folder not writable: refused before any work
    if resume_state is None and not cfg.resume and (Path(cfg.out) / "config.json").exists():
        raise TrainingError(
            f"{cfg.out} already holds a run; continue it with --resume {cfg.out}, or pass another --out (nothing was changed)"
        )
    return cfg, weights_path, resume_state


# What a resumed run may be given anew: where and how fast it runs. Any other option given with --resume must
# be the run's own value (or left out): a resumed run continues as it started.
_MAY_CHANGE_ON_RESUME = (
    "device",
    "workers",
    "decode",
    "progress",
    "resume",
    "epochs",
    "print_config",
)  # epochs: its own message


def _refuse_conflicts(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    """One line naming the first option given with ``--resume`` that differs from the run's value."""
    for d in declared_options():
        if d.name in _MAY_CHANGE_ON_RESUME or d.name not in saved:
            continue
        given, own = getattr(cfg, d.name), saved[d.name]
        if given is None or given == d.default or _same_setting(d.name, given, own, cfg.resume):
            continue
        flag = d.name.upper() if d.option.positional else (d.option.flags or ("--" + d.name.replace("_", "-"),))[0]
        raise TrainingError(
            f"{flag}: {given!r} conflicts with the run being resumed ({cfg.resume} has {own!r}); a run resumes with "
            f"its own settings: leave {flag} out, or start a new run from its weights: cnnzoo train {saved['model']} --weights {cfg.resume}"
        )


def _same_setting(name: str, given: Any, own: Any, run: str) -> bool:
    """Whether a value given with --resume is the run's, allowing for relative and absolute spellings of a path."""
    if name == "data" and isinstance(given, str) and isinstance(own, str):
        return absolute_spec(given) == absolute_spec(own)
    if name in ("weights", "out") and isinstance(given, str) and isinstance(own, str):
        own = run if name == "out" else own
        return os.path.abspath(os.path.expanduser(given)) == os.path.abspath(os.path.expanduser(own))
    return given == own


def _validated_run_config(cfg: TrainConfig) -> TrainConfig:
    """A resumed run's config.json checked as a new one is (it may predate a check, or have been edited)."""
    try:
        return cfg.validate()
    except TrainingError as e:
        raise TrainingError(f"{cfg.resume}/config.json: {e}; this run cannot resume: start a new one") from None


def _with_absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """The paths a run folder stores made absolute (the data's folder, the run folder, --weights, --resume),
    so that config.json and the checkpoints name the same files from any working directory."""

    def absolute(path: str | None) -> str | None:
        return path if path is None or "://" in path else os.path.abspath(os.path.expanduser(path))

    data = absolute_spec(cfg.data) if cfg.data else cfg.data
    return dataclasses.replace(
        cfg, data=data, out=absolute(cfg.out), weights=absolute(cfg.weights), resume=absolute(cfg.resume)
    )


def _with_device_defaults(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """The fast paths measured in benchmarks/RESULTS.md are the defaults: channels-last (CPU and GPU; not
    LeNet, see FAMILY_DEFAULTS), and on a GPU bf16 autocast, a fused optimizer, torch.compile and a
    decoding worker per core (up to 16)."""
    fast = training_defaults(device)
    return dataclasses.replace(
        cfg,
        amp=cfg.amp or fast["amp"] or "none",
        channels_last=fast["channels_last"] if cfg.channels_last is None else cfg.channels_last,
        compile=fast["compile"] if cfg.compile is None else cfg.compile,
        workers=cfg.workers
        if cfg.workers is not None
        else min(16, os.cpu_count() or 1)
        if device.type == "cuda"
        else 4,
    )


def _seed_and_kernels(cfg: TrainConfig, device: torch.device, d: Dist) -> None:
    torch.manual_seed(cfg.seed + d.rank)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


# ----------------------------------------------------------------------------------------------
# data, model, optimisation


def _load_data(cfg: TrainConfig) -> _Data:
    """The splits, normalised as the model's registry entry says, or with --pretrained as the weights were trained
    (their mean, std and channel order; for image folders their input size and evaluation crop)."""
    info = get_model_info(cfg.model)
    entry = resolve_pretrained(cfg.model, cfg.pretrained) if cfg.pretrained else None
    pre = entry.preprocessing if entry is not None else None
    in_chans = cfg.model_options.get("in_chans", info.input_size[0])
    native = pre.input_size if pre is not None else info.input_size[1]
    image_size = cfg.image_size or (None if _is_array_spec(cfg.data) else native)
    eval_crop = datalib.EvalCrop.of(pre) if pre is not None and image_size == native else None
    # --train-crop-size, --val-resize-size, --val-crop-size, --interpolation: the folder's training and evaluation crops
    image_size, eval_crop = folder_sizes(cfg, image_size, eval_crop, folder=not _is_array_spec(cfg.data), log=_log)
    max_pixels = cfg.max_image_pixels or None  # 0: no limit
    splits = datalib.load_data(
        cfg.data,
        channels=in_chans,
        image_size=image_size,
        strict=cfg.strict,
        eval_crop=eval_crop,
        max_pixels=max_pixels,
    )
    set_train_transform(cfg, splits)  # --auto-augment, --scale-jitter: torchvision's per-image transforms
    _check_image_size(cfg, splits.image_size)
    _check_classes(cfg, splits.classes)
    norm = pre if pre is not None else info
    mean, std = channel_stats(norm.mean, in_chans), channel_stats(norm.std, in_chans)
    order = norm.channel_order if pre is not None else "RGB"  # from scratch: whatever order the data comes in
    return _Data(splits, info, in_chans, list(splits.classes), mean, std, order, entry, eval_crop)


def _build_model(
    cfg: TrainConfig, data: _Data, device: torch.device, d: Dist, resume_weights: Path | None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model with its starting weights (a checkpoint's when resuming, else --weights or fresh), on the
    device, and the arguments that rebuild it (saved with every checkpoint)."""
    in_chans, image_size = data.in_chans, data.splits.image_size
    options = {k: v for k, v in cfg.model_options.items() if k != "in_chans"}
    if data.pretrained is not None and cfg.weights:
        raise TrainingError("give --pretrained (published weights) or --weights (a file), not both")
    # --pretrained: the published weights, the classifier replaced for the data's classes (the report says so)
    pretrained = data.pretrained if data.pretrained is not None and not cfg.resume else False
    model = create_model(cfg.model, num_classes=len(data.classes), in_chans=in_chans, pretrained=pretrained, **options)
    if model.load_report is not None and d.main:
        _log(str(model.load_report))
    model_args = dict(name=cfg.model, num_classes=len(data.classes), in_chans=in_chans, **options)
    try:  # the model's own check, in training mode (Inception v3's aux head needs more than its minimum)
        model.check_training_input(torch.empty(1, in_chans, image_size, image_size, device="meta"))
    except InputShapeError as e:
        raise TrainingError(f"{e} (data {cfg.data!r}; --image-size resizes it)") from None
    if cfg.weights and not cfg.resume:  # any format cnnzoo reads: its own, torchvision, timm, Keras
        from ..weights import load_pretrained

        report = load_pretrained(model, cfg.weights, sha256=cfg.sha256, reset_head=cfg.reset_head)
        if d.main:
            _log(str(report))
    if resume_weights is not None:  # a run with an EMA keeps its raw weights beside the averaged ones
        load_weights(model, raw_weights_of(resume_weights))
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and d.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, model_args


def _make_batchers(cfg: TrainConfig, data: _Data, device: torch.device, d: Dist):
    in_memory = isinstance(data.splits.train, datalib.ArrayData)
    augment = batch_augment(cfg, len(data.classes), pixels_here=in_memory or cfg.decode == "device")
    ra_reps = cfg.ra_reps if cfg.ra_sampler else 0
    if ra_reps and _count(data.splits.train) < 256:
        raise TrainingError(
            f"--ra-sampler keeps floor(N / 256) * 256 training images an epoch (torchvision's RASampler); {cfg.data!r} has {_count(data.splits.train)}"
        )

    def batches(split, train: bool):
        return make_batches(
            split, cfg.batch_size, device, data.mean, data.std, d, train=train, pad=cfg.aug_pad, flip=cfg.aug_flip, workers=cfg.workers,
            decode=cfg.decode, channel_order=data.channel_order, augment=augment if train else None, ra_reps=ra_reps if train else 0,
        )  # fmt: skip

    train_batches, test_batches = batches(data.splits.train, True), batches(data.splits.test, False)
    if len(train_batches) == 0:
        raise TrainingError(
            f"the training split of {cfg.data!r} has {train_batches.per_rank} images per process, fewer than one batch of {cfg.batch_size}; lower --batch-size"
        )
    return train_batches, test_batches


def _build_learner(
    model: nn.Module, cfg: TrainConfig, info: ModelInfo, device: torch.device, d: Dist, batches_per_epoch: int
) -> Learner:
    """Freezing (before DDP sees the parameters), optimizer, schedule, scaler, the wrapped network and the EMA."""
    freezing = (
        freeze_modules(model, backbone=bool(cfg.freeze_backbone), prefixes=cfg.freeze)
        if cfg.freeze_backbone or cfg.freeze
        else Freezing()
    )
    if freezing.parameters and d.main:
        _log(f"frozen: {len(freezing.parameters)} parameter tensors ({sum(model.get_parameter(n).numel() for n in freezing.parameters):,} "
             f"values), {len(freezing.norms)} normalisation layers kept in eval mode")  # fmt: skip
    head = model.get_submodule(classifier_name(model)) if cfg.lr_head_scale not in (None, 1.0) else None
    opt = make_optimizer(model, cfg, device, head=head)
    steps_per_epoch = batches_per_epoch // cfg.accum_steps
    sched = make_scheduler(opt, cfg, steps_per_epoch, total_steps=cfg.iterations)
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = None
    if cfg.model_ema:  # copied before DDP and compile wrap the model; every rank keeps one (they train alike)
        decay = adjusted_decay(
            cfg.model_ema_decay,
            batch_size=cfg.batch_size * cfg.accum_steps,
            world_size=d.world,
            ema_steps=cfg.model_ema_steps,
            epochs=cfg.epochs,
        )
        ema = ExponentialMovingAverage(model, decay, device)
    net: nn.Module = model
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return Learner(
        net, opt, sched, scaler, criterion, device, amp_dtype, AUX_LOSS_WEIGHT.get(info.family, 0.0), cfg.channels_last,
        freezing=freezing, accum_steps=cfg.accum_steps, clip_grad_norm=cfg.clip_grad_norm, ema=ema, ema_steps=cfg.model_ema_steps,
        warmup_epochs=cfg.warmup, max_steps=cfg.iterations,
    )  # fmt: skip


def _with_iterations(cfg: TrainConfig, steps_per_epoch: int) -> TrainConfig:
    """With --iterations, the epochs that hold them (the last one stops at the count); --epochs must agree."""
    if cfg.iterations is None:
        return cfg
    epochs = -(-cfg.iterations // max(steps_per_epoch, 1))
    if cfg.epochs is not None and cfg.epochs != epochs:
        raise TrainingError(
            f"--iterations {cfg.iterations} at {steps_per_epoch} steps an epoch takes {epochs} epochs, not --epochs {cfg.epochs}: give one of the two"
        )
    return dataclasses.replace(cfg, epochs=epochs)


def _restore(learner: Learner, state: dict[str, Any] | None, d: Dist) -> _Progress:
    if state is None:
        return _Progress()
    learner.opt.load_state_dict(state["optimizer"])
    learner.sched.load_state_dict(state["scheduler"])
    learner.scaler.load_state_dict(state["scaler"])
    if learner.ema is not None:  # its weights are the checkpoint's weights file (loaded by _train)
        learner.ema.n_averaged.fill_(int(state["ema_n_averaged"]))
    torch.set_rng_state(state["rng"][d.rank] if d.rank < len(state["rng"]) else state["rng"][0])
    return _Progress(state["epoch"], state["step"], state["history"], state["best"])


# ----------------------------------------------------------------------------------------------
# the run folder and the epochs


def _open_run_folder(run: _Run, device: torch.device, *, fresh: bool):
    """Create the run folder (config.json and summary.txt for a fresh run), open TensorBoard, say what runs."""
    cfg, data, s = run.cfg, run.data, run.data.splits
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if fresh:
        atomic_write_text(run_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
        _write_summary(run_dir, run.model, cfg, s.image_size)
    writer = _tensorboard(run_dir, purge_step=run.progress.start_epoch)
    _log(f"{cfg.model}: {sum(p.numel() for p in run.model.parameters()):,} parameters, {len(data.classes)} classes, "
         f"data {s.name} ({_count(s.train)} train / {_count(s.test)} test, {data.in_chans}x{s.image_size}x{s.image_size}), "
         f"{run.d.world} process{'es' if run.d.world > 1 else ''} on {device}, run folder {run_dir}"
         + ("" if fresh else f", resuming after epoch {run.progress.start_epoch}"))  # fmt: skip
    processes = cfg.recipe_content.get("processes")
    if processes and processes != run.d.world:  # --batch-size is per process: the recipe's --lr is for its total
        _log(f"note: recipe {cfg.recipe} is for {processes} processes of batch {cfg.batch_size} ({processes * cfg.batch_size} in all) at lr {cfg.lr}; "
             f"this run has {run.d.world} ({run.d.world * cfg.batch_size} in all): scale --lr with the total batch")  # fmt: skip
    return writer


def _one_epoch(run: _Run, epoch: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train one epoch, evaluate, and on rank 0 record it; the epoch's metrics and the test result."""
    cfg, progress = run.cfg, run.progress
    try:
        stats, progress.step = train_one_epoch(
            run.learner,
            run.train_batches,
            run.d,
            epoch=epoch,
            epochs=cfg.epochs,
            step=progress.step,
            seed=cfg.seed,
            progress=cfg.progress,
        )
    except NonFiniteLoss as e:
        raise _diverged(cfg, e, run.checkpoints) from None
    test = run.evaluate(epoch=epoch, seed=cfg.seed)
    result = dict(
        epoch=epoch + 1, step=progress.step, lr=base_lr(run.learner.opt),
        train_loss=stats["loss"], train_acc=stats["acc"],
        test_loss=test["loss"], test_acc=test["top1"], test_top5=test["top5"], test_count=test["count"],
        img_per_s=stats["images"] / stats["seconds"], epoch_time=stats["seconds"],
    )  # fmt: skip
    ema = run.learner.ema
    if ema is not None:  # the average beside the raw weights: what the checkpoint's weights file holds
        test = run.evaluate(ema.module, epoch=epoch, seed=cfg.seed)
        result.update(ema_test_loss=test["loss"], ema_test_acc=test["top1"], ema_test_top5=test["top5"])
    if isinstance(run.train_batches, LoaderBatches) and run.train_batches.skipped:
        result["skipped_images"] = run.train_batches.skipped
    progress.history.append(result)
    saved_acc = result["ema_test_acc" if ema is not None else "test_acc"]
    is_best = saved_acc > progress.best
    progress.best = max(progress.best, saved_acc)
    if not steps_each_epoch(run.learner.sched):  # plateau: on the held-out accuracy of the weights kept
        run.learner.sched.step(saved_acc)
    rng = gather_rng_states(run.d)  # a collective: every rank takes part
    if run.d.main:
        _record_epoch(run, epoch, result, is_best, rng)
    return result, test


def _record_epoch(run: _Run, epoch: int, result: dict[str, Any], is_best: bool, rng: list[torch.Tensor]) -> None:
    """Rank 0: the checkpoint pair, metrics.jsonl, the log line and TensorBoard for one epoch."""
    cfg, data, progress, lrn = run.cfg, run.data, run.progress, run.learner
    state = dict(
        optimizer=lrn.opt.state_dict(), scheduler=lrn.sched.state_dict(), scaler=lrn.scaler.state_dict(), rng=rng,
        epoch=epoch + 1, step=progress.step, history=progress.history, best=progress.best, classes=data.classes,
    )  # fmt: skip
    ema = lrn.ema
    if ema is not None:
        state["ema_n_averaged"] = int(ema.n_averaged)
    meta = dict(epoch=epoch + 1, step=progress.step, test_acc=result["ema_test_acc" if ema is not None else "test_acc"], classes=data.classes,
                image_size=data.splits.image_size, mean=list(data.mean), std=list(data.std), data=cfg.data, channel_order=data.channel_order)  # fmt: skip
    if ema is not None:
        meta["raw_test_acc"] = result["test_acc"]
    folder = spec_folder(cfg.data)
    if folder is not None:  # eval finds the data of a run folder moved together with it (data.specs.relocated_spec)
        meta["data_relative"] = os.path.relpath(folder, run.checkpoints.folder)
    if data.eval_crop is not None:  # predict and eval crop as this run evaluated (the published weights' crop)
        meta["eval_crop"] = dataclasses.asdict(data.eval_crop)
    if data.pretrained is not None:
        meta["pretrained"] = data.pretrained.name
    try:
        if ema is not None:  # the weights file holds the EMA (what eval, predict, export read), the raw ones beside it
            run.checkpoints.save(
                f"epoch-{epoch + 1:04d}",
                ema.module,
                run.model_args,
                state,
                best=is_best,
                info=meta,
                raw_model=run.model,
            )
        else:
            run.checkpoints.save(f"epoch-{epoch + 1:04d}", run.model, run.model_args, state, best=is_best, info=meta)
    except OSError as e:  # disk full, quota, permissions: the pointers still name the previous pair
        last = run.checkpoints.pointer("last")
        kept = f"the previous checkpoint (epoch {last['epoch']}) is intact" if last else "no earlier checkpoint exists"
        raise TrainingError(
            f"could not write the checkpoint of epoch {epoch + 1} to {run.checkpoints.folder}: {e.strerror or e}; {kept}. "
            f"Free space and resume with --resume {Path(cfg.out)}"
        ) from e
    atomic_write_text(Path(cfg.out) / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in progress.history))
    _log_epoch(result, cfg.epochs)
    if run.writer is not None:
        for k in (
            "train_loss",
            "train_acc",
            "test_loss",
            "test_acc",
            "test_top5",
            "lr",
            "img_per_s",
            "ema_test_loss",
            "ema_test_acc",
        ):
            if k in result:
                run.writer.add_scalar(k, result[k], epoch + 1)
        run.writer.flush()


def _finish(run: _Run, result: dict[str, Any], last_test: dict[str, Any]) -> None:
    from ..plots import plot_confusion, plot_curves

    cfg, run_dir, name = run.cfg, Path(run.cfg.out), run.data.splits.name
    if run.writer is not None:
        run.writer.close()
    plot_curves(run.progress.history, run_dir / "curves.png", title=f"{cfg.model} on {name}")
    plot_confusion(
        last_test["confusion"],
        run.data.classes,
        run_dir / "confusion_matrix.png",
        title=f"{cfg.model} on {name}: test split, last epoch",
    )
    best = max(run.progress.best, last_test["top1"])
    ema = f", EMA {result['ema_test_acc']:.2%}" if "ema_test_acc" in result else ""
    _log(
        f"done: test accuracy {result.get('test_acc', last_test['top1']):.2%}{ema} (best {best:.2%}); run folder {run_dir}"
    )


# ----------------------------------------------------------------------------------------------
# small helpers


def _is_array_spec(spec: str | None) -> bool:
    return spec is not None and not spec.startswith("folder:")


def _count(split) -> int:
    return len(split.labels) if isinstance(split, datalib.ArrayData) else len(split)


def _check_classes(cfg: TrainConfig, classes: list[str]) -> None:
    """Refuse data of one class: cross-entropy over one class is 0 whatever the weights, so nothing would be
    learnt, and every test image would count as right (a "100%" that means nothing)."""
    if len(classes) < 2:
        where = (
            f"; {cfg.data[len('folder:') :]}/train holds one folder per class" if cfg.data.startswith("folder:") else ""
        )
        raise TrainingError(
            f"the data {cfg.data!r} has {len(classes)} class{'' if len(classes) == 1 else 'es'} ({', '.join(classes)}): a classifier "
            f"needs at least 2 (with one, the loss is 0 for any weights and nothing is learnt){where}"
        )


def _check_image_size(cfg: TrainConfig, data_size: int) -> None:
    info = get_model_info(cfg.model)
    if data_size < info.min_size:
        raise TrainingError(
            f"{cfg.model} needs images of at least {info.min_size}x{info.min_size} (native {info.input_size[1]}x{info.input_size[2]}); "
            f"the data {cfg.data!r} has {data_size}x{data_size}. Pass --image-size {max(info.min_size, data_size)} or more "
            f"(up to {info.input_size[1]}) to resize, or pick a model that takes small images (e.g. resnet20 or lenet5)."
        )


def _diverged(cfg: TrainConfig, e: NonFiniteLoss, checkpoints: RunCheckpoints) -> TrainingError:
    last = checkpoints.pointer("last")
    where = (
        f"the last good checkpoint (epoch {last['epoch']}) is intact in {checkpoints.run_dir}"
        if last
        else "no checkpoint was written yet"
    )
    return TrainingError(
        f"{e}; training stopped and {where}. Lower --lr (now {cfg.lr}), add --warmup, or use --amp bf16 instead of fp16."
    )


def _write_summary(run_dir: Path, model: nn.Module, cfg: TrainConfig, image_size: int) -> None:
    try:
        from ..summary import summary
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
    ema = f"EMA acc {r['ema_test_acc']:.2%}  " if "ema_test_acc" in r else ""
    _log(f"epoch {r['epoch']:>3}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.2%}  "
         f"test loss {r['test_loss']:.4f} acc {r['test_acc']:.2%} top-5 {r['test_top5']:.2%}  {ema}"
         f"{r['img_per_s']:,.0f} img/s  {r['epoch_time']:.1f} s")  # fmt: skip


def _print_config(cfg: TrainConfig) -> dict[str, Any]:
    """--print-config: the configuration a run would start with (a resumed run: its own), as JSON on stdout.
    Left null: what the device settles when the run starts (amp, channels_last, compile, workers) and the
    run folder when --out is not given (runs/MODEL-DATE-TIME)."""
    if cfg.resume:
        resolved, _, _ = _settle_config(cfg)
    else:
        resolved = dataclasses.replace(cfg.resolved(), out=cfg.out)
    values = {k: v for k, v in dataclasses.asdict(resolved).items() if k not in ("recipe_content", "print_config")}
    print(json.dumps(values, indent=2), flush=True)
    return values
