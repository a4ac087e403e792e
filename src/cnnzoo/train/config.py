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
import time
import types
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

from ..errors import CnnzooError
from ..registry import get_model_info

__all__ = [
    "FAMILY_DEFAULTS", "Declared", "Option", "TrainConfig", "TrainOptionError", "TrainingError",
    "declared_options", "defaults_for",
]  # fmt: skip


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
    as its negation, e.g. ``--no-progress``). ``min`` is an inclusive lower bound, ``below`` an exclusive
    upper one. ``cli=False``: Python API only (the field still has its help, range and config.json entry).
    """

    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    min: float | None = None
    below: float | None = None
    cli: bool = True
    positional: bool = False

    def allowed_range(self) -> str | None:
        """The range in words, as error messages and ``--help`` give it: ``>= 0 and < 1``."""
        parts = [f">= {self.min:g}"] if self.min is not None else []
        parts += [f"< {self.below:g}"] if self.below is not None else []
        return " and ".join(parts) or None


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **declared: Any) -> Any:
    """A dataclass field with its :class:`Option`: ``batch_size: int | None = option(None, help=..., min=1)``."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"option": Option(**declared)})


@dataclass
class TrainConfig:
    model: str = option(help="a zoo model name (see cnnzoo list); not needed with --resume", positional=True)
    data: str | None = option(None, help="mnist5k | mnist:DIR | cifar10:DIR | cifar100:DIR | folder:DIR | synthetic[:N]")
    epochs: int | None = option(None, help="passes over the training split", min=1)
    batch_size: int | None = option(None, help="per process", min=1)
    lr: float | None = option(None, help="peak learning rate", min=0)
    opt: str = option("sgd", help="sgd is SGD with Nesterov momentum 0.9", choices=("sgd", "adamw"))
    momentum: float = option(0.9, help="SGD's (Nesterov) momentum, and one-cycle's highest", min=0, cli=False)
    schedule: str | None = option(None, help="learning rate per step: cosine decay, one-cycle, or /10 at 1/2 and 3/4", choices=("cosine", "onecycle", "step"))
    warmup: int | None = option(None, help="epochs of linear warm-up", min=0)
    label_smoothing: float | None = option(None, help="label smoothing of the cross-entropy loss", min=0, below=1)
    weight_decay: float | None = option(None, help="not applied to biases and BatchNorm parameters", min=0)
    aug_pad: int | None = option(None, help="in-memory data: random shifts of up to this many pixels", min=0, cli=False)
    aug_flip: bool | None = option(None, help="in-memory data: random horizontal flips", cli=False)
    amp: str | None = option(None, help="mixed-precision autocast (default: bf16 on CUDA, none on CPU)", choices=("bf16", "fp16", "none"))
    # None: on (off for LeNet; see FAMILY_DEFAULTS and fast.training_defaults)
    channels_last: bool | None = option(None, help="NHWC memory format (default: on, except for LeNet-5)")
    # None: on a GPU yes (1.45x for resnet50 on an H200), on the CPU no
    compile: bool | None = option(None, help="torch.compile the model (default: on a GPU yes, on the CPU no)")
    device: str | None = option(None, help="cpu, cuda or cuda:N (default: cuda when available)")
    seed: int = option(0, help="seeds the initial weights, the data order and the augmentation")
    deterministic: bool = option(False, help="deterministic kernels: a resumed run ends bitwise equal (CPU)")
    out: str | None = option(None, help="run folder (default runs/MODEL-DATE-TIME)")
    resume: str | None = option(None, help="continue a run from its last checkpoint", metavar="RUN_DIR")
    weights: str | None = option(None, help="start from these weights: a cnnzoo checkpoint or run folder, a torchvision/timm state dict, a Keras .h5/.weights.h5/.keras file")
    sha256: str | None = option(None, help="check the --weights file's SHA-256 (or a prefix of 8+ hex digits) first")
    reset_head: bool = option(False, help="--weights with another class count: load all but the classifier")
    image_size: int | None = option(None, help="resize / crop images to this size", min=1)
    workers: int | None = option(None, help="decoding processes for folder data (default: 4; on a GPU one per core, up to 16)", min=0)
    # "auto" is workers: measured faster on an H200 with 16 cores (see data.device_decode.check_decode_option)
    decode: str = option("auto", help="folder data: decode JPEGs in the worker processes (CPU; auto) or in batches on the device (nvJPEG on a GPU, for few cores per GPU)", choices=("auto", "workers", "device"))
    strict: bool = option(False, help="stop at a corrupt image instead of skipping it")
    sync_bn: bool = option(False, help="SyncBatchNorm across processes")
    progress: bool = option(True, help="no progress bar (one line per epoch only)", flags=("--no-progress",))
    model_options: dict[str, Any] = option(default_factory=dict, help="model option, e.g. --option aux_logits=true", flags=("--option",), metavar="KEY=VALUE")

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

    def validate(self, label: typing.Callable[[str], str] | None = None) -> TrainConfig:
        """Check every option against its declared type, choices and range; raise :class:`TrainOptionError`
        for the first one outside them. ``label`` names an option in the message (the command line passes
        its flag, ``--batch-size``; the default is the field name). Returns the config itself."""
        for d in declared_options():
            allowed = d.problem(getattr(self, d.name))
            if allowed is not None:
                raise TrainOptionError(label(d.name) if label else d.name, getattr(self, d.name), allowed)
        return self


@dataclass(frozen=True)
class Declared:
    """One :class:`TrainConfig` field as its declaration reads: ``kind`` is int, float, str, bool or dict;
    ``optional``: None is allowed (the model's or the device's default)."""

    name: str
    kind: type
    optional: bool
    default: Any
    option: Option

    def problem(self, value: Any) -> str | None:
        """What ``value`` must be instead, or None when it is allowed. Only options that declare choices or
        a range are checked (and for those, that the value is of the declared kind, which the comparison
        needs); the rest take what they always took (a ``Path`` for ``out``, a ``torch.device`` ...)."""
        o = self.option
        if o.choices is None and o.min is None and o.below is None:
            return None
        if value is None and self.optional:
            return None
        if o.choices is not None:
            return None if value in o.choices else "one of " + ", ".join(o.choices)
        if not _is_number(value, self.kind):  # ranges are declared for int and float fields only
            return _NUMBER_WORDS[self.kind]
        if (o.min is not None and value < o.min) or (o.below is not None and value >= o.below):
            return o.allowed_range()
        return None


_NUMBER_WORDS = {int: "an integer", float: "a number"}


def _is_number(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # True is an int to Python, never a count or a rate here
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
        default = f.default_factory() if f.default_factory is not MISSING else None if f.default is MISSING else f.default
        out.append(Declared(f.name, kind, type(None) in args, default, f.metadata["option"]))
    return tuple(out)
