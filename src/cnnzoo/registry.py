"""One registry of the zoo, read by both the Python API and the command line.

Each family file (``models/vgg.py``, ``models/resnet.py`` ...) registers thin builder functions with
:func:`register_model`; :func:`create_model` looks them up by name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What a user needs to know about a zoo model before building it."""

    name: str
    family: str
    paper: str
    url: str
    input_size: tuple[int, int, int]  # native (C, H, W)
    min_size: int  # smallest H (= W) the network accepts
    num_classes: int = 1000
    mean: tuple[float, ...] = IMAGENET_MEAN  # per channel, for pixels scaled to [0, 1]
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "RGB"
    torchvision: str | None = None  # name of the torchvision counterpart, if any
    keras: str | None = None  # name of the keras.applications counterpart, if any
    notes: str = ""
    builder: Callable[..., nn.Module] | None = field(default=None, repr=False, compare=False)
    # Maps a torchvision state-dict key to ours; None: the keys are the same (ResNet, GoogLeNet, Inception v3).
    torchvision_key: Callable[[str], str] | None = field(default=None, repr=False, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(**info: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register_model(family=..., paper=..., ...)`` over ``def name(num_classes, in_chans, **opts)``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name=name, builder=builder, **info)
        return builder

    return decorate


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing the package registers every family)


def list_models(family: str | None = None) -> list[str]:
    """Names of all zoo models (optionally of one family), in zoo order."""
    _ensure_loaded()
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a model; unknown names raise with the closest matches."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(_REGISTRY)}."
        ) from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    weights: str | None = None,
    sha256: str | None = None,
    reset_head: bool = False,
    **options: Any,
) -> nn.Module:
    """Build a zoo model by name.

    ``num_classes`` and ``in_chans`` default to the model's native ones; ``options`` go to the family's
    constructor (e.g. ``aux_logits=True`` for googlenet, ``stride_in_1x1=True`` for resnet50).
    ``weights`` loads a weights file after building (cnnzoo, torchvision, timm or Keras; see
    :func:`cnnzoo.weights.load_pretrained`, which ``sha256`` and ``reset_head`` go to).
    """
    info = get_model_info(name)
    num_classes = info.num_classes if num_classes is None else num_classes
    in_chans = info.input_size[0] if in_chans is None else in_chans
    for what, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: {what} must be a positive integer, got {value!r}")
    assert info.builder is not None
    try:
        model = info.builder(num_classes=num_classes, in_chans=in_chans, **options)
    except TypeError as e:  # an option the family does not know
        raise TypeError(f"{name}: {e}") from None
    model.model_name = name
    model.info = info
    if weights is not None:
        from .weights import load_pretrained

        load_pretrained(model, weights, sha256=sha256, reset_head=reset_head)
    return model
