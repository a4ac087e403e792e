"""One registry of the zoo, read by both the Python API and the command line.

Each family file (``models/vgg.py``, ``models/resnet.py`` ...) registers thin builder functions with
:func:`register_model`. The registry holds metadata only and imports no model file: the families
register themselves when ``cnnzoo.models`` is imported (``cnnzoo`` does so on import), and
:func:`cnnzoo.factory.create_model` builds them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import UnknownModelError

if TYPE_CHECKING:  # only annotations: the registry is read at start-up, before (and without) torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ``keras_names(model, layers, source)``: Keras layer name -> module path of ``model`` for every weighted
# Keras layer. ``layers`` are the file's layers (each with ``name``, ``kind`` and ``arrays``), for twins
# whose Keras names are numbered at creation and so must be placed by order (InceptionV3); ``source``
# names the file in errors. Declared by the model, used by the Keras reader (``weights/keras.py``).
KerasNames = Callable[["nn.Module", Sequence[Any], str], dict[str, str]]


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
    # Where Keras' layers go (see KerasNames); set exactly when ``keras`` names a counterpart.
    keras_names: KerasNames | None = field(default=None, repr=False, compare=False)
    # Keras Dense layers fed by Flatten of an (H, W, C) map: layer name -> (C, H, W), to reorder their rows.
    keras_flatten: Mapping[str, tuple[int, int, int]] | None = field(default=None, repr=False, compare=False)


_REGISTRY: dict[str, ModelInfo] = {}
# What fills the registry on the first lookup: ``cnnzoo/__init__.py`` sets it to import ``cnnzoo.models``, so a
# lookup works whatever was imported first, while the registry itself imports no model file.
_loader: Callable[[], object] | None = None


def set_loader(loader: Callable[[], object]) -> None:
    """Call ``loader()`` (once) before the first lookup; the package sets it to import the model families."""
    global _loader
    _loader = loader


def _load() -> None:
    global _loader
    loader, _loader = _loader, None  # once, and not again while it runs (the families register through here)
    if loader is not None:
        loader()


def register_model(**info: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: ``@register_model(family=..., paper=..., ...)`` over ``def name(num_classes, in_chans, **opts)``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise RuntimeError(f"model {name!r} registered twice")
        if (info.get("keras") is None) != (info.get("keras_names") is None):
            raise RuntimeError(f"model {name!r}: a Keras counterpart (keras=...) needs keras_names, and only it")
        _REGISTRY[name] = ModelInfo(name=name, builder=builder, **info)
        return builder

    return decorate


def list_models(family: str | None = None) -> list[str]:
    """Names of all zoo models (optionally of one family), in zoo order."""
    _load()
    return [n for n, i in _REGISTRY.items() if family is None or i.family == family]


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a model; unknown names raise with the closest matches."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(_REGISTRY)}.") from None
