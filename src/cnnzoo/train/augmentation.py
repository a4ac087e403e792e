"""What a :class:`TrainConfig` asks of the data: crop sizes, the folders' training transform, the batch augmentations.

The options are torchvision's reference flags; where they act:

* image folders: ``train_crop_size`` (the training crop), ``val_resize_size`` / ``val_crop_size`` /
  ``interpolation`` (the evaluation crop, :class:`~cnnzoo.data.EvalCrop`), ``scale_jitter`` and the
  ``auto_augment`` policy (torchvision's transforms, per image, in the decoding workers);
* in-memory data (MNIST, CIFAR, synthetic): the ``auto_augment`` policy batched on the device
  (:class:`~cnnzoo.data.augment.DevicePolicy`); the crop options do not apply (its images have their size);
* every training batch: ``random_erase`` and ``mixup_alpha`` / ``cutmix_alpha`` after normalisation.
"""

from __future__ import annotations

from typing import Any

from .. import data as datalib
from ..data.augment import BatchAugment, DevicePolicy, MixUpCutMix, folder_train_transform, parse_scale_jitter
from .config import TrainConfig, TrainingError

__all__ = ["FOLDER_ONLY", "batch_augment", "folder_sizes", "set_train_transform"]

# options of image folders' decoding; in-memory data keeps the size it was loaded at
FOLDER_ONLY = ("train_crop_size", "val_resize_size", "val_crop_size", "scale_jitter")


def folder_sizes(
    cfg: TrainConfig, image_size: int | None, eval_crop: Any, *, folder: bool, log
) -> tuple[int | None, Any]:
    """(the size to load the data at, the evaluation crop): for a folder ``train_crop_size`` and the
    ``val_*`` options (an :class:`EvalCrop` when they differ from the default one); for in-memory data
    the size and crop as they were, with a note if folder options were given."""
    if not folder:
        given = [name for name in FOLDER_ONLY if getattr(cfg, name) is not None]
        if given:
            log(f"note: {', '.join(given)} apply to image folders; the in-memory data {cfg.data!r} keeps its size")
        return image_size, eval_crop
    if cfg.scale_jitter:
        parse_scale_jitter(cfg.scale_jitter)  # a malformed range: one line, before anything is read
    crop = cfg.val_crop_size or (eval_crop.crop if eval_crop is not None else image_size)
    interpolation = cfg.interpolation or "bilinear"
    if cfg.val_crop_size or cfg.val_resize_size or interpolation != "bilinear" or cfg.train_crop_size:
        base = eval_crop if eval_crop is not None else datalib.EvalCrop(crop)
        resize = cfg.val_resize_size or (base.resize if cfg.val_crop_size is None else None)
        if resize is not None and resize < crop:
            raise TrainingError(
                f"--val-resize-size {resize} is smaller than the evaluation crop {crop} (--val-crop-size)"
            )
        eval_crop = datalib.EvalCrop(crop, resize, interpolation, base.mode, base.antialias)
    return cfg.train_crop_size or image_size, eval_crop


def set_train_transform(cfg: TrainConfig, splits: datalib.DataSplits) -> None:
    """An image folder's training transform as the options ask (the folder's own when they ask nothing new)."""
    train = splits.train
    if not isinstance(train, datalib.ImageFolderData):
        return
    policy = cfg.auto_augment or "none"
    geometry = bool(cfg.scale_jitter) or (cfg.interpolation or "bilinear") != "bilinear"
    if cfg.decode == "device":  # the batch decoder crops on the device; the policy runs there (batch_augment)
        if geometry:
            raise TrainingError("--scale-jitter and --interpolation act in the decoding workers: use --decode workers")
        return
    if policy == "none" and not geometry:
        return
    train.transform = folder_train_transform(
        train.image_size, interpolation=cfg.interpolation or "bilinear", policy=policy, ra_magnitude=cfg.ra_magnitude,
        augmix_severity=cfg.augmix_severity, scale_jitter=cfg.scale_jitter,
    )  # fmt: skip


def batch_augment(cfg: TrainConfig, num_classes: int, *, pixels_here: bool) -> BatchAugment | None:
    """The batch-level augmentations of the training batches, or None when the options ask for none.
    ``pixels_here``: the batcher holds the uint8 pixels (in-memory data, or folders decoded on the device),
    so the policy runs batched there instead of in the decoding workers."""
    policy = cfg.auto_augment if cfg.auto_augment not in (None, "none") and pixels_here else None
    mixing = (cfg.mixup_alpha or 0) > 0 or (cfg.cutmix_alpha or 0) > 0
    if policy is None and not cfg.random_erase and not mixing:
        return None
    return BatchAugment(
        policy=DevicePolicy(policy, interpolation=cfg.interpolation or "bilinear", ra_magnitude=cfg.ra_magnitude,
                            augmix_severity=cfg.augmix_severity) if policy else None,
        erase=cfg.random_erase or 0.0,
        mix=MixUpCutMix(num_classes, cfg.mixup_alpha or 0.0, cfg.cutmix_alpha or 0.0) if mixing else None,
    )  # fmt: skip
