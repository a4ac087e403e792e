"""The base class every zoo network derives from, and the builders' option check.

:class:`ZooModel` gives every family the same backbone API, with timm's names so that code written
for timm carries over: ``forward_features`` (the last feature map), ``forward_head`` (pooling,
dropout, classifier), ``num_features``, ``get_classifier`` and ``reset_classifier``, a headless
network with ``num_classes=0`` and the pooling chosen by ``global_pool`` (Keras' ``pooling=``).
What differs between families is only which modules form the head (class attributes ``head_*``)
and where the feature stages are (:meth:`ZooModel.feature_stages`); the rest is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import InputShapeError

# global_pool: average, max, or none ("": the head returns the feature map itself, as timm's "").
POOL_TYPES = ("avg", "max", "")


class FeatureStage(NamedTuple):
    """One feature map a network offers to ``features_only``: where it is, how wide and how coarse."""

    module: str  # module path whose output is the map (cnnzoo's own names: the state-dict prefixes)
    channels: int
    reduction: int  # product of the strides up to here: input pixels between neighbouring map positions


class CheckedModule(nn.Module):
    """An ``nn.Module`` that knows its name, its input channels and the smallest input it accepts.

    Zoo networks and their feature extractors call :meth:`check_input` first, so a wrong input fails
    with a message naming the model, what it needs and what it got, instead of a raw error deep
    inside (``mat1 and mat2 shapes cannot be multiplied``). Set ``check_inputs = False`` to skip it.
    """

    def __init__(self, *, model_name: str, in_chans: int, min_size: int, native_size: int) -> None:
        super().__init__()
        self.model_name = model_name
        self.in_chans = in_chans
        self.min_size = min_size
        self.native_size = native_size
        self.check_inputs = True

    def check_training_input(self, x: torch.Tensor) -> None:
        """:meth:`check_input` for training mode, where a model may need more (Inception v3's aux head)."""
        self.check_input(x)

    def check_input(self, x: torch.Tensor) -> None:
        if not self.check_inputs or torch.jit.is_scripting():
            return
        need = f"a batch of shape (N, {self.in_chans}, H, W) with H, W >= {self.min_size} (native {self.native_size}x{self.native_size})"
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"{self.model_name} expects a torch.Tensor, {need}; got {type(x).__name__}.")
        shape = tuple(x.shape)
        if x.dim() != 4:
            fix = (
                " For a single image use x.unsqueeze(0)."
                if x.dim() == 3
                else " Images go in as (batch, channels, height, width)."
            )
            raise InputShapeError(f"{self.model_name} expects {need}; got a {x.dim()}-d tensor of shape {shape}.{fix}")
        c, h, w = shape[1:]
        if c != self.in_chans:
            if shape[3] == self.in_chans:  # (N, H, W, C): images as PIL/NumPy/Keras lay them out
                raise InputShapeError(
                    f"{self.model_name} expects {self.in_chans} input channel{'s' if self.in_chans != 1 else ''} in dim 1, "
                    f"got {c} (input shape {shape}): the data looks channels-last (N, H, W, C); "
                    f"permute it with x.permute(0, 3, 1, 2)."
                )
            raise InputShapeError(
                f"{self.model_name} expects {self.in_chans} input channel{'s' if self.in_chans != 1 else ''}, "
                f"got {c} (input shape {shape}). Create the model with in_chans={c}, or convert the images "
                f"({'to grayscale' if self.in_chans == 1 else 'to RGB' if self.in_chans == 3 else f'to {self.in_chans} channels'})."
            )
        if h < self.min_size or w < self.min_size:
            raise InputShapeError(
                f"{self.model_name} needs an input of at least {self.min_size}x{self.min_size} pixels "
                f"(native {self.native_size}x{self.native_size}); got {h}x{w} (input shape {shape}). "
                f"Resize the images to at least {self.min_size}x{self.min_size}."
            )
        self._check_dtype(x)

    def _check_dtype(self, x: torch.Tensor) -> None:
        """The input's dtype must be the weights' (under autocast, any floating dtype): say so, and how to convert,
        instead of PyTorch's "Input type (double) and bias type (float) should be the same" deep inside."""
        weights = next((p for p in self.parameters() if p.is_floating_point()), None)
        if weights is None or x.is_quantized or x.device.type == "meta" or x.dtype == weights.dtype:
            return
        if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
            return
        methods = {torch.float32: "float", torch.float64: "double", torch.float16: "half", torch.bfloat16: "bfloat16"}
        convert = f"x.{methods[weights.dtype]}()" if weights.dtype in methods else f"x.to({weights.dtype})"
        if x.dtype == torch.uint8:  # image pixels
            fix = f"{convert} / 255 (pixels 0..255 to 0..1), then normalise as the model expects"
        else:
            fix = convert
        raise InputShapeError(
            f"{self.model_name} expects {weights.dtype} input (the dtype of its weights), got {x.dtype} "
            f"(input shape {tuple(x.shape)}); convert it with {fix}"
        )


