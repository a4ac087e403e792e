"""What a training run is asked to do: :class:`TrainConfig`, every option declared once.

Each field carries its :class:`Option` in ``dataclasses.field(metadata=...)``: the help text, the flag,
the choices and the allowed range. From that one declaration come the ``cnnzoo train`` flags and their
``--help`` (``cnnzoo.cli.options`` generates them), :meth:`TrainConfig.validate` (the Python API and the
command line check the same ranges), and ``config.json`` (the dataclass as it is). A new option is a new
field here and nothing else.

``None`` means "the default for this model" (:data:`FAMILY_DEFAULTS`, filled by
:meth:`TrainConfig.resolved`) or "the default for this device" (filled when the run starts).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from ..errors import CnnzooError
from ..options import DEFAULT_MAX_PIXELS
from ..registry import get_model_info
from .recipe import METADATA_KEYS, PRESET_NAMES, read_recipe

__all__ = [
    "AUTO_AUGMENT_POLICIES", "EPOCH_SCHEDULES", "FAMILY_DEFAULTS", "GLOBAL_DEFAULTS", "OPTIMIZERS", "STEP_SCHEDULES",
    "Declared", "Option", "TrainConfig", "TrainOptionError", "TrainingError", "declared_options", "defaults_for",
]  # fmt: skip

OPTIMIZERS = ("sgd", "sgd_nesterov", "rmsprop", "adamw")  # torchvision's names: plain "sgd" has no Nesterov
STEP_SCHEDULES = ("cosine", "onecycle", "step")  # cnnzoo's: the rate changes every step
EPOCH_SCHEDULES = ("steplr", "cosineannealinglr", "exponentiallr")  # torchvision's: the rate changes once an epoch
AUTO_AUGMENT_POLICIES = ("ta_wide", "ra", "augmix", "imagenet")


class TrainingError(CnnzooError, RuntimeError):
    """Training cannot start or cannot go on (bad settings, diverged loss)."""


class TrainOptionError(TrainingError, ValueError):
    """A training option holds a value it does not allow; raised before anything is built or written."""

    def __init__(self, option: str, value: Any, allowed: str) -> None:
        self.option, self.value, self.allowed = option, value, allowed
        super().__init__(f"{option}: {value!r} is not allowed (must be {allowed})")


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
}  # fmt: skip


# What an option left unset by the command line, the recipe and the model's defaults becomes. Where
# torchvision's references have the option, this is their default (its lr_warmup_method "constant" excepted:
# cnnzoo's warm-up was always linear), except the optimizer: cnnzoo's default keeps Nesterov momentum.
GLOBAL_DEFAULTS: dict[str, Any] = dict(
    opt="sgd_nesterov", momentum=0.9, warmup=0, label_smoothing=0.0, lr_warmup_method="linear", lr_step_size=30,
    lr_gamma=0.1, lr_min=0.0, lr_patience=10, accum_steps=1, freeze_backbone=False, lr_head_scale=1.0, mixup_alpha=0.0,
    cutmix_alpha=0.0, auto_augment="none", ra_magnitude=9, augmix_severity=3, random_erase=0.0, interpolation="bilinear",
    ra_sampler=False, ra_reps=3, model_ema=False, model_ema_steps=32, model_ema_decay=0.99998,
)  # fmt: skip


def defaults_for(model: str) -> dict[str, Any]:
    """The :data:`FAMILY_DEFAULTS` entry for ``model``: LeNet's, the CIFAR recipe for inputs of 32x32 or
    less, the ImageNet recipe otherwise (VGG and AlexNet without BatchNorm at their lower rate)."""
    info = get_model_info(model)
    if info.family == "lenet":
        return dict(FAMILY_DEFAULTS["lenet"])
    if info.input_size[1] <= 32:
        return dict(FAMILY_DEFAULTS["cifar"])
    d = dict(FAMILY_DEFAULTS["imagenet"])
    if info.family in ("vgg", "alexnet") and not model.endswith("_bn"):
        d.update(FAMILY_DEFAULTS["vgg"])
    return d


@dataclass(frozen=True)
class Option:
    """How one :class:`TrainConfig` field is given and what it allows.

    ``flags``: the command-line spelling (default ``--field-name``; a bool that defaults to True is given
    as its negation, e.g. ``--no-progress``; more than one: aliases, the first is the one messages name).
    ``min`` and ``max`` are inclusive bounds, ``below`` an exclusive upper one. ``cli=False``: Python API
    only (the field still has its help, range and config.json entry).
    """

    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    below: float | None = None
    cli: bool = True
    positional: bool = False
    bare: Any = None  # the value the flag takes when given alone (torchvision's bare --amp), else it needs one

    def allowed_range(self) -> str | None:
        """The range in words, as error messages and ``--help`` give it: ``>= 0 and < 1``."""
        parts = [f">= {self.min:g}"] if self.min is not None else []
        parts += [f"<= {self.max:g}"] if self.max is not None else []
        parts += [f"< {self.below:g}"] if self.below is not None else []
        return " and ".join(parts) or None


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **declared: Any) -> Any:
    """A dataclass field with its :class:`Option`: ``batch_size: int | None = option(None, help=..., min=1)``."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"option": Option(**declared)})


