"""VGG: very deep networks of stacked 3x3 convolutions.

Simonyan and Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image Recognition".
Why 3x3: two stacked 3x3 convolutions see a 5x5 window and three see 7x7, with fewer parameters
(3 * 9C^2 = 27C^2 against 49C^2 for one 7x7) and a ReLU between each, so more non-linearity.

The configurations of the paper's Table 1, as data (:data:`VGG_CONFIGS`, keyed by model name; the
``_bn`` models add a BatchNorm after every conv): a number is a 3x3 conv with that many filters
(padding 1, so the size is kept), "M" a 2x2 max-pool of stride 2 (the size halves).

Layers are named as in Keras' VGG16/VGG19 (``block1_conv1`` ... ``block5_pool``, ``fc1``, ``fc2``,
``predictions``), so ``summary()`` reads like the Keras table and Keras weights map by name. The
adaptive 7x7 average pool before the classifier is torchvision's: at 224x224 the map is already 7x7,
so it does nothing there, and it lets any input of at least 32x32 reach the same classifier.

As a backbone: the features are the conv blocks up to block5_pool, the classifier the MLP fc1, fc2,
predictions. ``num_features`` is 512, the channels of block5_pool's map, and a headless network
(``num_classes=0``) returns those 512 pooled by ``global_pool``, as Keras' ``VGG16(include_top=False,
pooling="avg")`` does (the whole MLP goes). The 4096 features of fc2 are ``forward_head(x,
pre_logits=True)`` of the full network (timm's ``head_hidden_size``). ``features_only`` offers the
ReLU before each pool (``block1_conv2_relu`` /1 ... ``block5_conv3_relu`` /16, timm's choice) and
``block5_pool`` (/32).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..registry import register_model
from ._base import FeatureStage, ZooModel, check_options
from ._keys import renamer_from_sequences

# Table 1, columns A, B, D and E (the ones torchvision and Keras ship).
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # A
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],  # B
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],  # D
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],  # E
}
TABLE1_COLUMN = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
VGG_MIN_SIZE = 32  # five halvings: the smallest input that leaves a 1x1 map after block5_pool
POOLED = 7  # side of the map the classifier reads (adaptive average pool; 7x7 already at 224x224)


def vgg_feature_stages(cfg: list[int | str]) -> list[FeatureStage]:
    """The ReLU of the last conv before each "M", then the last pool (forward_features' map)."""
    stages: list[FeatureStage] = []
    block, conv, channels, reduction = 1, 0, 0, 1
    for v in cfg:
        if v == "M":
            stages.append(FeatureStage(f"features.block{block}_conv{conv}_relu", channels, reduction))
            block, conv, reduction = block + 1, 0, reduction * 2
        else:
            conv, channels = conv + 1, int(v)
    return stages + [FeatureStage(f"features.block{block - 1}_pool", channels, reduction)]


def make_features(cfg: list[int | str], in_chans: int = 3, batch_norm: bool = False) -> nn.Sequential:
    """The convolutional part of a configuration, with Keras layer names."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    block, conv, channels = 1, 1, in_chans
    for v in cfg:
        if v == "M":
            layers[f"block{block}_pool"] = nn.MaxPool2d(kernel_size=2, stride=2)
            block, conv = block + 1, 1
            continue
        name = f"block{block}_conv{conv}"
        layers[name] = nn.Conv2d(channels, int(v), kernel_size=3, padding=1)
        if batch_norm:
            layers[f"{name}_bn"] = nn.BatchNorm2d(int(v))
        layers[f"{name}_relu"] = nn.ReLU(inplace=True)
        channels, conv = int(v), conv + 1
    return nn.Sequential(layers)


class VGG(ZooModel):
    head_classifier = "classifier"
    head_map_size = POOLED

    def __init__(
        self,
        cfg: list[int | str],
        *,
        model_name: str,
        num_classes: int = 1000,
        in_chans: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
        global_pool: str = "avg",
    ) -> None:
        super().__init__(model_name=model_name, in_chans=in_chans, min_size=VGG_MIN_SIZE, native_size=224)
        self.cfg, self.dropout_rate = cfg, dropout
        self.features = make_features(cfg, in_chans, batch_norm)
        self.set_head(int([v for v in cfg if v != "M"][-1]), num_classes, global_pool)
        self.avgpool = self.new_pool()  # the classifier's 7x7 map, or (headless) the global pool
        self.classifier = self.new_classifier()
        self._init_weights()

    def build_classifier(self, num_classes: int) -> nn.Sequential:
        return nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(self.num_features * POOLED * POOLED, 4096),
                fc1_relu=nn.ReLU(inplace=True),
                fc1_dropout=nn.Dropout(p=self.dropout_rate),
                fc2=nn.Linear(4096, 4096),
                fc2_relu=nn.ReLU(inplace=True),
                fc2_dropout=nn.Dropout(p=self.dropout_rate),
                predictions=nn.Linear(4096, num_classes),
            )
        )

    def _init_weights(self) -> None:
        # The paper initialised deep nets from shallower ones; Kaiming (He et al. 2015) makes that unnecessary.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def feature_stages(self) -> list[FeatureStage]:
        return vgg_feature_stages(self.cfg)


# --------------------------------------------------------------------------------------------------
# Weight-file names: torchvision's indices, Keras' layer names
# --------------------------------------------------------------------------------------------------


def keras_name_map(model: VGG) -> dict[str, str]:
    """Keras layer name -> cnnzoo module path (``block1_conv1`` -> ``features.block1_conv1``)."""
    names = {n: f"features.{n}" for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)}
    names.update({n: f"classifier.{n}" for n in ("fc1", "fc2", "predictions")})
    return names


def _keras_names(model: nn.Module, layers: Any, source: str) -> dict[str, str]:
    """The registry's ``keras_names``: VGG16/19 carry Keras' layer names, so the file's layers are not needed.

    Named on the full network (built on the meta device: nothing allocated), so that a headless model
    or a feature extractor also gets the places of the layers it lacks, which the loader then skips.
    """
    base = model.model_name.removesuffix("_bn")
    with torch.device("meta"):
        batch_norm = base != model.model_name
        full = VGG(VGG_CONFIGS[base], model_name=model.model_name, in_chans=model.in_chans, batch_norm=batch_norm)
    return keras_name_map(full)


# Keras' Flatten sees the 7x7x512 map in (H, W, C) order; fc1's rows need reordering to (C, H, W).
KERAS_FLATTEN = {"fc1": (512, POOLED, POOLED)}

_CLASSIFIER = ["fc1", "fc1_relu", "fc1_dropout", "fc2", "fc2_relu", "fc2_dropout", "predictions"]


def _torchvision_key(cfg: list[int | str], batch_norm: bool):
    """torchvision's index keys (``features.3.weight``) -> ours (``features.block2_conv1.weight``)."""
    with torch.device("meta"):  # only the child names are needed: allocate nothing
        features = list(make_features(cfg, batch_norm=batch_norm)._modules)
    return renamer_from_sequences({"features": features, "classifier": _CLASSIFIER})


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _vgg_info(name: str, keras: str | None = None) -> dict[str, Any]:
    """Registry metadata for one model: a column of Table 1, with BatchNorm for the ``_bn`` names."""
    base = name.removesuffix("_bn")
    batch_norm = name != base
    keras_entry = dict(keras=keras, keras_names=_keras_names, keras_flatten=KERAS_FLATTEN) if keras else {}
    return dict(
        family="vgg",
        paper="Simonyan and Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition",
        url="https://arxiv.org/abs/1409.1556",
        input_size=(3, 224, 224),
        min_size=VGG_MIN_SIZE,
        torchvision=name,
        torchvision_key=_torchvision_key(VGG_CONFIGS[base], batch_norm),
        notes=f"configuration {TABLE1_COLUMN[base]}" + (", BatchNorm after every conv" if batch_norm else ""),
        **keras_entry,
    )


def _build(name: str, num_classes: int, in_chans: int, **options) -> VGG:
    check_options(name, options, ("dropout", "global_pool"))
    base = name.removesuffix("_bn")
    cfg = VGG_CONFIGS[base]
    return VGG(cfg, model_name=name, num_classes=num_classes, in_chans=in_chans, batch_norm=name != base, **options)


@register_model(**_vgg_info("vgg11"))
def vgg11(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg11", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg11_bn"))
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg11_bn", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg13"))
def vgg13(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg13", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg13_bn"))
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg13_bn", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg16", keras="VGG16"))
def vgg16(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg16", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg16_bn"))
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg16_bn", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg19", keras="VGG19"))
def vgg19(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg19", num_classes, in_chans, **options)


@register_model(**_vgg_info("vgg19_bn"))
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, **options) -> VGG:
    return _build("vgg19_bn", num_classes, in_chans, **options)