def check_head(model_name: str, num_classes: Any, global_pool: Any, map_size: int | None = None) -> None:
    """Refuse a head that cannot be built, in one line that says what is allowed.

    ``map_size`` is set for the families whose classifier is an MLP reading a fixed-size map (LeNet-5,
    AlexNet, VGG): their classifier reads that average-pooled map, so ``global_pool`` other than
    "avg" only applies once the classifier is gone (``num_classes=0``).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
        raise ValueError(
            f"{model_name}: num_classes must be a non-negative integer (0: no classifier, the network returns "
            f"its pooled features); got {num_classes!r}"
        )
    if global_pool not in POOL_TYPES:
        raise ValueError(
            f"{model_name}: global_pool must be 'avg', 'max' or '' (no pooling: the feature map itself); "
            f"got {global_pool!r}"
        )
    if num_classes and global_pool == "":
        raise ValueError(
            f"{model_name}: global_pool='' returns the unpooled feature map, which needs num_classes=0; "
            "a classifier reads pooled features ('avg' or 'max')"
        )
    if num_classes and map_size is not None and global_pool != "avg":
        raise ValueError(
            f"{model_name}: its classifier reads the {map_size}x{map_size} average-pooled map, so global_pool="
            f"{global_pool!r} only applies to the headless network (num_classes=0); use the default 'avg'"
        )


class ZooModel(CheckedModule):
    """A zoo network: the input check, and the backbone API shared by every family (timm's names).

    * ``forward_features(x)``: the last feature map, before global pooling, (N, num_features, h, w).
    * ``forward_head(x, pre_logits=False)``: pooling, flattening, dropout and the classifier;
      ``pre_logits=True`` stops before the last Linear layer and returns (N, ``head_hidden_size``).
      ``forward(x)`` is exactly ``forward_head(forward_features(x))`` (GoogLeNet and Inception v3 add
      their auxiliary outputs in training mode, which concern neither).
    * ``num_features``: the channels of ``forward_features``' map, what a headless network returns.
    * ``get_classifier()``: the last Linear layer (``nn.Identity`` when there is none);
      ``reset_classifier(num_classes, global_pool=None)`` puts a new one there (0: none).

    Each family sets what differs: ``head_pool``, ``head_dropout`` and ``head_classifier`` name the
    head's modules; ``head_map_size`` marks an MLP classifier (LeNet-5, AlexNet, VGG: ``fc1``, ``fc2``
    ... read an average-pooled ``head_map_size`` x ``head_map_size`` map); ``aux_heads`` names the
    auxiliary classifiers off the main path; :meth:`feature_stages` lists the maps ``features_only``
    offers. The family's ``forward_features`` must run its children (the head's excepted) one after
    the other in registration order, as :class:`~cnnzoo.models.FeatureExtractor` replays them.

    Headless (``num_classes=0``) every family returns the ``num_features`` channels of the last map,
    pooled by ``global_pool`` (Keras' ``include_top=False, pooling=...``): for the MLP families that
    means the whole classifier goes, as in Keras, and vgg16 returns 512 features, not fc2's 4096
    (those are ``forward_head(x, pre_logits=True)`` of the full network).
    """

    head_pool: str = "avgpool"
    head_dropout: str | None = None
    head_classifier: str = "fc"
    head_map_size: int | None = None
    aux_heads: tuple[str, ...] = ()

    num_features: int
    num_classes: int
    global_pool: str

    # --- building the head (the families call these where they register their head modules) -------

    def set_head(self, num_features: int, num_classes: int, global_pool: str) -> None:
        """Check and record the head's sizes; :meth:`new_pool` and :meth:`new_classifier` then build it."""
        check_head(self.model_name, num_classes, global_pool, self.head_map_size)
        self.num_features, self.num_classes, self.global_pool = num_features, num_classes, global_pool

    def new_pool(self) -> nn.Module:
        """The pooling module for the recorded head: the MLP's fixed map, or the global pool of ``global_pool``."""
        if self.num_classes and self.head_map_size is not None:
            return nn.AdaptiveAvgPool2d((self.head_map_size, self.head_map_size))
        if self.global_pool == "avg":
            return self.global_avg_pool()
        return nn.AdaptiveMaxPool2d((1, 1)) if self.global_pool == "max" else nn.Identity()

    def global_avg_pool(self) -> nn.Module:
        """The family's global average pool (the Keras flavours use Keras' own, which also flattens)."""
        return nn.AdaptiveAvgPool2d((1, 1))

    def new_classifier(self) -> nn.Module:
        """The classifier for the recorded head, ``nn.Identity`` when headless."""
        return self.build_classifier(self.num_classes) if self.num_classes else nn.Identity()

    def build_classifier(self, num_classes: int) -> nn.Module:
        """The family's classifier: one Linear layer here, an MLP (an ``nn.Sequential``) for LeNet-5, AlexNet, VGG."""
        return nn.Linear(self.num_features, num_classes)

    # --- the backbone API ---------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward_features (the network up to its head)")

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pool = getattr(self, self.head_pool)
        x = pool(x)
        if self.global_pool == "":  # headless, unpooled: the map itself
            return x
        if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):  # Keras' global pool already flattens
            x = torch.flatten(x, 1)
        if self.head_dropout is not None:
            x = getattr(self, self.head_dropout)(x)
        classifier = getattr(self, self.head_classifier)
        if pre_logits:
            return classifier[:-1](x) if isinstance(classifier, nn.Sequential) else x
        return classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)``: the input of the last Linear layer (fc2's 4096 for VGG)."""
        classifier = self.get_classifier()
        return classifier.in_features if isinstance(classifier, nn.Linear) else self.num_features

    def get_classifier(self) -> nn.Module:
        """The layer that computes the logits (the MLP's last Linear layer); ``nn.Identity`` when headless."""
        classifier = getattr(self, self.head_classifier)
        return classifier[-1] if isinstance(classifier, nn.Sequential) else classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none, the network returns pooled features), freshly initialised.

        An MLP classifier keeps its hidden layers (fc1, fc2 of VGG) and gets a new last layer; a headless
        MLP family gets the whole MLP back, new. ``global_pool`` None keeps the pooling, or falls back to
        "avg" where the kept one cannot feed a classifier. New layers take PyTorch's default
        initialisation, on the device and dtype of the model's parameters. The state-dict keys of the
        result are those of the same network built with ``num_classes`` (weight files stay compatible).
        """
        if global_pool is None:
            global_pool = self.global_pool
            if num_classes and (global_pool == "" or self.head_map_size is not None):
                global_pool = "avg"
        keep_hidden = bool(num_classes) and isinstance(getattr(self, self.head_classifier), nn.Sequential)
        self.set_head(self.num_features, num_classes, global_pool)
        setattr(self, self.head_pool, self.new_pool())
        if keep_hidden:
            mlp = getattr(self, self.head_classifier)
            mlp[-1] = self._placed(nn.Linear(mlp[-1].in_features, num_classes))
        else:
            setattr(self, self.head_classifier, self._placed(self.new_classifier()))

    def _placed(self, module: nn.Module) -> nn.Module:
        """``module`` on the device and in the dtype of this model's parameters."""
        like = next(self.parameters(), None)
        return module if like is None else module.to(device=like.device, dtype=like.dtype)

    # --- feature stages: what features_only returns -------------------------------------------------

    def feature_stages(self) -> list[FeatureStage]:
        """The maps ``features_only`` offers, in network order; the last is ``forward_features``' output."""
        raise NotImplementedError(f"{type(self).__name__} must declare its feature stages")

    def main_path(self) -> list[str]:
        """Module paths that ``forward_features`` runs one after the other, in order.

        The model's children without the head and the auxiliary classifiers; a child that holds a stage
        (VGG's ``features`` Sequential holds ``features.block1_conv2_relu``) is listed by its children.
        """
        inside = {s.module.split(".", 1)[0] for s in self.feature_stages() if "." in s.module}
        off_path = {self.head_pool, self.head_dropout, self.head_classifier, *self.aux_heads}
        path: list[str] = []
        for name, child in self.named_children():
            if name in off_path:
                continue
            path += [f"{name}.{n}" for n, _ in child.named_children()] if name in inside else [name]
        return path

    @property
    def dropped_modules(self) -> tuple[str, ...]:
        """Modules of the full network this one is built without: a weights file's keys under them are ignored."""
        return (self.head_classifier,) if self.num_classes == 0 else ()


def check_options(model_name: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse an option the model does not take, in the words Python uses for an unknown keyword argument.

    Builders share one signature, ``name(num_classes, in_chans, **options)``; this keeps their options
    as strict as explicit keyword parameters would be, and the error names the model asked for.
    """
    allowed = set(allowed)
    for key in options:
        if key not in allowed:
            raise TypeError(f"{model_name}() got an unexpected keyword argument {key!r}")