@dataclass
class TrainConfig:
    model: str = option(help="a zoo model name (see cnnzoo list); not needed with --resume", positional=True)
    data: str | None = option(
        None, help="mnist5k | mnist:DIR | cifar10:DIR | cifar100:DIR | folder:DIR | synthetic[:N]"
    )
    epochs: int | None = option(None, help="passes over the training split", min=1)
    batch_size: int | None = option(None, help="per process", min=1)
    lr: float | None = option(None, help="peak learning rate", min=0)
    opt: str | None = option(
        None,
        help="sgd: SGD with momentum (torchvision's sgd); sgd_nesterov: with Nesterov momentum (the default); rmsprop: torchvision's (eps 0.0316, alpha 0.9); adamw",
        choices=OPTIMIZERS,
    )
    momentum: float | None = option(
        None, help="SGD's and RMSprop's momentum, and one-cycle's highest (default 0.9)", min=0, below=1
    )
    schedule: str | None = option(
        None, flags=("--schedule", "--lr-scheduler"), choices=(*STEP_SCHEDULES, *EPOCH_SCHEDULES, "plateau"),
        help="learning rate: cnnzoo's, per step: cosine decay, one-cycle, or /10 at 1/2 and 3/4 of the steps (step); "
        "torchvision's, per epoch: steplr (x --lr-gamma every --lr-step-size epochs), cosineannealinglr (down to --lr-min), "
        "exponentiallr (x --lr-gamma each epoch); plateau: x --lr-gamma when the held-out accuracy stops improving for --lr-patience epochs",
    )  # fmt: skip
    warmup: int | None = option(None, flags=("--warmup", "--lr-warmup-epochs"), help="epochs of warm-up", min=0)
    lr_warmup_method: str | None = option(
        None,
        help="warm-up from --lr-warmup-decay x lr: rising to lr (linear, the default) or held there (constant)",
        choices=("linear", "constant"),
    )
    lr_warmup_decay: float | None = option(
        None,
        help="the warm-up's starting factor (default: torchvision's 0.01 for its per-epoch schedules, 0 for cnnzoo's per-step ones)",
        min=0,
        max=1,
    )
    lr_step_size: int | None = option(None, help="steplr: epochs between decays (default 30)", min=1)
    lr_gamma: float | None = option(
        None, help="steplr, exponentiallr, plateau: the factor of each decay (default 0.1)", min=0, max=1
    )
    lr_min: float | None = option(None, help="cosineannealinglr: the last learning rate (default 0)", min=0)
    lr_patience: int | None = option(
        None, help="plateau: epochs without a better held-out accuracy before a decay (default 10, torch's)", min=0
    )
    iterations: int | None = option(
        None,
        help="train for this many optimizer steps in all (He et al.'s 64k) instead of --epochs; the epochs follow from the data",
        min=1,
    )
    label_smoothing: float | None = option(None, help="label smoothing of the cross-entropy loss", min=0, below=1)
    weight_decay: float | None = option(
        None,
        flags=("--weight-decay", "--wd"),  # --wd: torchvision's train.py spells it so too
        help="on weights; biases and normalisation layers: see --norm-weight-decay",
        min=0,
    )
    norm_weight_decay: float | None = option(
        None,
        help="weight decay of normalisation layers' parameters (default: 0, and biases 0 too; given this or --bias-weight-decay, torchvision's rules: the other unset, norm layers decay like the weights, biases like their layer)",
        min=0,
    )
    bias_weight_decay: float | None = option(
        None,
        help="weight decay of every parameter named bias, BatchNorm's too (default: see --norm-weight-decay)",
        min=0,
    )
    clip_grad_norm: float | None = option(
        None, help="clip the gradients' total norm to this (default: no clipping)", min=0
    )
    accum_steps: int | None = option(
        None, help="gradient accumulation: one optimizer step per this many batches (default 1)", min=1
    )
    # fine-tuning
    freeze_backbone: bool | None = option(
        None,
        help="train the classifier only (get_classifier(); auxiliary heads too): the rest gets no gradient and no weight decay, its BatchNorm keeps its statistics",
    )
    freeze: str | None = option(
        None,
        help="freeze the modules under these names, e.g. conv1,bn1,layer1 (as --freeze-backbone)",
        metavar="PREFIX[,PREFIX]",
    )
    lr_head_scale: float | None = option(
        None, help="the classifier's learning rate is this times --lr (default 1)", min=0
    )
    # augmentation (torchvision's reference names)
    mixup_alpha: float | None = option(
        None, help="MixUp of batch pairs with Beta(alpha, alpha) weights, soft targets (default 0: off)", min=0
    )
    cutmix_alpha: float | None = option(
        None,
        help="CutMix of batch pairs with Beta(alpha, alpha) areas (default 0: off); with --mixup-alpha each batch takes one of the two",
        min=0,
    )
    auto_augment: str | None = option(
        None,
        help="an augmentation policy per image: ta_wide (TrivialAugmentWide), ra (RandAugment), augmix, imagenet (AutoAugment's); none (default)",
        choices=("none", *AUTO_AUGMENT_POLICIES),
    )
    ra_magnitude: int | None = option(None, help="RandAugment's magnitude, of 31 bins (default 9)", min=0, below=31)
    augmix_severity: int | None = option(None, help="AugMix's severity (default 3)", min=1, max=10)
    random_erase: float | None = option(
        None, help="RandomErasing's probability per image, after normalisation (default 0)", min=0, max=1
    )
    scale_jitter: str | None = option(
        None,
        help="image folders: resize the shorter side to a random size in [MIN, MAX], then a random crop (VGG's scale jittering) instead of RandomResizedCrop",
        metavar="MIN,MAX",
    )
    train_crop_size: int | None = option(None, help="image folders: the training crop (default --image-size)", min=1)
    val_resize_size: int | None = option(
        None, help="image folders: evaluation resizes the shorter side to this (default --val-crop-size / 0.875)", min=1
    )
    val_crop_size: int | None = option(
        None, help="image folders: evaluation's centre crop (default --image-size)", min=1
    )
    interpolation: str | None = option(
        None,
        help="image folders' resizing and the policies' geometric operations (default bilinear)",
        choices=("nearest", "bilinear", "bicubic"),
    )
    ra_sampler: bool | None = option(
        None,
        help="repeated augmentation: each image --ra-reps times an epoch, its copies spread over the processes (torchvision's RASampler)",
    )
    ra_reps: int | None = option(None, help="the repeated-augmentation sampler's repetitions (default 3)", min=1)
    model_ema: bool | None = option(
        None,
        help="keep an exponential moving average of the weights: evaluated beside them each epoch, what eval, predict and export use",
    )
    model_ema_steps: int | None = option(
        None, help="update the EMA every this many optimizer steps (default 32)", min=1
    )
    model_ema_decay: float | None = option(
        None,
        help="EMA decay, adjusted for batch size, processes, steps and epochs as torchvision's references do (default 0.99998)",
        min=0,
        max=1,
    )
    aug_pad: int | None = option(None, help="in-memory data: random shifts of up to this many pixels", min=0, cli=False)
    aug_flip: bool | None = option(None, help="in-memory data: random horizontal flips", cli=False)
    amp: str | None = option(
        None,
        help="mixed-precision autocast (default: bf16 on CUDA, none on CPU); --amp alone is torchvision's: fp16 with a gradient scaler",
        choices=("bf16", "fp16", "none"),
        bare="fp16",
    )
    # None: on (off for LeNet; see FAMILY_DEFAULTS and fast.training_defaults)
    channels_last: bool | None = option(None, help="NHWC memory format (default: on, except for LeNet-5)")
    # None: on a GPU yes (1.45x for resnet50 on an H200), on the CPU no
    compile: bool | None = option(None, help="torch.compile the model (default: on a GPU yes, on the CPU no)")
    device: str | None = option(None, help="cpu, cuda or cuda:N (default: cuda when available)")
    seed: int = option(0, help="seeds the initial weights, the data order and the augmentation")
    deterministic: bool = option(False, help="deterministic kernels: a resumed run ends bitwise equal (CPU)")
    out: str | None = option(None, help="run folder (default runs/MODEL-DATE-TIME)")
    resume: str | None = option(None, help="continue a run from its last checkpoint", metavar="RUN_DIR")
    weights: str | None = option(
        None,
        help="start from these weights: a cnnzoo checkpoint or run folder, a torchvision/timm state dict, a Keras .h5/.weights.h5/.keras file, or an http(s) URL with --sha256",
    )
    sha256: str | None = option(None, help="check the --weights file's SHA-256 (or a prefix of 8+ hex digits) first")
    reset_head: bool = option(False, help="--weights with another class count: load all but the classifier")
    # True: the model's default published weights; a tag ("IMAGENET1K_V1"): those (MODEL.TAG on the command line)
    pretrained: bool | str = option(
        False,
        help="fine-tune the model's published weights (cnnzoo weights list MODEL; name others as MODEL.TAG): the classifier is replaced for the data's classes, and the weights' normalisation and evaluation crop are used",
    )
    image_size: int | None = option(None, help="resize / crop images to this size", min=1)
    workers: int | None = option(
        None, help="decoding processes for folder data (default: 4; on a GPU one per core, up to 16)", min=0
    )
    # "auto" is workers: measured faster on an H200 with 16 cores (see data.device_decode.check_decode_option)
    decode: str = option(
        "auto",
        help="folder data: decode JPEGs in the worker processes (CPU; auto) or in batches on the device (nvJPEG on a GPU, for few cores per GPU)",
        choices=("auto", "workers", "device"),
    )
    strict: bool = option(False, help="stop at a corrupt image instead of skipping it")
    max_image_pixels: int = option(
        DEFAULT_MAX_PIXELS,  # PIL's own Image.MAX_IMAGE_PIXELS
        help="folder data: an image whose header promises more pixels (width x height) is skipped unread, as a corrupt one is, a guard against decompression bombs; 0: no limit",
        min=0,
    )
    sync_bn: bool = option(False, help="SyncBatchNorm across processes")
    progress: bool = option(True, help="no progress bar (one line per epoch only)", flags=("--no-progress",))
    model_options: dict[str, Any] = option(
        default_factory=dict,
        help="model option, e.g. --option aux_logits=true",
        flags=("--option",),
        metavar="KEY=VALUE",
    )
    # recipes: presets of the options above, as data (train/recipes/*.json), or a file of one's own
    recipe: str | None = option(
        None,
        help="start from a recipe: a preset ("
        + ", ".join(PRESET_NAMES)
        + ") or a .json/.yaml file; options given here win",
        metavar="NAME|FILE",
    )
    recipe_content: dict[str, Any] = option(
        default_factory=dict,
        help="the recipe as it was read (saved in config.json, so a run resumes without the file)",
        cli=False,
    )
    print_config: bool = option(False, help="print the resolved configuration as JSON and exit without training")

    def resolved(self) -> TrainConfig:
        """Fill every None: from the recipe, else the model's defaults (:data:`FAMILY_DEFAULTS`), else
        :data:`GLOBAL_DEFAULTS`; then what follows from the others (the weight decay of norm layers and
        biases, the warm-up's start). What is given here always wins over the recipe."""
        content = self.recipe_content or (_read_checked_recipe(self.recipe) if self.recipe else {})
        recipe = content.get("options", {})
        layers = (recipe, defaults_for(self.model), GLOBAL_DEFAULTS)
        updates = {}
        for d in declared_options():
            if getattr(self, d.name) is None:
                updates[d.name] = next((layer[d.name] for layer in layers if d.name in layer), None)
        if self.epochs is None and "epochs" not in recipe and (updates.get("iterations") or self.iterations):
            updates["epochs"] = None  # --iterations: the run counts the epochs from the data
        cfg = dataclasses.replace(self, **updates, recipe_content=content)
        cfg.norm_weight_decay, cfg.bias_weight_decay = _norm_and_bias_decay(cfg)
        if cfg.lr_warmup_decay is None:  # torchvision's LinearLR/ConstantLR start; cnnzoo's warm-up rose from 0
            cfg.lr_warmup_decay = 0.01 if cfg.schedule in EPOCH_SCHEDULES else 0.0
        if cfg.out is None:
            cfg.out = str(Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        return cfg

    def validate(self, label: typing.Callable[[str], str] | None = None) -> TrainConfig:
        """Check every option against its declared type, choices and range; raise :class:`TrainOptionError`
        for the first one outside them. ``label`` names an option in the message (the command line passes
        its flag, ``--batch-size``; the default is the field name). Returns the config itself."""
        for d in declared_options():
            allowed = d.problem(getattr(self, d.name))
            if allowed is not None:
                raise TrainOptionError(label(d.name) if label else d.name, getattr(self, d.name), allowed)
        return self


def _norm_and_bias_decay(cfg: TrainConfig) -> tuple[float | None, float | None]:
    """cnnzoo's default is no decay on biases and normalisation layers (0 and 0). Given either, torchvision's
    ``set_weight_decay``: normalisation layers without ``--norm-weight-decay`` decay like the weights, and
    without ``--bias-weight-decay`` (None) biases have no rule of their own: they decay as their layer does."""
    norm, bias = cfg.norm_weight_decay, cfg.bias_weight_decay
    if norm is None and bias is None:
        return 0.0, 0.0
    return (cfg.weight_decay if norm is None else norm), bias


def _read_checked_recipe(name: str) -> dict[str, Any]:
    """The recipe ``name`` (:func:`~cnnzoo.train.recipe.read_recipe`) with every option checked: a
    TrainConfig field that a recipe may set (one whose default is unset), of the declared kind and range."""
    from difflib import get_close_matches

    content = read_recipe(name)
    declared = {d.name: d for d in declared_options()}
    for key, value in content["options"].items():
        d = declared.get(key)
        if d is None or key in ("recipe", "recipe_content") or key in METADATA_KEYS:
            close = get_close_matches(key, [n for n, x in declared.items() if x.optional], n=3)
            hint = (
                f"; did you mean {' or '.join(close)}?" if close else " (see cnnzoo train --print-config for the names)"
            )
            raise TrainingError(f"recipe {name}: unknown option {key!r}{hint}")
        if not d.optional:
            raise TrainingError(
                f"recipe {name}: {key} cannot be set by a recipe (only options whose default is unset); give it on the command line"
            )
        allowed = d.kind_problem(value) or d.problem(value)
        if allowed is not None:
            raise TrainOptionError(f"recipe {name}: {key}", value, allowed)
    return content


@dataclass(frozen=True)
class Declared:
    """One :class:`TrainConfig` field as its declaration reads: ``kind`` is int, float, str, bool or dict;
    ``optional``: None is allowed (the model's or the device's default)."""

    name: str
    kind: type
    optional: bool
    default: Any
    option: Option

    def kind_problem(self, value: Any) -> str | None:
        """What ``value`` must be instead when it is not of the declared kind (None is always allowed here)."""
        if value is None:
            return None
        if self.kind in (int, float):
            return None if _is_number(value, self.kind) else _NUMBER_WORDS[self.kind]
        return None if isinstance(value, self.kind) else _KIND_WORDS.get(self.kind, self.kind.__name__)

    def problem(self, value: Any) -> str | None:
        """What ``value`` must be instead, or None when it is allowed. Only options that declare choices or
        a range are checked (and for those, that the value is of the declared kind, which the comparison
        needs); the rest take what they always took (a ``Path`` for ``out``, a ``torch.device`` ...)."""
        o = self.option
        if o.choices is None and o.min is None and o.max is None and o.below is None:
            return None
        if value is None and self.optional:
            return None
        if o.choices is not None:
            return None if value in o.choices else "one of " + ", ".join(o.choices)
        if not _is_number(value, self.kind):  # ranges are declared for int and float fields only
            return _NUMBER_WORDS[self.kind]
        too_big = (o.max is not None and value > o.max) or (o.below is not None and value >= o.below)
        if (o.min is not None and value < o.min) or too_big:
            return o.allowed_range()
        return None


_NUMBER_WORDS = {int: "an integer", float: "a number"}
_KIND_WORDS = {str: "a string", bool: "true or false", dict: "a mapping"}


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # True is an int to Python, never a count or a rate here
        return False
    if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison: never a rate or a size
        return False
    return isinstance(value, (int, float)) if kind is float else isinstance(value, kind)


@functools.cache
def declared_options() -> tuple[Declared, ...]:
    """Every :class:`TrainConfig` field with its :class:`Option`, in declaration order."""
    hints = typing.get_type_hints(TrainConfig)
    out = []
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        kind = next((a for a in args if a is not type(None)), hint)
        kind = typing.get_origin(kind) or kind  # dict[str, Any] -> dict
        default = (
            f.default_factory() if f.default_factory is not MISSING else None if f.default is MISSING else f.default
        )
        out.append(Declared(f.name, kind, type(None) in args, default, f.metadata["option"]))
    return tuple(out)
